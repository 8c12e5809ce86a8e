"""`routebook eval --baseline A.toml --candidate B.toml`: two settings on the same data, a verdict.

Why a gate: a settings change (a new `calibrate` run, a hand-tuned target) should not reach
`serve` unless it measurably keeps quality and, if asked, saves money. So both settings files are
read the way `serve --config` reads them, the data is embedded once, and each side makes its own
real decisions (`jobs.replay`) with everything of its file that `serve` would apply: its decision
rule and k, and the answer length it decides at, the sample its head trains on and its index
kind (`replay.Serving`). Sides that would build the same index and head share one search, at the
larger k.

Calls are priced at one answer length for both sides, the baseline's `default_output_tokens`
unless `answer_tokens` is given: that setting is an assumption about the answers, not their
length. A candidate that assumes shorter answers decides as `serve` would with it (perhaps for
a model with cheap input and dear output), and is charged what those answers cost.

The decision rule, at each side's own operating point (its configured quality target and cold
start, the point `serve` would run at):

- outcome data: the candidate fails when its *relative quality* (mean quality of the answers
  divided by the strongest model's mean quality on the same queries) is more than
  `tolerance_quality` below the baseline's, or when its *cost saving*
  (1 - candidate cost per query / baseline cost per query, cascades' extra calls included) is
  below `min_saving`;
- intent data: the candidate fails when its in-scope accuracy, or its out-of-scope recall (when
  the test file has `oos` rows), is more than `tolerance_quality` below the baseline's. Intent
  data has no cost, so `min_saving` above 0 is refused rather than silently ignored.

Comparisons are of point estimates on the same queries; the bootstrap intervals are shown so a
person can judge how much of a difference is noise, but they do not decide.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.catalog import Catalog
from routebook.config import load_settings
from routebook.decide import DecisionParams
from routebook.domain import ExampleFacts, Strategy
from routebook.index import IndexKind, NamespaceIndex
from routebook.jobs import replay
from routebook.jobs.datasets import OOS_LABEL, detect_kind, load_intent_rows, load_outcome_rows
from routebook.jobs.embedcache import EmbeddingCache
from routebook.jobs.evaluate import embed_texts, quality_matrix
from routebook.jobs.intent_eval import (
    IntentFigures,
    check_index_labels,
    cold_tests,
    intent_figures,
)
from routebook.jobs.outcome_eval import (
    Priced,
    Reference,
    RouterFigures,
    check_matches_decide,
    evaluate_router,
    reference,
    scored_from_choices,
)
from routebook.jobs.progress import Silent, Tracker
from routebook.jobs.report import _clean, _num, _pct, cascade_bar_text
from routebook.jobs.run import Inputs, params_from_settings

#: Slack for "equal": the same figures computed twice may differ in the last bits.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Side:
    """One settings file, as read, and what it measured."""

    label: str
    config: str
    k: int
    params: DecisionParams
    serving: replay.Serving
    figures: RouterFigures | IntentFigures | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One rule of the gate: `measured` (candidate against baseline) must reach `limit`."""

    figure: str
    baseline: float
    candidate: float
    measured: float
    limit: float
    passed: bool
    reason: str
    """Why it failed, in one phrase that names the figure (empty when it passed)."""


@dataclass(frozen=True, slots=True)
class GateResult:
    kind: str
    n_index: int
    n_test: int
    tolerance_quality: float
    min_saving: float
    baseline: Side
    candidate: Side
    reference: Reference | None
    checks: tuple[Check, ...]
    #: The answer length, in output tokens, both sides' calls are priced at.
    answer_tokens: int

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str:
        """Every failed rule on one line ("" when the gate passed)."""
        return "; ".join(c.reason for c in self.checks if not c.passed)


#: The settings that decide a query's vector: the gate embeds once, so both sides must agree.
EMBEDDER_SETTINGS = ("model_path", "embed_backend", "embed_precision")


