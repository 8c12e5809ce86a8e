"""Showing an evaluation: a rich table for people, JSON for machines, a PNG for the curve.

Every row puts the router's figure, its bootstrap 95% interval and the random router at the same
cost side by side, so no number is read without its uncertainty and its floor.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routebook.jobs.intent_eval import FIELDS, IntentEvaluation, cold_tests
from routebook.jobs.metrics import ConfidenceInterval
from routebook.jobs.outcome_eval import OutcomeEvaluation

if TYPE_CHECKING:
    from rich.console import Console

    from routebook.decide import DecisionParams

Evaluation = OutcomeEvaluation | IntentEvaluation


def _clean(value: Any) -> Any:
    """JSON has no inf or NaN: both become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    kind = "outcome" if isinstance(evaluation, OutcomeEvaluation) else "intent"
    data = dataclasses.asdict(evaluation)
    data["params"] = dataclasses.asdict(evaluation.params)
    return {"kind": kind, **_clean(data)}


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _ci(ci: ConfidenceInterval | None, fmt: Any = _num) -> str:
    """The estimate and its interval; "—" alone when the estimate is undefined (resamples may
    still give an interval, e.g. APGR where the two models' means tie on the test set)."""
    if ci is None or not math.isfinite(ci.estimate):
        return "—"
    return f"{fmt(ci.estimate)} [{fmt(ci.low)}, {fmt(ci.high)}]"


def cold_when(tests: dict[str, float]) -> str:
    """A router's cold-start tests in words: "support < 6.357", or "never" without any."""
    if not tests:
        return "never"
    return " or ".join(f"{score.replace('_', ' ')} < {value:.4g}" for score, value in tests.items())


def cascade_bar_text(params: DecisionParams) -> str:
    """The quality a cascade's answer must reach, as a settings line shows it: two files
    that differ only in `cascade_min_quality` must not read alike."""
    own = "" if params.cascade_min_quality is not None else " (the target)"
    return f"{params.cascade_bar:.3g}{own}"


def short_names(models: tuple[str, ...]) -> dict[str, str]:
    """Each model's name cut to the fewest leading `-` parts that no other model shares.

    The whole name is long for a table cell, but its first part alone is not a name: the
    shipped catalog's gpt-4.1-nano and gpt-4.1-mini both showed as "gpt". Two shortened names
    cannot be equal: each differs from every other name's prefix of as many parts, and a
    string splits into one number of parts."""
    parts = {m: m.split("-") for m in models}
    short = {}
    for m in models:
        for i in range(1, len(parts[m]) + 1):
            head = "-".join(parts[m][:i])
            if all("-".join(parts[o][:i]) != head for o in models if o != m):
                break
        short[m] = head
    return short


def render(evaluation: Evaluation, console: Console | None = None) -> None:
    """Print the tables to `console` (default: the terminal)."""
    from rich.console import Console

    console = console or Console()
    if isinstance(evaluation, OutcomeEvaluation):
        _render_outcome(evaluation, console)
    else:
        _render_intent(evaluation, console)


