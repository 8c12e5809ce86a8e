"""Evaluation maths for routing: quality curves, PGR, APGR, CPT, cost savings, bootstrap CIs
and intent metrics.

Why this module exists apart from the service: these are the numbers routebook publishes and
compares with RouteLLM's paper (arXiv 2406.18665), so they must be easy to audit and to test on
hand-worked examples without an embedder, an index or a database. Everything here is a pure
function of per-query arrays (numpy and the standard library only); loading data lives in
`routebook.jobs.datasets` and running routers lives in the evaluation job.

Conventions:

* Quality is per query in [0, 1] (correctness for MMLU/GSM8K, judge score / 10 for MT-Bench).
* A two-model curve is a list of `CurvePoint(strong_share, quality)`: the share of queries sent
  to the strong model (a fraction in [0, 1], not a percentage as in RouteLLM's printouts) and the
  mean quality the router achieves at that setting.
* A multi-model curve is a list of `CostPoint(mean_cost, quality)` with the mean dollars per query.
* A metric that is undefined for the input (0/0, a target never reached) is `None`, never a
  silently invented 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One setting of a two-model router: share of strong-model calls and mean quality."""

    strong_share: float
    quality: float


@dataclass(frozen=True, slots=True)
class CostPoint:
    """One setting of a multi-model router: mean dollars per query and mean quality."""

    mean_cost: float
    quality: float


@dataclass(frozen=True, slots=True)
class CurveSummary:
    """The headline two-model figures RouteLLM reports: APGR, CPT(50%) and CPT(80%)."""

    apgr: float
    cpt50: float | None
    cpt80: float | None


@dataclass(frozen=True, slots=True)
class OracleResult:
    """The best any two-model router can do: pick the better model for every query.

    `strong_share` is the smallest share of strong calls that reaches `quality`: the oracle
    sends a query to the strong model only when the strong model is strictly better on it.
    """

    quality: float
    strong_share: float


@dataclass(frozen=True, slots=True)
class ConfidenceInterval:
    """A percentile-bootstrap interval around the statistic computed on the full data."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class IntentReport:
    """Intent-routing figures; a cold start (`None` prediction) means "matched no route".

    Undefined ratios (e.g. OOS recall on a dataset without `oos` rows) are `None`.
    """

    n_in_scope: int
    n_oos: int
    in_scope_accuracy: float | None
    macro_f1: float | None
    in_scope_cold_rate: float | None
    oos_precision: float | None
    oos_recall: float | None
    oos_f1: float | None
    overall_accuracy: float | None


# --------------------------------------------------------------------------------------------
# Small validated conversions
# --------------------------------------------------------------------------------------------


def _as_quality(values: ArrayLike, name: str) -> FloatArray:
    """Per-query quality as a 1-D float array; reject empty or non-finite data early."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_pair(quality_strong: ArrayLike, quality_weak: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Both models' per-query quality, checked to describe the same queries."""
    strong = _as_quality(quality_strong, "quality_strong")
    weak = _as_quality(quality_weak, "quality_weak")
    if strong.shape != weak.shape:
        raise ValueError(f"quality arrays differ in length: {strong.size} vs {weak.size}")
    return strong, weak


def _as_mask(routed_strong: ArrayLike, n: int) -> npt.NDArray[np.bool_]:
    """A boolean routing decision per query; ints are refused so 0/1 indices are not confused."""
    mask = np.asarray(routed_strong)
    if n == 0:
        raise ValueError("routed_strong must not be empty")
    if mask.dtype != np.bool_:
        raise ValueError(f"routed_strong must be a boolean array, got dtype {mask.dtype}")
    if mask.shape != (n,):
        raise ValueError(f"routed_strong has shape {mask.shape}, expected ({n},)")
    return mask


