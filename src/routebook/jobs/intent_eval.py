"""Evaluate routers on intent data (text + label, `oos` = out of scope): one route per label.

routebook answers with the route its neighbours vote for, or goes cold (CASCADE), which counts
as "out of scope". Out-of-scope rows of the index file are never indexed (they are not a route):
like Larson et al.'s "oos-threshold" setting, they only serve to tune the cold-start test. The
baselines' single cold-start threshold (top similarity for the kNN vote, top probability for the
linear head) is set on those `oos` rows, scored against the baseline fitted on the *whole*
in-scope index, for the same out-of-scope recall goal `routebook calibrate` uses: the same way
`calibrate` sets routebook's threshold again for the whole index, so neither side's threshold
comes from a smaller index than the one it is tested with. Without `oos` rows the baselines
never go cold. Nothing is tuned on the test file.

The random router at the same cost is one that goes cold on as many queries as the router under
test and otherwise picks one of the index's routes uniformly (`random_intent_figures` says why
the index's, not the test file's).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
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


def cold_tests(params: DecisionParams) -> dict[str, float]:
    """The cold-start tests `decide` applies under `params`: `top_similarity` against
    `cold_start_threshold` and `support` (the neighbours' weight plus the head's share) against
    `min_support`. A test that cannot fire is left out (a cosine is never below -1, a support
    never below 0), so an empty answer means the router never goes cold on a non-empty index.
    """
    tests: dict[str, float] = {}
    if params.cold_start_threshold > -1.0:
        tests["top_similarity"] = params.cold_start_threshold
    if params.min_support > 0.0:
        tests["support"] = params.min_support
    return tests


def _threshold_test(score: str, threshold: float) -> dict[str, float]:
    """A baseline's one test; an infinite threshold (no `oos` rows to set it on) never fires."""
    return {score: threshold} if math.isfinite(threshold) else {}


@dataclass(frozen=True, slots=True)
class IntentFigures:
    """One router's figures on the test file.

    `threshold` is the threshold on the router's top score (routebook's `cold_start_threshold`
    on the top similarity, a baseline's own); `cold_tests` is every cold-start test the router
    applies, by the score each compares (a query is cold when any score is below its
    threshold; empty: never cold). They differ for routebook, whose other test, the neighbours'
    support against `min_support`, is the one `calibrate` often chooses, leaving
    `cold_start_threshold` at -1 ("never" for that test alone)."""

    name: str
    threshold: float | None
    cold_tests: dict[str, float]
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
    #: The namespace head routebook's row decided with (the baselines have their own).
    head: replay.HeadSummary


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
) -> tuple[list[str | None], FloatArray, replay.HeadSummary]:
    """routebook's route per query (None = cold start), each query's top similarity, and the
    head it decided with.

    The head is trained on the in-scope index rows, as the server trains it on its index."""
    searched, head = replay.search_intents(
        index_rows, index_vectors, texts, vectors, k, params, advance, serving
    )
    choices = replay.decide_all(searched, replay.intent_catalog(), params, k)
    routes = [c.route if c.strategy is Strategy.SEMANTIC else None for c in choices]
    tops = np.array([c.top_similarity for c in choices], dtype=np.float64)
    return routes, tops, replay.HeadSummary.of(head, params)


def _encode(
    true: Sequence[str], pred: Sequence[str | None]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """Labels as integers 0 ... n - 1 (the in-scope labels true or predicted on some row), with
    -1 for `oos` (true) and for a cold start or `oos` (predicted); and n."""
    names = sorted({t for t in true if t != OOS_LABEL} | {p for p in pred if p and p != OOS_LABEL})
    code = {name: i for i, name in enumerate(names)}
    t = np.array([code.get(x, -1) if x != OOS_LABEL else -1 for x in true], dtype=np.int64)
    p = np.array([-1 if x is None or x == OOS_LABEL else code[x] for x in pred], dtype=np.int64)
    return t, p, len(names)


def _fast_report(
    t: npt.NDArray[np.int64], p: npt.NDArray[np.int64], n_labels: int
) -> dict[str, float]:
    """`metrics.intent_report`'s figures on integer codes, fast enough for 1,000 resamples.

    `intent_figures` checks it against `intent_report` on the full data, so the two cannot drift.
    Macro-F1 averages over all `n_labels` labels of the full data, a label with no row in a
    resample counting 0 (scikit-learn's `f1_score(labels=..., zero_division=0)`): a label only
    predicted, once, has F1 0 but vanishes from a third of the resamples, and averaging over
    the labels of each resample instead put the whole interval above the estimate on a test
    file that holds few of the routes.
    """
    inside = t >= 0
    detected = p < 0
    oos = ~inside
    n_true = np.bincount(t[inside], minlength=n_labels)
    n_pred = np.bincount(p[~detected], minlength=n_labels)
    hits = np.bincount(t[inside & (p == t)], minlength=n_labels)
    scored = np.divide(
        2 * hits, n_true + n_pred, out=np.zeros(n_labels), where=(n_true + n_pred) > 0
    )
    tp = float((detected & oos).sum())
    precision = tp / detected.sum() if detected.any() else math.nan
    recall = tp / oos.sum() if oos.any() else math.nan
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "in_scope_accuracy": float((p[inside] == t[inside]).mean()) if inside.any() else math.nan,
        "macro_f1": float(scored.mean()) if n_labels else math.nan,
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
    *,
    index_labels: Collection[str],
    tests: dict[str, float],
) -> IntentFigures:
    """`index_labels`: the index's in-scope labels, the routes the router chooses from and the
    random router guesses among; `tests`: its cold-start tests (`IntentFigures.cold_tests`)."""
    report = metrics.intent_report(true, pred, OOS_LABEL)
    t, p, n_labels = _encode(true, pred)
    fast = _fast_report(t, p, n_labels)
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
            return _fast_report(ta, pa, n_labels)[f]

        ci = metrics.bootstrap_ci(stat, t, p, n_resamples=resamples, seed=seed)
        intervals[field] = ci
    cold = sum(x is None or x == OOS_LABEL for x in pred) / len(pred)
    return IntentFigures(
        name=name,
        threshold=threshold,
        cold_tests=dict(tests),
        report=report,
        cold_share=cold,
        intervals=intervals,
        random=random_intent_figures(true, cold, index_labels),
    )