def _render_outcome(ev: OutcomeEvaluation, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    ref = ev.reference
    models = ref.models
    console.print(
        f"[bold]outcome data[/bold]: {ev.n_index} index rows, {ev.n_test} test queries, "
        f"k={ev.k}, quality target {ev.params.quality_target:.3g}, cold when "
        f"{escape(cold_when(cold_tests(ev.params)))}, cascades accept quality >= "
        f"{cascade_bar_text(ev.params)}"
    )
    console.print(f"  routebook's head: {escape(ev.head.describe())}")
    for m in models:
        console.print(
            f"  {escape(m)}: mean quality {ref.mean_quality[m]:.4f}, "
            f"${ref.mean_cost[m] * 1000:.4f} per 1,000 queries"
        )
    console.print(
        f"  oracle (best model per query): quality {ref.oracle_quality:.4f}"
        + (f", APGR {ref.oracle_apgr:.3f}" if ref.oracle_apgr is not None else "")
    )
    if ref.apgr_undefined is not None:
        console.print(f"  APGR and CPT are not defined here: {escape(ref.apgr_undefined)}")
    elif ref.mean_quality[models[-1]] < ref.mean_quality[models[0]]:
        console.print(
            f"  [bold]note[/bold]: the strongest model, {escape(models[-1])}, has a lower mean "
            f"quality than the cheapest, {escape(models[0])}: PGR's gap is negative, so APGR "
            "and CPT read upside down (check the catalog's prices and order)"
        )
    curve = Table(title="Whole curve (95% bootstrap CI); random router beside")
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)", "saving @95% of strongest"):
        curve.add_column(col)
    curve.add_row(
        "random",
        _num(ref.random_apgr),
        _pct(ref.random_cpt50),
        _pct(ref.random_cpt80),
        _pct(ref.random_saving95),
    )
    for r in ev.routers:
        curve.add_row(
            r.name, _ci(r.apgr), _ci(r.cpt50, _pct), _ci(r.cpt80, _pct), _ci(r.saving95, _pct)
        )
    console.print(curve)
    op = Table(title=f"At the quality target {ev.params.quality_target:.3g}")
    for col in (
        "router",
        "quality",
        "random at same cost",
        "vs strongest",
        "strong-call equiv.",
        "cold",
        "calls per model",
    ):
        op.add_column(col)
    short = short_names(models)
    for r in ev.routers:
        o = r.operating
        calls = ", ".join(f"{escape(short[m])} {_pct(s)}" for m, s in o.call_share.items())
        op.add_row(
            r.name,
            _ci(r.operating_quality),
            _ci(r.operating_random),
            _pct(o.relative_quality),
            _pct(o.strong_equivalent),
            _pct(o.cold_share),
            calls,
        )
    console.print(op)


def _render_intent(ev: IntentEvaluation, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]intent data[/bold]: {ev.n_index} in-scope index rows ({ev.n_labels} labels), "
        f"{ev.n_test} test queries, k={ev.k}"
    )
    console.print(f"  routebook's head: {escape(ev.head.describe())}")
    console.print(
        "  cold when: "
        + "; ".join(f"{escape(r.name)} {escape(cold_when(r.cold_tests))}" for r in ev.routers)
    )
    console.print(
        "  the baselines' thresholds are set on the index file's oos rows, scored against the "
        f"whole in-scope index, for OOS recall {ev.oos_recall_goal:.2f} (never cold without "
        "oos rows)"
    )
    table = Table(title="Intent routing (95% bootstrap CI); random router at the same cold rate")
    table.add_column("router")
    for field in FIELDS:
        table.add_column(field.replace("_", " "))
    table.add_column("cold")
    for r in ev.routers:
        table.add_row(
            r.name,
            *(_ci(r.intervals[f], _pct) for f in FIELDS),
            _pct(r.cold_share),
        )
        table.add_row(
            "  random", *(_pct(r.random[f]) for f in FIELDS), _pct(r.cold_share), style="dim"
        )
    console.print(table)


def curve_label(name: str, apgr: float) -> str:
    """A router's legend entry: its APGR, or that it has none (one model, tied means)."""
    return f"{name} (APGR {apgr:.3f})" if math.isfinite(apgr) else f"{name} (APGR not defined)"


def plot(evaluation: Evaluation, path: Path, title: str = "") -> None:
    """Cost-quality curves: every router, the random diagonal and the oracle."""
    if not isinstance(evaluation, OutcomeEvaluation):
        raise ValueError("--plot draws the cost-quality curve of outcome data")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = evaluation.reference
    weak, strong = ref.mean_quality[ref.models[0]], ref.mean_quality[ref.models[-1]]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    if ref.oracle_curve:
        ax.plot(
            [100 * s for s, _ in ref.oracle_curve],
            [q for _, q in ref.oracle_curve],
            color="0.6",
            linestyle=":",
            label="oracle",
        )
    ax.plot([0, 100], [weak, strong], color="0.4", linestyle="--", label="random")
    for r in evaluation.routers:
        points = sorted((100 * s, q) for s, q, _ in r.curve)
        points = [(0.0, weak), *points, (100.0, strong)]
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            label=curve_label(r.name, r.apgr.estimate),
        )
    ax.axhline(0.95 * strong, color="0.8", linewidth=0.8)
    ax.set_xlabel(f"cost: strong-call equivalent, % ({ref.models[-1]})")
    ax.set_ylabel("mean quality")
    ax.set_xlim(0, 100)
    ax.set_title(title or "cost-quality curve")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