def load_side(
    label: str, config_file: Path, model_path: str | None
) -> tuple[Side, dict[str, object]]:
    """A settings file read as `serve --config` reads it (but without the environment's
    ROUTEBOOK_* values: the file alone is the side), and its embedder settings."""
    settings = load_settings({"model_path": model_path}, config_file, environment=False)
    side = Side(
        label,
        str(config_file),
        settings.k,
        params_from_settings(settings),
        replay.Serving.of(settings),
    )
    return side, {name: getattr(settings, name) for name in EMBEDDER_SETTINGS}


def run_gate(
    inputs: Inputs,
    baseline_file: Path,
    candidate_file: Path,
    index_path: Path,
    test_path: Path,
    *,
    tolerance_quality: float = 0.01,
    min_saving: float = 0.0,
    model_path: str | None = None,
    seed: int = 0,
    resamples: int = 1000,
    limit: int | None = None,
    tracker: Tracker | None = None,
    answer_tokens: int | None = None,
) -> GateResult:
    """`inputs` carries the embedder, its cache and the catalog (its settings are not used).
    `answer_tokens`: the answer length both sides' calls are priced at (default: the
    baseline's `default_output_tokens`)."""
    tracker = tracker or Silent()
    baseline, base_model = load_side("baseline", baseline_file, model_path)
    candidate, cand_model = load_side("candidate", candidate_file, model_path)
    if answer_tokens is None:
        answer_tokens = baseline.serving.output_tokens
    differ = [name for name in EMBEDDER_SETTINGS if base_model[name] != cand_model[name]]
    if differ:
        which = ", ".join(
            f"{name} {base_model[name]!r} against {cand_model[name]!r}" for name in differ
        )
        raise ValueError(
            f"{baseline_file} and {candidate_file} embed differently ({which}); the gate "
            "compares decision settings on one set of embeddings, so give both the same "
            "embedder settings (compare embedders with two `routebook eval` runs)"
        )
    kind = detect_kind(index_path)
    if detect_kind(test_path) != kind:
        raise ValueError(f"{index_path} and {test_path} hold different kinds of data")
    if kind == "intent" and min_saving > 0:
        raise ValueError(
            "--min-saving needs outcome data (prompt + outcomes): intent data has no cost"
        )
    sides = (baseline, candidate)
    if kind == "outcome":
        n_index, n_test, ref, measured = _outcome_sides(
            inputs, sides, index_path, test_path, limit, resamples, seed, tracker, answer_tokens
        )
    else:
        n_index, n_test, measured = _intent_sides(
            inputs, sides, index_path, test_path, limit, resamples, seed, tracker
        )
        ref = None
    baseline, candidate = measured
    return GateResult(
        kind=kind,
        n_index=n_index,
        n_test=n_test,
        tolerance_quality=tolerance_quality,
        min_saving=min_saving,
        baseline=baseline,
        candidate=candidate,
        reference=ref,
        checks=checks(baseline, candidate, tolerance_quality, min_saving),
        answer_tokens=answer_tokens,
    )


