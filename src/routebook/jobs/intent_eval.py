"""Evaluate routers on intent data (text + label, `oos` = out of scope): one route per label.

routebook answers with the route its neighbours vote for, or goes cold (CASCADE), which counts
as "out of scope". Out-of-scope rows of the index file are never indexed (they are not a route):
like Larson et al.'s "oos-threshold" setting, they only serve to tune the cold-start test. The
baselines' single cold-start threshold (top similarity for the kNN vote, top probability for the
linear head) is chosen on a part held out of the *index* file (20% of each label plus every
`oos` row) for the same out-of-scope recall goal `routebook calibrate` uses, then the baseline is
refitted on the whole in-scope index. Nothing is tuned on the test file.

The random router at the same cost is one that goes cold on as many queries as the router under
test and otherwise picks a label uniformly; its figures are exact expectations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routebook.decide import DecisionParams
from routebook.domain import Strategy
from routebook.jobs import baselines, metrics, replay
from routebook.jobs.baselines import IntentPredictions
from routebook.jobs.datasets import OOS_LABEL, IntentRow
from routebook.jobs.metrics import ConfidenceInterval, IntentReport
from routebook.jobs.progress import Tracker

Vectors = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]

FIELDS = ("in_scope_accuracy", "macro_f1", "oos_precision", "oos_recall", "oos_f1")


@dataclass(frozen=True, slots=True)
class IntentFigures:
    name: str
    threshold: float | None
    report: IntentReport
    cold_share: float
    intervals: dict[str, ConfidenceInterval | None]
    random: dict[str, float | None]


@dataclass(frozen=True, slots=True)
class IntentEvaluation:
    n_index: int
    n_test: int
    n_labels: int
    k: int
    params: DecisionParams
    oos_recall_goal: float
    routers: tuple[IntentFigures, ...]


def threshold_for_recall(scores: FloatArray, is_oos: npt.NDArray[np.bool_], goal: float) -> float:
    """The lowest threshold (cold when score < threshold) whose OOS recall reaches `goal`.

    The lowest one keeps the most in-scope queries routed. Without OOS rows there is nothing to
    detect, so the answer is "never cold" (-inf).
    """
    oos = np.sort(scores[is_oos])
    if oos.size == 0 or goal <= 0:
        return -math.inf
    need = min(oos.size, math.ceil(goal * oos.size - 1e-9))
    return float(np.nextafter(oos[need - 1], np.inf))


def route_with_routebook(
    index_rows: Sequence[IntentRow],
    index_vectors: Vectors,
    texts: Sequence[str],
    vectors: Vectors,
    params: DecisionParams,
    k: int,
    advance: Callable[[int], None] | None = None,
    serving: replay.Serving = replay.DEFAULT_SERVING,
) -> tuple[list[str | None], FloatArray]:
    """routebook's route per query (None = cold start) and each query's top similarity.

    The head is trained on the in-scope index rows, as the server trains it on its index."""
    searched, _head = replay.search_intents(
        index_rows, index_vectors, texts, vectors, k, params, advance, serving
    )
    choices = replay.decide_all(searched, replay.intent_catalog(), params, k)
    routes = [c.route if c.strategy is Strategy.SEMANTIC else None for c in choices]
    return routes, np.array([c.top_similarity for c in choices], dtype=np.float64)


def _encode(
    true: Sequence[str], pred: Sequence[str | None]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Labels as integers, with -1 for `oos` (true) and for a cold start or `oos` (predicted)."""
    names = sorted({t for t in true if t != OOS_LABEL} | {p for p in pred if p and p != OOS_LABEL})
    code = {name: i for i, name in enumerate(names)}
    t = np.array([code.get(x, -1) if x != OOS_LABEL else -1 for x in true], dtype=np.int64)
    p = np.array([-1 if x is None or x == OOS_LABEL else code[x] for x in pred], dtype=np.int64)
    return t, p


def _fast_report(t: npt.NDArray[np.int64], p: npt.NDArray[np.int64]) -> dict[str, float]:
    """`metrics.intent_report`'s figures on integer codes, fast enough for 1,000 resamples.

    `intent_figures` checks it against `intent_report` on the full data, so the two cannot drift.
    """
    inside = t >= 0
    detected = p < 0
    oos = ~inside
    size = int(max(t.max(initial=-1), p.max(initial=-1))) + 1
    n_true = np.bincount(t[inside], minlength=size)
    n_pred = np.bincount(p[~detected], minlength=size)
    hits = np.bincount(t[inside & (p == t)], minlength=size)
    present = n_true > 0
    tp = float((detected & oos).sum())
    precision = tp / detected.sum() if detected.any() else math.nan
    recall = tp / oos.sum() if oos.any() else math.nan
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "in_scope_accuracy": float((p[inside] == t[inside]).mean()) if inside.any() else math.nan,
        "macro_f1": (
            float(np.mean(2 * hits[present] / (n_true[present] + n_pred[present])))
            if present.any()
            else math.nan
        ),
        "oos_precision": precision,
        "oos_recall": recall,
        "oos_f1": f1,
    }