def random_intent_figures(
    true: Sequence[str], cold: float, routes: Collection[str]
) -> dict[str, float | None]:
    """Expected figures of a router that goes cold on a random `cold` share of the queries and
    otherwise picks one of `routes` uniformly.

    This is RouteLLM's random router carried over to intents. There, "random at the same cost"
    makes the router's own choice (weak or strong model) at the same rate without looking at the
    query. Here the cost is the share of queries handed to the cascade (cold), and the choice is
    among the routes the router has: the in-scope labels of its index, the same set routebook
    and the baselines choose from. Not the test file's labels: a router does not know which
    labels a test file holds, and a guess among them uses exactly that knowledge. On a file
    sorted by label (CLINC150 `val`, Banking77 `dev_test`) a `--limit` slice holds a few of
    them, and guessing among those inflated the floor by the ratio of the two counts (15 times on a
    200-query CLINC150 slice). A test label that is no route can never be guessed right.

    Accuracy and the OOS figures are exact expectations (the cold share is fixed, so their
    denominators are); macro-F1 is taken from the expected counts (each label's F1 at its
    expected true positives and predictions), over the labels `metrics.intent_report` counts:
    the true in-scope labels and the routes the random router predicts.
    """
    route_set = {r for r in routes if r != OOS_LABEL}
    n = len(true)
    n_true = Counter(t for t in true if t != OOS_LABEL)
    n_in = sum(n_true.values())
    n_oos = n - n_in
    hit = (1.0 - cold) / len(route_set) if route_set else 0.0
    per_route_pred = (1.0 - cold) * n / len(route_set) if route_set else 0.0
    right = sum(c for label, c in n_true.items() if label in route_set)
    labels = set(n_true) | (route_set if per_route_pred > 0 else set())
    f1s = [
        2 * hit * n_true[x] / (n_true[x] + per_route_pred)
        if x in route_set
        else 0.0  # a true label that is no route: never predicted, never right
        for x in sorted(labels)
    ]
    oos_precision = n_oos / n if cold > 0 else None
    oos_recall = cold if n_oos else None
    oos_f1 = (
        2 * oos_precision * oos_recall / (oos_precision + oos_recall)
        if oos_precision and oos_recall
        else None
    )
    return {
        "in_scope_accuracy": hit * right / n_in if n_in else None,
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


def check_index_labels(index_rows: Sequence[IntentRow]) -> None:
    """Refuse an index file with fewer than two in-scope labels, before any work is done.

    With one route there is nothing to route between (any router is right on every routed
    query), and the linear head cannot be fitted on one class; with none there is no route at
    all. Without this check the run embedded and routed every query, then failed inside the
    baselines with Python's or scikit-learn's own message."""
    labels = sorted({r.label for r in index_rows if r.label != OOS_LABEL})
    if len(labels) < 2:
        found = f" ({labels[0]!r})" if labels else ""
        raise ValueError(
            f"the index file has {len(labels)} in-scope label{'' if len(labels) == 1 else 's'}"
            f"{found}; intent eval needs at least 2 (one route per label, `{OOS_LABEL}` rows "
            "are not a route): add rows of other labels to the index file"
        )


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
    check_index_labels(index_rows)
    texts = [r.text for r in test_rows]
    true = [r.label for r in test_rows]
    # Out-of-scope examples are not a route: they only calibrate the cold-start test.
    every_vector = index_vectors
    in_scope = np.array([r.label != OOS_LABEL for r in index_rows], dtype=bool)
    index_rows = [r for r in index_rows if r.label != OOS_LABEL]
    index_vectors = index_vectors[in_scope]
    routes, _, head = route_with_routebook(
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
    route_set = set(index_labels)
    figures = []
    for name, threshold, tests, pred in (
        ("routebook", params.cold_start_threshold, cold_tests(params), routes),
        (
            f"kNN vote (k={k})",
            knn_threshold,
            _threshold_test("top_similarity", knn_threshold),
            knn.routed(knn_threshold),
        ),
        (
            "linear head",
            linear_threshold,
            _threshold_test("top_probability", linear_threshold),
            linear.routed(linear_threshold),
        ),
    ):
        figures.append(
            intent_figures(
                name, threshold, true, pred, resamples, seed, index_labels=route_set, tests=tests
            )
        )
        advance(1)
    return IntentEvaluation(
        n_index=len(index_rows),
        n_test=len(test_rows),
        n_labels=len(route_set),
        k=k,
        params=params,
        oos_recall_goal=oos_recall_goal,
        routers=tuple(figures),
        head=head,
    )
