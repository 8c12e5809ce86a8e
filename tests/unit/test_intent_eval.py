"""Intent evaluation on hand-made data: the baselines' thresholds (set on the index file's `oos`
rows scored against the whole index, as routebook's calibrated threshold is), the random
router's floor, the cold-start tests each router is reported with, and the index's labels."""

from __future__ import annotations

import re

import numpy as np
import pytest

from routebook.decide import DecisionParams
from routebook.jobs.baselines import IntentPredictions
from routebook.jobs.datasets import IntentRow
from routebook.jobs.intent_eval import (
    _with_oos_rows,
    cold_tests,
    evaluate_intent_routers,
    intent_figures,
    random_intent_figures,
)
from routebook.jobs.metrics import intent_report
from routebook.jobs.progress import Silent


def test_the_threshold_comes_from_the_oos_rows_and_the_test_part_is_kept_apart() -> None:
    # Three test queries, then four `oos` rows scoring 0.2, 0.4, 0.5, 0.9.
    predictions = IntentPredictions(
        labels=("a", "b", "a", "a", "b", "a", "b"),
        scores=np.array([0.95, 0.45, 0.3, 0.4, 0.2, 0.9, 0.5]),
    )
    test, threshold = _with_oos_rows(predictions, 3, goal=0.75)
    assert test.labels == ("a", "b", "a") and list(test.scores) == [0.95, 0.45, 0.3]
    # Recall 0.75 of 4 rows = 3 rows cold: the lowest threshold above 0.2, 0.4 and 0.5.
    assert 0.5 < threshold < 0.5 + 1e-12
    assert test.routed(threshold) == ["a", None, None]
    no_rows = IntentPredictions(labels=("a",), scores=np.array([0.3]))
    assert _with_oos_rows(no_rows, 1, goal=0.8)[1] == -np.inf  # nothing to detect: never cold


# --------------------------------------------------------------------------------------------
# The random router at the same cold rate guesses among the index's routes (R1)
# --------------------------------------------------------------------------------------------

ROUTES = [chr(ord("a") + i) for i in range(15)]  # the index's 15 routes, a ... o
# A label-sorted slice of a test file: 3 of the 15 routes, "z" (no route) and 1 `oos` row.
TRUE = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["z"] + ["oos"]


def test_the_random_router_guesses_among_the_routes_not_the_test_files_labels() -> None:
    cold = 2 / 11
    figures = random_intent_figures(TRUE, cold, ROUTES)
    # 10 in-scope rows, 9 of them with a label that is a route: each right with (1 - cold) / 15.
    # (Guessing among the test file's labels read (1 - cold) / 4: 3.75 times too high.)
    assert figures["in_scope_accuracy"] == pytest.approx((1 - cold) / 15 * 9 / 10)
    # Each route predicted on (1 - cold) * 11 / 15 rows; F1 = 2 * hit * n / (n + predicted)
    # for a, b, c, 0 for the 12 routes no row has and for "z", which is never predicted.
    pred = (1 - cold) * 11 / 15
    f1 = [2 * (1 - cold) / 15 * n / (n + pred) for n in (4, 3, 2)]
    assert figures["macro_f1"] == pytest.approx(sum(f1) / 16)
    assert figures["oos_precision"] == pytest.approx(1 / 11)
    assert figures["oos_recall"] == pytest.approx(cold)


def test_the_random_routers_accuracy_and_oos_figures_are_its_expectations() -> None:
    """Simulated: exactly the cold share of the queries goes cold, at random, the rest get a
    uniform guess among the routes; the means of intent_report's figures are the formulas."""
    rng = np.random.default_rng(0)
    n, n_cold = len(TRUE), 2
    runs = []
    for _ in range(20_000):
        pred: list[str | None] = [ROUTES[i] for i in rng.integers(0, len(ROUTES), n)]
        for i in rng.choice(n, n_cold, replace=False):
            pred[i] = None
        runs.append(intent_report(TRUE, pred))
    expected = random_intent_figures(TRUE, n_cold / n, ROUTES)
    accuracy = np.mean([r.in_scope_accuracy for r in runs])
    assert accuracy == pytest.approx(expected["in_scope_accuracy"], abs=0.002)
    assert np.mean([r.oos_recall for r in runs]) == pytest.approx(expected["oos_recall"], abs=0.01)
    precision = np.mean([r.oos_precision for r in runs])
    assert precision == pytest.approx(expected["oos_precision"], abs=0.01)


def test_the_figures_count_a_predicted_only_label_in_the_fast_path_too() -> None:
    # intent_figures refuses to run when its fast bootstrap figures and intent_report's differ;
    # "c" is only predicted, so both must count it (F1 0) in macro-F1.
    true = ["a", "a", "b", "b", "oos", "a"]
    pred: list[str | None] = ["a", "c", "b", "b", None, "a"]
    figures = intent_figures(
        "r", None, true, pred, 50, 0, index_labels={"a", "b", "c"}, tests={"support": 1.0}
    )
    # a: 2*2 / (3 + 2) = 0.8; b: 2*2 / (2 + 2) = 1; c: 0 -> mean 0.6
    assert figures.report.macro_f1 == pytest.approx(0.6)
    ci = figures.intervals["macro_f1"]
    assert ci is not None and ci.low <= 0.6 <= ci.high
    assert figures.cold_tests == {"support": 1.0}


# --------------------------------------------------------------------------------------------
# Which cold-start tests a router applies (R2)
# --------------------------------------------------------------------------------------------


def test_cold_tests_name_the_support_test_when_it_is_the_one_calibrate_chose() -> None:
    # What calibrate writes for CLINC150: the similarity test off (-1), the support test on.
    calibrated = DecisionParams(cold_start_threshold=-1.0, min_support=6.357)
    assert cold_tests(calibrated) == {"support": 6.357}
    assert cold_tests(DecisionParams()) == {"top_similarity": 0.55, "support": 0.25}
    assert cold_tests(DecisionParams(cold_start_threshold=-1.0, min_support=0.0)) == {}


# --------------------------------------------------------------------------------------------
# An index with fewer than two routes is refused before any work (R6)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["oos", "oos"], "the index file has 0 in-scope labels; intent eval needs at least 2"),
        (["greet", "oos", "greet"], "has 1 in-scope label ('greet'); intent eval needs at least 2"),
    ],
)
def test_an_index_with_fewer_than_two_routes_is_refused_up_front(
    labels: list[str], message: str
) -> None:
    rows = [IntentRow(id=str(i), text=f"text {i}", label=label) for i, label in enumerate(labels)]
    vectors = np.zeros((len(rows), 4), dtype=np.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_intent_routers(
            rows, vectors, rows, vectors, DecisionParams(), 10, 10, 0, Silent(), 0.8
        )