def intent_figures(
    name: str,
    threshold: float | None,
    true: Sequence[str],
    pred: Sequence[str | None],
    resamples: int,
    seed: int,
) -> IntentFigures:
    report = metrics.intent_report(true, pred, OOS_LABEL)
    t, p = _encode(true, pred)
    fast = _fast_report(t, p)
    for field in FIELDS:
        exact = getattr(report, field)
        if exact is not None and not math.isclose(exact, fast[field], abs_tol=1e-12):
            raise RuntimeError(f"fast {field} {fast[field]} differs from intent_report's {exact}")
    intervals: dict[str, ConfidenceInterval | None] = {}
    for field in FIELDS:
        if getattr(report, field) is None:
            intervals[field] = None
            continue

        def stat(ta: npt.NDArray[np.int64], pa: npt.NDArray[np.int64], f: str = field) -> float:
            return _fast_report(ta, pa)[f]

        ci = metrics.bootstrap_ci(stat, t, p, n_resamples=resamples, seed=seed)
        intervals[field] = ci
    cold = sum(x is None or x == OOS_LABEL for x in pred) / len(pred)
    return IntentFigures(
        name=name,
        threshold=threshold,
        report=report,
        cold_share=cold,
        intervals=intervals,
        random=random_intent_figures(true, cold),
    )


def random_intent_figures(true: Sequence[str], cold: float) -> dict[str, float | None]:
    """Expected figures of a router that goes cold on a random `cold` share, else guesses."""
    labels = sorted({t for t in true if t != OOS_LABEL})
    n = len(true)
    n_oos = sum(t == OOS_LABEL for t in true)
    hit = (1.0 - cold) / len(labels) if labels else 0.0
    per_label_pred = (1.0 - cold) * n / len(labels) if labels else 0.0
    f1s = [
        2 * hit * sum(t == x for t in true) / (sum(t == x for t in true) + per_label_pred)
        for x in labels
    ]
    oos_precision = n_oos / n if cold > 0 else None
    oos_recall = cold if n_oos else None
    oos_f1 = (
        2 * oos_precision * oos_recall / (oos_precision + oos_recall)
        if oos_precision and oos_recall
        else None
    )
    return {
        "in_scope_accuracy": hit if labels else None,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "oos_precision": oos_precision,
        "oos_recall": oos_recall,
        "oos_f1": oos_f1,
    }


def _with_oos_rows(
    predictions: IntentPredictions, n_test: int, goal: float
) -> tuple[IntentPredictions, float]:
    """Split predictions made for the test queries followed by the index file's `oos` rows:
    the test queries' part, and the threshold that reaches the recall goal on the `oos` rows.

    The baselines are scored against the whole in-scope index, as routebook's calibrated
    threshold is (calibrate sets it again for the whole index), so neither side's threshold
    is set on a smaller index than the one it is tested with."""
    oos_scores = predictions.scores[n_test:]
    test = IntentPredictions(predictions.labels[:n_test], predictions.scores[:n_test])
    threshold = threshold_for_recall(oos_scores, np.ones(oos_scores.size, dtype=bool), goal)
    return test, threshold


def evaluate_intent_routers(
    index_rows: Sequence[IntentRow],
    index_vectors: Vectors,
    test_rows: Sequence[IntentRow],
    test_vectors: Vectors,
    params: DecisionParams,
    k: int,
    resamples: int,
    seed: int,
    tracker: Tracker,
    oos_recall_goal: float,
    serving: replay.Serving = replay.DEFAULT_SERVING,
) -> IntentEvaluation:
    texts = [r.text for r in test_rows]
    true = [r.label for r in test_rows]
    # Out-of-scope examples are not a route: they only calibrate the cold-start test.
    every_vector = index_vectors
    in_scope = np.array([r.label != OOS_LABEL for r in index_rows], dtype=bool)
    index_rows = [r for r in index_rows if r.label != OOS_LABEL]
    index_vectors = index_vectors[in_scope]
    routes, _ = route_with_routebook(
        index_rows,
        index_vectors,
        texts,
        test_vectors,
        params,
        k,
        tracker.step("route", len(test_rows)),
        serving,
    )
    advance = tracker.step("baselines", 2)
    index_labels = [r.label for r in index_rows]
    # The test queries and the index file's `oos` rows in one pass per baseline: the rows set
    # the baseline's threshold, the queries are what it is measured on.
    oos_vectors = every_vector[~in_scope]
    queries = np.concatenate([test_vectors, oos_vectors]) if oos_vectors.size else test_vectors
    n_test = len(test_rows)
    knn, knn_threshold = _with_oos_rows(
        baselines.knn_intent(index_vectors, index_labels, queries, k), n_test, oos_recall_goal
    )
    advance(1)
    linear, linear_threshold = _with_oos_rows(
        baselines.linear_intent(index_vectors, index_labels, queries, seed),
        n_test,
        oos_recall_goal,
    )
    advance(1)
    advance = tracker.step("bootstrap", 3)
    figures = []
    for name, threshold, pred in (
        ("routebook", params.cold_start_threshold, routes),
        (f"kNN vote (k={k})", knn_threshold, knn.routed(knn_threshold)),
        ("linear head", linear_threshold, linear.routed(linear_threshold)),
    ):
        figures.append(intent_figures(name, threshold, true, pred, resamples, seed))
        advance(1)
    return IntentEvaluation(
        n_index=len(index_rows),
        n_test=len(test_rows),
        n_labels=len({label for label in index_labels if label != OOS_LABEL}),
        k=k,
        params=params,
        oos_recall_goal=oos_recall_goal,
        routers=tuple(figures),
    )
