"""What `routebook eval` prints and writes: each router's cold-start test as it is applied and
how the baselines' thresholds were set. Hand-made evaluations, rendered to a recording console."""

from __future__ import annotations

import math

from rich.console import Console

from routebook.decide import DecisionParams
from routebook.jobs.intent_eval import IntentEvaluation, cold_tests, intent_figures
from routebook.jobs.report import render, to_json

# What `calibrate` writes for CLINC150 (docs/evaluation.md): the support test, no similarity test.
CALIBRATED = DecisionParams(cold_start_threshold=-1.0, min_support=6.357)


def _shown(evaluation: IntentEvaluation) -> str:
    console = Console(record=True, width=400)
    render(evaluation, console)
    return console.export_text()


def _intent_evaluation() -> IntentEvaluation:
    true = ["a", "b", "oos", "a", "b", "oos"]
    routes = {"a", "b"}
    figures = (
        ("routebook", -1.0, cold_tests(CALIBRATED), ["a", None, None, "a", "b", None]),
        ("kNN vote (k=10)", 0.37, {"top_similarity": 0.37}, ["a", "b", None, "a", "a", "b"]),
        ("linear head", -math.inf, {}, ["a", "b", "a", "a", "b", "b"]),
    )
    return IntentEvaluation(
        n_index=8,
        n_test=len(true),
        n_labels=2,
        k=10,
        params=CALIBRATED,
        oos_recall_goal=0.8,
        routers=tuple(
            intent_figures(name, t, true, pred, 20, 0, index_labels=routes, tests=tests)
            for name, t, tests, pred in figures
        ),
    )


def test_the_intent_report_shows_the_support_test_routebook_applies() -> None:
    """It showed "cold-start threshold -1" (never cold) while 41% of the queries went cold on
    the support test."""
    evaluation = _intent_evaluation()
    shown = _shown(evaluation)
    assert "threshold -1" not in shown
    assert "cold when: routebook support < 6.357; kNN vote (k=10) top similarity < 0.37; " in shown
    assert "linear head never" in shown
    data = to_json(evaluation)
    routebook, knn, linear = data["routers"]
    # `threshold` keeps its meaning (the top-similarity threshold); `cold_tests` is added.
    assert routebook["threshold"] == -1.0 and routebook["cold_tests"] == {"support": 6.357}
    assert knn["cold_tests"] == {"top_similarity": 0.37}
    assert linear["threshold"] is None and linear["cold_tests"] == {}
    assert data["params"]["min_support"] == 6.357


def test_the_intent_report_says_how_the_baselines_thresholds_were_set() -> None:
    shown = _shown(_intent_evaluation())
    assert "held-out" not in shown
    assert (
        "the baselines' thresholds are set on the index file's oos rows, scored against the "
        "whole in-scope index, for OOS recall 0.80" in shown
    )
