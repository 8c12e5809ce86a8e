"""What `routebook eval` prints and writes: each router's cold-start test as it is applied,
how the baselines' thresholds were set, model names that stay apart, and reference figures
only where they are defined. Hand-made evaluations, rendered to a recording console."""

from __future__ import annotations

import itertools
import math

import numpy as np
from rich.console import Console

from routebook.decide import DecisionParams
from routebook.jobs.intent_eval import IntentEvaluation, cold_tests, intent_figures
from routebook.jobs.outcome_eval import (
    OutcomeEvaluation,
    Priced,
    Scored,
    evaluate_router,
    reference,
)
from routebook.jobs.replay import HeadSummary
from routebook.jobs.report import curve_label, render, short_names, to_json

# What `calibrate` writes for CLINC150 (docs/evaluation.md): the support test, no similarity test.
CALIBRATED = DecisionParams(cold_start_threshold=-1.0, min_support=6.357)


def _shown(evaluation: IntentEvaluation | OutcomeEvaluation) -> str:
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
        head=HeadSummary.of(None, CALIBRATED),
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


def test_the_reports_say_which_head_routebook_decided_with() -> None:
    """Nothing said whether a head was trained, nor what it read: a vector and a layers config
    (or an index too small for any head) could not be told apart in the output."""
    intent = _intent_evaluation()
    assert "routebook's head: none: too few labelled examples (a model needs 100, routes 20" in (
        _shown(intent)
    )
    assert to_json(intent)["head"]["trained_on"] == 0
    outcome = _outcome_evaluation(QUALITY[:, :2], np.array([[1.0, 2.0]] * 4), SHIPPED[:2])
    shown = _shown(outcome)
    assert (
        "routebook's head: trained on 10 examples: success of 2 models, reading every layer's "
        "pools" in " ".join(shown.split())
    )
    assert to_json(outcome)["head"]["features"] == "layers"


def test_the_intent_report_says_how_the_baselines_thresholds_were_set() -> None:
    shown = _shown(_intent_evaluation())
    assert "held-out" not in shown
    assert (
        "the baselines' thresholds are set on the index file's oos rows, scored against the "
        "whole in-scope index, for OOS recall 0.80" in shown
    )


# --------------------------------------------------------------------------------------------
# Outcome data
# --------------------------------------------------------------------------------------------

SHIPPED = ("gpt-4.1-nano", "gpt-4.1-mini", "claude-sonnet-4")  # routes/default.yaml's catalog
QUALITY = np.array([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
KEYS = np.array([[0.5, 0.9, 0.95], [0.9, 0.9, 0.9], [0.2, 0.5, 0.9], [0.85, 0.5, 0.2]])


def _outcome_evaluation(
    quality: np.ndarray, cost: np.ndarray, models: tuple[str, ...]
) -> OutcomeEvaluation:
    m = len(models)
    scored = Scored("routebook", KEYS[:, :m], np.zeros(4, dtype=bool))
    figures = evaluate_router(scored, Priced(quality, cost), models, 0.8, 20, 0)
    return OutcomeEvaluation(
        n_index=10,
        n_test=4,
        k=10,
        params=DecisionParams(),
        reference=reference(quality, cost, models),
        routers=(figures,),
        head=HeadSummary("layers", 10, models, 0, ""),
    )


def test_short_names_stay_apart() -> None:
    assert short_names(SHIPPED) == {
        "gpt-4.1-nano": "gpt-4.1-nano",
        "gpt-4.1-mini": "gpt-4.1-mini",
        "claude-sonnet-4": "claude",
    }
    routellm = ("mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview")
    assert short_names(routellm) == {routellm[0]: "mixtral", routellm[1]: "gpt"}
    # One name is the other's prefix: the shorter keeps its whole name.
    assert short_names(("gpt-4", "gpt-4-turbo")) == {"gpt-4": "gpt-4", "gpt-4-turbo": "gpt-4-turbo"}
    parts = ["a", "b", "a-b", ""]
    names = sorted({"-".join(p) for n in (1, 2, 3) for p in itertools.product(parts, repeat=n)})
    for group in itertools.combinations(names[:12], 4):
        short = short_names(group)
        assert len(set(short.values())) == len(group)
        assert all(m.startswith(s) for m, s in short.items())


def test_the_calls_column_tells_the_shipped_models_apart() -> None:
    """It cut each name at its first "-": `gpt 25.0%, gpt 50.0%, claude 25.0%`."""
    cost = np.broadcast_to(np.array([1.0, 4.0, 30.0]), (4, 3)).copy()
    evaluation = _outcome_evaluation(QUALITY, cost, SHIPPED)
    shares = evaluation.routers[0].operating.call_share
    assert sorted(shares.values()) != [0.0, 0.0, 1.0]  # more than one model is called
    cell = ", ".join(
        f"{name} {100 * shares[m]:.1f}%"
        for m, name in zip(SHIPPED, ("gpt-4.1-nano", "gpt-4.1-mini", "claude"), strict=True)
    )
    assert cell in _shown(evaluation)


def test_undefined_reference_figures_are_not_printed_and_the_reason_is() -> None:
    """With equal prices the random row read 0.500 / 50.0% / 80.0% and the oracle an APGR of
    -0.86 (its "strongest" model, by name, was the weaker one)."""
    names = ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    shown = _shown(_outcome_evaluation(QUALITY[:, 1:], np.ones((4, 2)), names))
    assert "APGR and CPT are not defined here: the catalog's strongest (last) model" in shown
    assert "APGR" not in shown.split("oracle (best model per query)")[1].split("\n")[0]
    random_row = next(line for line in shown.splitlines() if "random" in line)
    assert "0.500" not in random_row and "50.0%" not in random_row and "80.0%" not in random_row
    tied = _shown(_outcome_evaluation(QUALITY[:, :2], np.array([[1.0, 2.0]] * 4), ("x", "y")))
    assert "not defined here: the cheapest and the strongest model have the same mean" in tied
    # Resamples with a gap give APGR an interval, but it is not shown around no estimate.
    routebook_row = next(line for line in tied.splitlines() if "│ routebook" in line)
    assert routebook_row.split("│")[2].strip() == "—"
    alone = _shown(_outcome_evaluation(QUALITY[:, :1], np.ones((4, 1)), ("gpt-4.1-nano",)))
    assert "APGR and CPT are not defined here: one model" in alone
    # The plot's legend said "APGR nan".
    assert curve_label("routebook", math.nan) == "routebook (APGR not defined)"
    assert curve_label("routebook", 0.7016) == "routebook (APGR 0.702)"


def test_a_strongest_model_of_lower_quality_is_pointed_out() -> None:
    # Priced in order, but the dearer model does worse on average (0.25 against 0.75).
    quality = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    shown = _shown(_outcome_evaluation(quality, np.array([[1.0, 2.0]] * 4), ("x", "y")))
    assert "note: the strongest model, y, has a lower mean quality than the cheapest, x" in shown