def _search_sides(
    facts: Sequence[ExampleFacts],
    index_vectors: npt.NDArray[np.float32],
    texts: Sequence[str],
    vectors: npt.NDArray[np.float32],
    catalog: Catalog,
    sides: Sequence[Side],
    tracker: Tracker,
    cache: EmbeddingCache | None,
) -> list[replay.Searched]:
    """Each side's neighbours and head predictions, as its own `serve` would find them.

    Sides that would build the same index kind and train the same head share one search, at
    the larger of their k (an approximate index's first k of a wider search are not a search
    at k, so there each k searches on its own). A side whose head reads the layer pools gets
    them from `cache` (None: heads read the vector, as on intent data)."""

    def key(side: Side) -> tuple[IndexKind, int | None, bool, int | None]:
        kind = side.serving.index_kind(len(facts))
        uses = replay.uses_head(side.params)
        head = side.serving.head_max_examples if uses else None
        layers = uses and side.serving.reads_layers
        return kind, head, layers, None if kind is IndexKind.FLAT else side.k

    groups: dict[tuple[IndexKind, int | None, bool, int | None], list[Side]] = {}
    for side in sides:
        groups.setdefault(key(side), []).append(side)
    index_layers = query_layers = None
    if cache is not None and any(group[2] for group in groups):
        index_layers = cache.layers([f.text for f in facts], tracker.step("layers", len(facts)))
        query_layers = cache.layers(texts, tracker.step("test layers", len(texts)))
    advance = tracker.step("search", len(texts) * len(groups))
    indexes: dict[IndexKind, NamespaceIndex] = {}
    searched: dict[tuple[IndexKind, int | None, bool, int | None], replay.Searched] = {}
    for group, members in groups.items():
        first = members[0]
        kind, _, layers, _ = group
        if kind not in indexes:
            indexes[kind] = replay.build_index(facts, index_vectors, first.serving)
        head = replay.index_head(
            facts,
            index_vectors,
            catalog,
            first.params,
            first.serving,
            index_layers if layers else None,
        )
        k = max(side.k for side in members)
        searched[group] = replay.search_all(
            indexes[kind],
            texts,
            vectors,
            k,
            advance,
            head=head,
            layers=query_layers if layers else None,
        )
    return [searched[key(side)] for side in sides]


def _outcome_sides(
    inputs: Inputs,
    sides: Sequence[Side],
    index_path: Path,
    test_path: Path,
    limit: int | None,
    resamples: int,
    seed: int,
    tracker: Tracker,
    answer_tokens: int,
) -> tuple[int, int, Reference, list[Side]]:
    index_rows = load_outcome_rows(index_path)
    test_rows = load_outcome_rows(test_path)[:limit]
    catalog = inputs.catalog or replay.routellm_catalog()
    index_vectors = embed_texts(inputs.cache, [r.prompt for r in index_rows], "index", tracker)
    texts = [r.prompt for r in test_rows]
    vectors = embed_texts(inputs.cache, texts, "test", tracker)
    facts = replay.outcome_facts(index_rows)
    searches = _search_sides(
        facts, index_vectors, texts, vectors, catalog, sides, tracker, inputs.cache
    )
    quality = quality_matrix(test_rows, catalog)
    tokens = searches[0].input_tokens
    paid = replay.call_costs(catalog, tokens, answer_tokens)
    advance = tracker.step("decide and measure", len(sides))
    measured = []
    for side, searched in zip(sides, searches, strict=True):
        answer = side.serving.output_tokens
        # Decided at the side's own answer length, as its `serve` would; charged at the shared one.
        priced = Priced(quality, paid, replay.call_costs(catalog, tokens, answer))
        choices = replay.decide_all(searched, catalog, side.params, side.k, answer)
        scored = scored_from_choices(side.label, choices, catalog, side.params)
        check_matches_decide(scored, choices, catalog)
        figures = evaluate_router(
            scored, priced, catalog.names, side.params.quality_target, resamples, seed
        )
        measured.append(dataclasses.replace(side, figures=figures))
        advance(1)
    ref = reference(quality, paid, catalog.names)
    return len(index_rows), len(test_rows), ref, measured