def _check_fraction(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share of strong calls must be in [0, 1], got {share}")
    return float(share)


def _check_share(share: float) -> float:
    """A share of strong calls, or strong-call equivalent: at least 0, and above 1 only when a
    cascade spent more than the strong model alone would have."""
    if not (math.isfinite(share) and share >= 0.0):
        raise ValueError(f"share of strong calls must be finite and at least 0, got {share}")
    return float(share)


def _gap(weak_mean: float, strong_mean: float) -> float:
    """strong - weak, the PGR denominator; zero makes every PGR-based figure meaningless."""
    gap = float(strong_mean) - float(weak_mean)
    if gap == 0.0 or not math.isfinite(gap):
        raise ValueError(f"PGR needs distinct finite model means, got {weak_mean}, {strong_mean}")
    return gap


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


# --------------------------------------------------------------------------------------------
# Piecewise-linear curve helpers (shared by the two-model and the cost curves)
# --------------------------------------------------------------------------------------------


def _sorted_xy(pairs: Iterable[tuple[float, float]]) -> tuple[FloatArray, FloatArray]:
    """Sort points by x with a stable sort, so ties keep the caller's order."""
    data = np.asarray(list(pairs), dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(data)):
        raise ValueError("curve points must be finite")
    order = np.argsort(data[:, 0], kind="stable")
    return data[order, 0], data[order, 1]


def _trapezoid(ys: FloatArray, xs: FloatArray) -> float:
    """Trapezoid rule, written out so it does not depend on numpy's trapz/trapezoid rename."""
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def _first_crossing(xs: FloatArray, ys: FloatArray, target: float) -> float | None:
    """Smallest x where the piecewise-linear curve through (xs, ys) reaches `target`.

    Walking the segments in x order and interpolating inside the first one that crosses the
    target gives the *minimum* x even when the curve is not monotone; `None` if never reached.
    """
    if ys.size == 0:
        return None
    if ys[0] >= target:
        return float(xs[0])
    for i in range(1, ys.size):
        if ys[i] >= target:  # ys[i-1] < target <= ys[i], so the slope is positive
            t = (target - ys[i - 1]) / (ys[i] - ys[i - 1])
            return float(xs[i - 1] + t * (xs[i] - xs[i - 1]))
    return None


# --------------------------------------------------------------------------------------------
# Two-model routing: per-query results, PGR, APGR, CPT
# --------------------------------------------------------------------------------------------


def pgr(quality: float, weak_quality_mean: float, strong_quality_mean: float) -> float:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong model's.

    It is a ratio of differences, so it does not change when quality is rescaled (MT-Bench
    judge scores /10 give the same PGR as raw scores).
    """
    gap = _gap(weak_quality_mean, strong_quality_mean)
    return (float(quality) - float(weak_quality_mean)) / gap


def strong_share(routed_strong: ArrayLike) -> float:
    """Share of queries sent to the strong model (the cost axis of a two-model curve)."""
    mask = np.asarray(routed_strong)
    return float(_as_mask(mask, mask.size).mean())


def routed_quality(
    quality_strong: ArrayLike, quality_weak: ArrayLike, routed_strong: ArrayLike
) -> float:
    """Mean quality when each query gets the answer of the model the router chose."""
    strong, weak = _as_pair(quality_strong, quality_weak)
    mask = _as_mask(routed_strong, strong.size)
    return float(np.where(mask, strong, weak).mean())


def routed_point(
    quality_strong: ArrayLike, quality_weak: ArrayLike, routed_strong: ArrayLike
) -> CurvePoint:
    """One point of the cost-quality curve for one router setting (e.g. one threshold)."""
    return CurvePoint(
        strong_share=strong_share(routed_strong),
        quality=routed_quality(quality_strong, quality_weak, routed_strong),
    )


def threshold_sweep(
    scores: ArrayLike, quality_strong: ArrayLike, quality_weak: ArrayLike, n_bins: int = 10
) -> list[CurvePoint]:
    """Curve for a router that scores each query (higher = more deserving of the strong model).

    Mirrors RouteLLM's benchmark sweep: thresholds are the `n_bins + 1` quantile edges of the
    scores (deciles by default, linear interpolation as in pandas' `qcut`); a query goes strong
    when `score >= threshold`, except at the last edge (the maximum), where `>` is used so the
    sweep ends with 0% strong calls. The first edge (the minimum) gives 100% strong calls.
    """
    strong, weak = _as_pair(quality_strong, quality_weak)
    s = _as_quality(scores, "scores")
    if s.shape != strong.shape:
        raise ValueError(f"scores has {s.size} entries, expected {strong.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    edges = np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1))
    points = []
    for i, edge in enumerate(edges):
        mask = s > edge if i == n_bins else s >= edge
        points.append(routed_point(strong, weak, mask))
    return points


def _pgr_curve(
    points: Iterable[CurvePoint], weak_mean: float, strong_mean: float
) -> tuple[FloatArray, FloatArray]:
    """The curve in (share, PGR) space, sorted by share, with both endpoints added.

    The endpoints are what any two-model router reaches by construction: 0% strong calls is the
    weak model alone (PGR 0) and 100% is the strong model alone (PGR 1). RouteLLM's sweep
    contains them because its first and last thresholds are the minimum and maximum score. They
    are added before and after the caller's points so that, with ties at a share of 0 or 1, the
    curve still starts at the weak model and ends at the strong one; ties keep the caller's
    order, which should be the order the sweep walks (cheapest setting first).

    A cascade can spend more than the strong model alone (a cold query that ends on the strong
    model also paid the cheap attempt): its strong-call equivalent is above 1. Such points lie
    past the axis's end. The curve is cut at share 1, interpolating between the last point
    within it and the first beyond it, so the extra spend costs area instead of being clipped
    away as if it were free.
    """
    gap = _gap(weak_mean, strong_mean)
    pairs = [(_check_share(p.strong_share), p.quality) for p in points]
    xs, ys = _sorted_xy(pairs)
    xs = np.concatenate(([0.0], xs))
    ys = np.concatenate(([float(weak_mean)], ys))
    beyond = np.flatnonzero(xs > 1.0)
    if beyond.size:
        i = int(beyond[0])  # xs[i - 1] <= 1 < xs[i], and i >= 1 because xs[0] = 0
        t = (1.0 - xs[i - 1]) / (xs[i] - xs[i - 1])
        at_one = ys[i - 1] + t * (ys[i] - ys[i - 1])
        xs = np.concatenate((xs[:i], [1.0]))
        ys = np.concatenate((ys[:i], [at_one]))
    xs = np.concatenate((xs, [1.0]))
    ys = np.concatenate((ys, [float(strong_mean)]))
    return xs, (ys - float(weak_mean)) / gap


def apgr(points: Iterable[CurvePoint], weak_mean: float, strong_mean: float) -> float:
    """Average performance gap recovered: the trapezoid integral of PGR over share in [0, 1].

    This is how RouteLLM's `evaluate.py` computes it (`np.trapz` of accuracy over the strong
    fraction, sorted by that fraction, minus the weak model's area, over the strong-minus-weak
    area). A random router's curve is the straight line PGR = share, so it scores exactly 0.5.
    """
    xs, gains = _pgr_curve(points, weak_mean, strong_mean)
    return _trapezoid(gains, xs)


def cpt(
    points: Iterable[CurvePoint], weak_mean: float, strong_mean: float, target_pgr: float
) -> float | None:
    """Call-performance threshold: the minimum share of strong calls that reaches `target_pgr`.

    Linear interpolation between sweep points, like RouteLLM's `np.interp(target, accuracy,
    strong_percentage)`. The two agree whenever quality rises with the share of strong calls;
    `np.interp` silently assumes that, whereas this takes the first crossing of the target, which
    is the minimum share even on a non-monotone curve. Because the curve ends at the strong model
    (PGR 1), a target <= 1 is always reached; a higher target that is never reached gives `None`.
    """
    xs, gains = _pgr_curve(points, weak_mean, strong_mean)
    return _first_crossing(xs, gains, float(target_pgr))


def summarize_curve(
    points: Sequence[CurvePoint], weak_mean: float, strong_mean: float
) -> CurveSummary:
    """APGR, CPT(50%) and CPT(80%), the three figures of RouteLLM's result tables."""
    return CurveSummary(
        apgr=apgr(points, weak_mean, strong_mean),
        cpt50=cpt(points, weak_mean, strong_mean, 0.5),
        cpt80=cpt(points, weak_mean, strong_mean, 0.8),
    )


# --------------------------------------------------------------------------------------------
# Reference routers: random and oracle
# --------------------------------------------------------------------------------------------

DEFAULT_SHARES: tuple[float, ...] = tuple(i / 10 for i in range(11))
"""The 11 shares RouteLLM's decile sweep lands on (about 0%, 10%, ..., 100% strong calls)."""


def random_router_quality(
    quality_strong: ArrayLike, quality_weak: ArrayLike, share_strong: float
) -> float:
    """Expected quality of a router that sends a random `share_strong` of queries strong.

    Using the expectation rather than one random draw makes the baseline exact and
    seed-independent: share * mean(strong) + (1 - share) * mean(weak).
    """
    strong, weak = _as_pair(quality_strong, quality_weak)
    share = _check_fraction(share_strong)
    return share * float(strong.mean()) + (1.0 - share) * float(weak.mean())


def random_router_curve(
    quality_strong: ArrayLike,
    quality_weak: ArrayLike,
    shares: Sequence[float] = DEFAULT_SHARES,
) -> list[CurvePoint]:
    """The random router's expected curve at the given shares (a straight line)."""
    return [CurvePoint(s, random_router_quality(quality_strong, quality_weak, s)) for s in shares]


def oracle(quality_strong: ArrayLike, quality_weak: ArrayLike) -> OracleResult:
    """Best-of-both quality and the least share of strong calls that achieves it."""
    strong, weak = _as_pair(quality_strong, quality_weak)
    return OracleResult(
        quality=float(np.maximum(strong, weak).mean()),
        strong_share=float((strong > weak).mean()),
    )


def oracle_quality_at_share(
    quality_strong: ArrayLike, quality_weak: ArrayLike, share_strong: float
) -> float:
    """Best quality reachable when at most `share_strong` of queries may go strong.

    The oracle spends its strong calls on the queries with the largest positive gain
    (strong - weak). `share * n` may be fractional; the last call then counts for that fraction
    of its gain, i.e. we interpolate linearly between whole numbers of calls. For 0/1 outcomes
    this equals RouteLLM's `get_optimal_accuracy` (weak correct + min(share * n, queries only the
    strong model gets right)).
    """
    strong, weak = _as_pair(quality_strong, quality_weak)
    budget = _check_fraction(share_strong) * strong.size
    gains = np.sort((strong - weak)[strong > weak])[::-1]
    whole = min(math.floor(budget), gains.size)
    extra = gains[whole] * (budget - whole) if whole < gains.size else 0.0
    return float(weak.mean()) + (float(gains[:whole].sum()) + float(extra)) / strong.size


def oracle_curve(
    quality_strong: ArrayLike,
    quality_weak: ArrayLike,
    shares: Sequence[float] = DEFAULT_SHARES,
) -> list[CurvePoint]:
    """The oracle's curve at the given shares: the ceiling any two-model router can reach."""
    return [CurvePoint(s, oracle_quality_at_share(quality_strong, quality_weak, s)) for s in shares]


# --------------------------------------------------------------------------------------------
# Multi-model routing: quality against dollars per query
# --------------------------------------------------------------------------------------------


def routed_cost_point(quality: ArrayLike, cost: ArrayLike, choice: ArrayLike) -> CostPoint:
    """Mean quality and mean cost when query i is answered by model `choice[i]`.

    `quality` is (n_queries, n_models); `cost` is the same shape (per-query dollars, e.g. from
    token counts) or (n_models,) (a flat price per call).
    """
    q = np.asarray(quality, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] == 0:
        raise ValueError(f"quality must be (n_queries, n_models), got shape {q.shape}")
    c = np.broadcast_to(np.asarray(cost, dtype=np.float64), q.shape)
    picks = np.asarray(choice)
    if picks.shape != (q.shape[0],) or not np.issubdtype(picks.dtype, np.integer):
        raise ValueError(f"choice must be {q.shape[0]} integer model indices")
    if picks.min() < 0 or picks.max() >= q.shape[1]:
        raise ValueError(f"choice indices must be in [0, {q.shape[1]})")
    rows = np.arange(q.shape[0])
    return CostPoint(mean_cost=float(c[rows, picks].mean()), quality=float(q[rows, picks].mean()))


def _cost_curve(points: Iterable[CostPoint]) -> tuple[FloatArray, FloatArray]:
    pairs = [(p.mean_cost, p.quality) for p in points]
    if not pairs:
        raise ValueError("a cost-quality curve needs at least one point")
    return _sorted_xy(pairs)


def quality_at_cost(points: Iterable[CostPoint], cost: float) -> float | None:
    """Quality on the piecewise-linear cost curve at a budget of `cost` dollars per query.

    Between two settings, randomly mixing them achieves the linear interpolation in
    expectation, which is why interpolating is fair. Below the cheapest setting there is no
    affordable point (`None`); above the dearest, the dearest setting's quality is returned, as
    spending less than the budget is allowed. Points sharing a cost count as their best.
    """
    xs, ys = _cost_curve(points)
    if cost < xs[0]:
        return None
    if cost >= xs[-1]:
        return float(ys[xs == xs[-1]].max())
    if np.any(xs == cost):
        return float(ys[xs == cost].max())
    i = int(np.searchsorted(xs, cost))  # xs[i-1] < cost < xs[i]
    t = (cost - xs[i - 1]) / (xs[i] - xs[i - 1])
    return float(ys[i - 1] + t * (ys[i] - ys[i - 1]))


def min_cost_at_quality(points: Iterable[CostPoint], target_quality: float) -> float | None:
    """Least mean cost at which the cost curve reaches `target_quality`; `None` if it never does."""
    xs, ys = _cost_curve(points)
    return _first_crossing(xs, ys, float(target_quality))


def cost_saving_at_quality(
    points: Iterable[CostPoint],
    strongest_cost: float,
    strongest_quality: float,
    fraction: float = 0.95,
) -> float | None:
    """Share of the strongest model's cost saved while keeping `fraction` of its quality.

    1 - (least cost reaching fraction * strongest_quality) / strongest_cost. The strongest model
    alone is not added to the curve implicitly; include it as a point if it is an option.
    `None` if the curve never reaches the target.
    """
    if strongest_cost <= 0:
        raise ValueError(f"strongest_cost must be positive, got {strongest_cost}")
    cost = min_cost_at_quality(points, fraction * float(strongest_quality))
    return None if cost is None else 1.0 - cost / float(strongest_cost)


# --------------------------------------------------------------------------------------------
# Uncertainty: percentile bootstrap over queries
# --------------------------------------------------------------------------------------------


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: ArrayLike,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> ConfidenceInterval:
    """Percentile-bootstrap (1 - alpha) interval for `statistic(*arrays)`.

    Queries are the unit of sampling: each resample draws query indices with replacement and
    applies the same indices to every array, so per-query pairings (strong quality, weak
    quality, routing decision) stay intact. A fixed `seed` makes the interval reproducible,
    which matters for small sets such as MT-Bench's 14 test questions.

    Example: `bootstrap_ci(routed_quality, q_strong, q_weak, routed)`.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one per-query array")
    if n_resamples < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_resamples >= 1 and 0 < alpha < 1, got {n_resamples}, {alpha}")
    data = [np.asarray(a) for a in arrays]
    n = len(data[0])
    if n == 0 or any(len(a) != n for a in data):
        raise ValueError("per-query arrays must be non-empty and of equal length")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples, dtype=np.float64)
    for r in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        stats[r] = statistic(*(a[idx] for a in data))
    # A resample can leave a statistic undefined (NaN: e.g. both models scoring the same on a
    # 14-query MT-Bench draw, so PGR divides by zero); the interval is taken over the others.
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        low = high = math.nan
    else:
        low, high = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ConfidenceInterval(estimate=float(statistic(*data)), low=float(low), high=float(high))


# --------------------------------------------------------------------------------------------
# Intent routing (CLINC150, Banking77)
# --------------------------------------------------------------------------------------------


def _macro_f1(true: Sequence[str], pred: Sequence[str | None], labels: set[str]) -> float | None:
    """Unweighted mean of per-label F1 over `labels`, each label's counts taken over all rows.

    F1 = 2·TP / (2·TP + FP + FN) = 2·TP / (#true as label + #predicted as label). A prediction of
    an in-scope label on an `oos` row is a false positive for that label, so failing to go cold on
    out-of-scope queries lowers macro-F1 too. A label that is only predicted (none of the rows
    has it, so TP = 0) counts with F1 0, as scikit-learn's `f1_score(average="macro")` counts it
    over the true and predicted labels: dropping it would hide the router's wrong routes to it
    whenever the test file, or a `--limit` slice of a label-sorted one, lacks that label.
    """
    if not labels:
        return None
    hits = Counter(t for t, p in zip(true, pred, strict=True) if t == p)
    n_true = Counter(true)
    n_pred = Counter(p for p in pred if p is not None)
    scores = [2 * hits[x] / (n_true[x] + n_pred[x]) for x in sorted(labels)]
    return sum(scores) / len(scores)


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def intent_report(
    true_labels: Sequence[str],
    predicted_labels: Sequence[str | None],
    oos_label: str = "oos",
) -> IntentReport:
    """Score intent routing, treating a cold start as "out of scope".

    * in-scope accuracy: over rows whose true label is not `oos_label`; a cold prediction is
      wrong (the query had a route and we missed it).
    * macro-F1: over the in-scope labels that are true or predicted on some row (Banking77 is
      imbalanced, so report it next to accuracy).
    * OOS detection: "detected" means the prediction is `None` (cold start) or `oos_label` (for
      classifiers trained with an oos class); precision, recall and F1 of that against the truth.
    * overall accuracy: in-scope rows right, plus oos rows detected, over all rows.
    """
    if len(true_labels) != len(predicted_labels):
        raise ValueError(f"{len(true_labels)} true labels but {len(predicted_labels)} predictions")
    true = list(true_labels)
    pred = [None if p == oos_label else p for p in predicted_labels]
    is_oos = [t == oos_label for t in true]
    detected = [p is None for p in pred]
    n_oos = sum(is_oos)
    n_in = len(true) - n_oos
    in_correct = sum(p == t for t, p, o in zip(true, pred, is_oos, strict=True) if not o)
    in_cold = sum(d for d, o in zip(detected, is_oos, strict=True) if not o)
    tp = sum(d and o for d, o in zip(detected, is_oos, strict=True))
    precision = _ratio(tp, sum(detected))
    recall = _ratio(tp, n_oos)
    return IntentReport(
        n_in_scope=n_in,
        n_oos=n_oos,
        in_scope_accuracy=_ratio(in_correct, n_in),
        macro_f1=_macro_f1(
            true, pred, {t for t in true if t != oos_label} | {p for p in pred if p is not None}
        ),
        in_scope_cold_rate=_ratio(in_cold, n_in),
        oos_precision=precision,
        oos_recall=recall,
        oos_f1=_f1(precision, recall),
        overall_accuracy=_ratio(in_correct + tp, len(true)),
    )