def _intent_sides(
    inputs: Inputs,
    sides: Sequence[Side],
    index_path: Path,
    test_path: Path,
    limit: int | None,
    resamples: int,
    seed: int,
    tracker: Tracker,
) -> tuple[int, int, list[Side]]:
    # Out-of-scope examples are not a route (as in `jobs.intent_eval`): they are not indexed.
    index_rows = [r for r in load_intent_rows(index_path) if r.label != OOS_LABEL]
    check_index_labels(index_rows)  # before the embedding, the slow part
    test_rows = load_intent_rows(test_path)[:limit]
    index_vectors = embed_texts(inputs.cache, [r.text for r in index_rows], "index", tracker)
    texts = [r.text for r in test_rows]
    vectors = embed_texts(inputs.cache, texts, "test", tracker)
    catalog = replay.intent_catalog()
    facts = replay.intent_facts(index_rows, catalog)
    # Intent heads learn routes, which read the vector: no layer pools to embed.
    searches = _search_sides(facts, index_vectors, texts, vectors, catalog, sides, tracker, None)
    true = [r.label for r in test_rows]
    route_set = {r.label for r in index_rows}
    advance = tracker.step("decide and measure", len(sides))
    measured = []
    for side, searched in zip(sides, searches, strict=True):
        answer = side.serving.output_tokens
        choices = replay.decide_all(searched, catalog, side.params, side.k, answer)
        routes = [c.route if c.strategy is Strategy.SEMANTIC else None for c in choices]
        figures = intent_figures(
            side.label,
            side.params.cold_start_threshold,
            true,
            routes,
            resamples,
            seed,
            index_labels=route_set,
            tests=cold_tests(side.params),
        )
        measured.append(dataclasses.replace(side, figures=figures))
        advance(1)
    return len(index_rows), len(test_rows), measured


def _no_lower(figure: str, base: float, cand: float, tolerance: float) -> Check:
    drop = base - cand
    passed = cand - base >= -tolerance - EPSILON
    reason = (
        ""
        if passed
        else f"{figure} {cand:.4f} is {drop:.4f} below the baseline's {base:.4f} "
        f"(tolerance {tolerance:g})"
    )
    return Check(figure, base, cand, cand - base, -tolerance, passed, reason)


def cost_saving(base: float, cand: float, min_saving: float) -> Check:
    """The saving rule. Against a free baseline any cost is an unbounded increase (-inf),
    not "no saving": a paying candidate must not pass a gate that asks for none."""
    free_paying = base <= 0 < cand
    saving = -math.inf if free_paying else 1.0 - cand / base if base > 0 else 0.0
    passed = saving >= min_saving - EPSILON
    if passed:
        reason = ""
    elif base <= 0:
        reason = f"the baseline is free and the candidate costs ${cand:.6f} per query"
    else:
        reason = (
            f"cost saving {100 * saving:.2f}% (cost per query ${cand:.6f} against the "
            f"baseline's ${base:.6f}) is under the required {100 * min_saving:.2f}%"
        )
    return Check("cost saving", base, cand, saving, min_saving, passed, reason)


def checks(
    baseline: Side, candidate: Side, tolerance_quality: float, min_saving: float
) -> tuple[Check, ...]:
    """The gate's rules (see the module docstring), each with its verdict."""
    base, cand = baseline.figures, candidate.figures
    if isinstance(base, RouterFigures) and isinstance(cand, RouterFigures):
        b, c = base.operating, cand.operating
        quality = _no_lower(
            "relative quality", b.relative_quality, c.relative_quality, tolerance_quality
        )
        return quality, cost_saving(b.cost_per_query, c.cost_per_query, min_saving)
    if isinstance(base, IntentFigures) and isinstance(cand, IntentFigures):
        found = []
        for figure, field in (
            ("in-scope accuracy", "in_scope_accuracy"),
            ("OOS recall", "oos_recall"),
        ):
            b_value, c_value = getattr(base.report, field), getattr(cand.report, field)
            if b_value is not None and c_value is not None:
                found.append(_no_lower(figure, b_value, c_value, tolerance_quality))
        return tuple(found)
    raise TypeError("both sides must be measured on the same kind of data")


def to_json(result: GateResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    for label in ("baseline", "candidate"):
        side: Side = getattr(result, label)
        data[label]["params"] = dataclasses.asdict(side.params)
    data["gate"] = {
        "passed": result.passed,
        "reason": result.reason or None,
        "tolerance_quality": data.pop("tolerance_quality"),
        "min_saving": data.pop("min_saving"),
        # JSON has no infinity: an unbounded change (against a free baseline) reads null.
        "checks": [
            {**c, "measured": c["measured"] if math.isfinite(c["measured"]) else None}
            for c in data.pop("checks")
        ],
    }
    cleaned: dict[str, Any] = _clean(data)
    return cleaned


def _settings_line(side: Side) -> str:
    p = side.params
    return (
        f"{side.label} {side.config}: k={side.k}, quality_target={p.quality_target:g} "
        f"({p.target_mode}), cold_start_threshold={p.cold_start_threshold:g}, "
        f"min_support={p.min_support:g}, similarity_floor={p.similarity_floor:g}, "
        f"weight_power={p.weight_power:g}, prior={p.prior_success:g}x{p.prior_strength:g}, "
        f"cascade_min_quality={cascade_bar_text(p)}, "
        f"default_output_tokens={side.serving.output_tokens}"
    )


def render(result: GateResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from routebook.jobs.report import _ci

    console = Console()
    console.print(
        f"[bold]{result.kind} data[/bold]: {result.n_index} index rows, "
        f"{result.n_test} test queries, each side at its own operating point"
    )
    for side in (result.baseline, result.candidate):
        console.print("  " + _settings_line(side))
    if result.kind == "outcome":
        console.print(
            f"  both sides' calls priced at {result.answer_tokens} output tokens per answer"
        )
    table = Table(title="Side by side (95% bootstrap CI)")
    for column in ("figure", "baseline", "candidate"):
        table.add_column(column)
    base, cand = result.baseline.figures, result.candidate.figures
    if isinstance(base, RouterFigures) and isinstance(cand, RouterFigures):
        rows: list[tuple[str, str, str]] = [
            ("quality at target", _ci(base.operating_quality), _ci(cand.operating_quality)),
            (
                "relative quality (vs strongest)",
                _pct(base.operating.relative_quality),
                _pct(cand.operating.relative_quality),
            ),
            (
                "cost per 1,000 queries",
                f"${1000 * base.operating.cost_per_query:.4f}",
                f"${1000 * cand.operating.cost_per_query:.4f}",
            ),
            (
                "strong-call equivalent",
                _pct(base.operating.strong_equivalent),
                _pct(cand.operating.strong_equivalent),
            ),
            ("cold (cascade)", _pct(base.operating.cold_share), _pct(cand.operating.cold_share)),
            ("APGR (whole curve)", _ci(base.apgr), _ci(cand.apgr)),
            ("CPT(50%)", _ci(base.cpt50, _pct), _ci(cand.cpt50, _pct)),
        ]
    elif isinstance(base, IntentFigures) and isinstance(cand, IntentFigures):
        rows = [
            (
                field.replace("_", " "),
                _ci(base.intervals[field], _pct),
                _ci(cand.intervals[field], _pct),
            )
            for field in ("in_scope_accuracy", "macro_f1", "oos_precision", "oos_recall")
        ]
        rows.append(("cold", _pct(base.cold_share), _pct(cand.cold_share)))
    else:
        rows = []
    for row in rows:
        table.add_row(*row)
    console.print(table)
    gate = Table(
        title=f"Gate: tolerance in quality {result.tolerance_quality:g}, "
        f"minimum saving {result.min_saving:g}"
    )
    for column in ("rule", "baseline", "candidate", "measured", "limit", "verdict"):
        gate.add_column(column)
    for c in result.checks:
        money = c.figure == "cost saving"
        shown = (lambda v: f"${v:.6f}") if money else _num
        gate.add_row(
            c.figure,
            shown(c.baseline),
            shown(c.candidate),
            f"{c.measured:+.4f}",
            f">= {c.limit:+.4f}",
            "pass" if c.passed else "[red]FAIL[/red]",
        )
    console.print(gate)
