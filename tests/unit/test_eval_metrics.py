"""Tests for routebook.jobs.metrics: hand-worked examples plus checks on real RouteLLM rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score  # type: ignore[import-untyped]

from routebook.jobs.metrics import (
    DEFAULT_SHARES,
    CostPoint,
    CurvePoint,
    apgr,
    bootstrap_ci,
    cost_saving_at_quality,
    cpt,
    intent_report,
    min_cost_at_quality,
    oracle,
    oracle_curve,
    oracle_quality_at_share,
    pgr,
    quality_at_cost,
    random_router_curve,
    random_router_quality,
    routed_cost_point,
    routed_point,
    routed_quality,
    strong_share,
    summarize_curve,
    threshold_sweep,
)

DATA = Path(os.environ.get("ROUTEBOOK_DATASETS", "/work/shared/datasets"))
MMLU_TEST = DATA / "routellm" / "mmlu.dev_test.jsonl"
STRONG = "gpt-4-1106-preview"
WEAK = "mixtral-8x7b-instruct-v0.1"

needs_data = pytest.mark.skipif(not MMLU_TEST.exists(), reason=f"{MMLU_TEST} not present")


def _mmlu_columns(limit: int | None = None) -> tuple[list[float], list[float]]:
    """Strong and weak quality straight from the JSONL, independent of the loader under test."""
    strong: list[float] = []
    weak: list[float] = []
    with MMLU_TEST.open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if limit is not None and i >= limit:
                break
            outcomes = json.loads(line)["outcomes"]
            strong.append(float(outcomes[STRONG]))
            weak.append(float(outcomes[WEAK]))
    return strong, weak


# --------------------------------------------------------------------------------------------
# A 4-query example worked by hand
#
#   query          0    1    2    3
#   strong         1    1    1    0     mean 3/4 = 0.75
#   weak           0    1    0    0     mean 1/4 = 0.25    gap = 0.5
#   router score  0.9  0.1  0.6  0.3
#
# Sending the highest-scored queries strong, one at a time:
#   strong set     share  per-query quality   mean   PGR = (mean - 0.25) / 0.5
#   {}             0.00   0 1 0 0             0.25   0.0
#   {0}            0.25   1 1 0 0             0.50   0.5
#   {0,2}          0.50   1 1 1 0             0.75   1.0
#   {0,2,3}        0.75   1 1 1 0             0.75   1.0
#   {0,1,2,3}      1.00   1 1 1 0             0.75   1.0
#
# APGR, trapezoids of width 0.25:
#   0.25*(0.0+0.5)/2 + 0.25*(0.5+1.0)/2 + 0.25*(1+1)/2 + 0.25*(1+1)/2
#   = 0.0625 + 0.1875 + 0.25 + 0.25 = 0.75
# CPT(50%): PGR is exactly 0.5 at share 0.25                          -> 0.25
# CPT(80%): between (0.25, 0.5) and (0.50, 1.0): 0.25 + (0.8-0.5)/(1.0-0.5) * 0.25
#           = 0.25 + 0.6 * 0.25                                      -> 0.40
# --------------------------------------------------------------------------------------------

Q_STRONG = np.array([1.0, 1.0, 1.0, 0.0])
Q_WEAK = np.array([0.0, 1.0, 0.0, 0.0])
SCORES = np.array([0.9, 0.1, 0.6, 0.3])
HAND_POINTS = [CurvePoint(0.25, 0.5), CurvePoint(0.5, 0.75), CurvePoint(0.75, 0.75)]


def test_pgr_is_zero_at_weak_one_at_strong_and_linear_between() -> None:
    assert pgr(0.25, 0.25, 0.75) == 0.0
    assert pgr(0.75, 0.25, 0.75) == 1.0
    assert pgr(0.5, 0.25, 0.75) == 0.5
    # MT-Bench style: raw judge scores and scores / 10 give the same PGR.
    assert pgr(8.0, 7.5, 9.5) == pytest.approx(pgr(0.80, 0.75, 0.95))


def test_pgr_rejects_equal_model_means() -> None:
    with pytest.raises(ValueError, match="distinct"):
        pgr(0.5, 0.7, 0.7)


def test_routed_point_matches_hand_table() -> None:
    mask = np.array([True, False, True, False])  # strong set {0, 2}
    assert strong_share(mask) == 0.5
    assert routed_quality(Q_STRONG, Q_WEAK, mask) == 0.75
    assert routed_point(Q_STRONG, Q_WEAK, mask) == CurvePoint(0.5, 0.75)


def test_routed_quality_refuses_integer_masks() -> None:
    with pytest.raises(ValueError, match="boolean"):
        routed_quality(Q_STRONG, Q_WEAK, np.array([1, 0, 1, 0]))


def test_threshold_sweep_reproduces_hand_table() -> None:
    # Quantile edges of the scores with n_bins=4 (linear): 0.1, 0.25, 0.45, 0.675, 0.9;
    # `>=` for all but the last edge, `>` for the last, as in RouteLLM's benchmark sweep.
    points = threshold_sweep(SCORES, Q_STRONG, Q_WEAK, n_bins=4)
    assert [(p.strong_share, p.quality) for p in points] == [
        (1.0, 0.75),
        (0.75, 0.75),
        (0.5, 0.75),
        (0.25, 0.5),
        (0.0, 0.25),
    ]
    assert apgr(points, 0.25, 0.75) == pytest.approx(0.75)


def test_apgr_hand_example() -> None:
    assert apgr(HAND_POINTS, 0.25, 0.75) == pytest.approx(0.75)


def test_apgr_does_not_depend_on_point_order_or_explicit_endpoints() -> None:
    shuffled = [HAND_POINTS[2], HAND_POINTS[0], HAND_POINTS[1]]
    with_ends = [CurvePoint(1.0, 0.75), *HAND_POINTS, CurvePoint(0.0, 0.25)]
    assert apgr(shuffled, 0.25, 0.75) == pytest.approx(0.75)
    assert apgr(with_ends, 0.25, 0.75) == pytest.approx(0.75)


def test_apgr_of_empty_sweep_is_the_straight_line() -> None:
    # Only the endpoints (0, weak) and (1, strong): PGR = share, area 0.5.
    assert apgr([], 0.25, 0.75) == pytest.approx(0.5)


def test_cpt_hand_example() -> None:
    assert cpt(HAND_POINTS, 0.25, 0.75, 0.5) == pytest.approx(0.25)
    assert cpt(HAND_POINTS, 0.25, 0.75, 0.8) == pytest.approx(0.40)
    summary = summarize_curve(HAND_POINTS, 0.25, 0.75)
    assert summary.apgr == pytest.approx(0.75)
    assert summary.cpt50 == pytest.approx(0.25)
    assert summary.cpt80 == pytest.approx(0.40)


def test_cpt_takes_first_crossing_on_non_monotone_curve() -> None:
    # weak = 0, strong = 1, so quality == PGR. Curve: (0, 0), (0.2, 0.9), (0.4, 0.3),
    # (0.6, 1.0), (1, 1). PGR 0.8 is first reached inside [0, 0.2]: 0.2 * 0.8 / 0.9.
    points = [CurvePoint(0.2, 0.9), CurvePoint(0.4, 0.3), CurvePoint(0.6, 1.0)]
    assert cpt(points, 0.0, 1.0, 0.8) == pytest.approx(0.2 * 0.8 / 0.9)
    # 0.95 is not reached before 0.4; between (0.4, 0.3) and (0.6, 1.0): 0.4 + 0.65/0.7 * 0.2.
    assert cpt(points, 0.0, 1.0, 0.95) == pytest.approx(0.4 + 0.65 / 0.7 * 0.2)


def test_cpt_above_one_is_none_unless_reached() -> None:
    assert cpt(HAND_POINTS, 0.25, 0.75, 1.2) is None
    # Oracle-like curve above the strong model: PGR 1.2 at share 0.5 reached halfway to it.
    assert cpt([CurvePoint(0.5, 0.85)], 0.25, 0.75, 1.1) == pytest.approx(0.5 * 1.1 / 1.2)


def test_curve_rejects_negative_or_undefined_shares() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="at least 0"):
            apgr([CurvePoint(bad, 0.5)], 0.25, 0.75)


def test_a_cascade_spending_past_the_strong_model_is_cut_at_share_one_not_clipped() -> None:
    # weak 0, strong 1. In sweep order: (0.5, 0.5), then (1.5, 1.0): a cascade whose cold
    # queries paid the cheap attempt and then the strong model. Cut at share 1, halfway
    # between the two: quality 0.75. Area: 0.5 * (0 + 0.5) / 2 + 0.5 * (0.5 + 0.75) / 2
    # = 0.125 + 0.3125 = 0.4375. Clipping (1.5 → 1.0) would have scored the extra spend as
    # free: 0.125 + 0.5 * (0.5 + 1.0) / 2 = 0.5.
    walk = [CurvePoint(0.5, 0.5), CurvePoint(1.5, 1.0)]
    assert apgr(walk, 0.0, 1.0) == pytest.approx(0.4375)
    # PGR 0.8 is not reached before share 1 (0.75 there): the strong model's own endpoint.
    assert cpt(walk, 0.0, 1.0, 0.8) == pytest.approx(1.0)
    assert cpt(walk, 0.0, 1.0, 0.6) == pytest.approx(0.5 + 0.1 / 0.25 * 0.5)


# --------------------------------------------------------------------------------------------
# Random and oracle routers
# --------------------------------------------------------------------------------------------


def test_random_router_quality_is_the_expected_mix() -> None:
    # 0.3 * 0.75 + 0.7 * 0.25 = 0.225 + 0.175 = 0.4
    assert random_router_quality(Q_STRONG, Q_WEAK, 0.3) == pytest.approx(0.4)


@needs_data
def test_random_router_apgr_is_half_on_mmlu_slice() -> None:
    strong, weak = _mmlu_columns(limit=200)
    strong_mean, weak_mean = sum(strong) / 200, sum(weak) / 200
    assert (strong_mean, weak_mean) == pytest.approx((0.835, 0.73))  # 167/200, 146/200
    curve = random_router_curve(strong, weak)
    assert [p.strong_share for p in curve] == list(DEFAULT_SHARES)
    summary = summarize_curve(curve, weak_mean, strong_mean)
    assert summary.apgr == pytest.approx(0.5, abs=1e-12)
    assert summary.cpt50 == pytest.approx(0.5, abs=1e-12)
    assert summary.cpt80 == pytest.approx(0.8, abs=1e-12)


def test_oracle_on_graded_scores_by_hand() -> None:
    # strong 0.9 0.5 0.8 0.6 / weak 0.5 0.7 0.6 0.6 -> gains 0.4 -0.2 0.2 0.0
    # best of both 0.9 0.7 0.8 0.6 -> mean 0.75; strong strictly better on 2 of 4 -> share 0.5
    strong = [0.9, 0.5, 0.8, 0.6]
    weak = [0.5, 0.7, 0.6, 0.6]
    result = oracle(strong, weak)
    assert result.quality == pytest.approx(0.75)
    assert result.strong_share == 0.5
    # weak mean 0.6; budget = share * 4 calls spent on gains 0.4 then 0.2:
    assert oracle_quality_at_share(strong, weak, 0.0) == pytest.approx(0.6)
    assert oracle_quality_at_share(strong, weak, 0.25) == pytest.approx(0.6 + 0.4 / 4)  # 0.7
    assert oracle_quality_at_share(strong, weak, 0.375) == pytest.approx(0.6 + 0.5 / 4)  # 0.725
    assert oracle_quality_at_share(strong, weak, 0.5) == pytest.approx(0.75)
    assert oracle_quality_at_share(strong, weak, 1.0) == pytest.approx(0.75)


@needs_data
def test_oracle_on_mmlu_slice_matches_independent_count() -> None:
    strong, weak = _mmlu_columns(limit=200)
    n = len(strong)
    best = sum(max(s, w) for s, w in zip(strong, weak, strict=True)) / n
    only_strong = sum(s == 1 and w == 0 for s, w in zip(strong, weak, strict=True))
    weak_correct = sum(weak)
    result = oracle(strong, weak)
    assert result.quality == pytest.approx(best)
    assert result.strong_share == pytest.approx(only_strong / n)
    # RouteLLM's get_optimal_accuracy: (weak correct + min(share * n, only-strong)) / n.
    for point in oracle_curve(strong, weak):
        expected = (weak_correct + min(point.strong_share * n, only_strong)) / n
        assert point.quality == pytest.approx(expected)
    assert apgr(oracle_curve(strong, weak), sum(weak) / n, sum(strong) / n) > 0.5


@needs_data
def test_oracle_on_full_mmlu_dev_test_matches_readme() -> None:
    strong, weak = _mmlu_columns()
    assert len(strong) == 2797
    result = oracle(strong, weak)
    # README table: GPT-4 0.8012, Mixtral 0.6661, best-of-both 0.8513 (rounded to 4 places).
    assert float(np.mean(strong)) == pytest.approx(0.8012, abs=5e-5)
    assert float(np.mean(weak)) == pytest.approx(0.6661, abs=5e-5)
    assert result.quality == pytest.approx(0.8513, abs=5e-5)
    assert oracle_quality_at_share(strong, weak, result.strong_share) == pytest.approx(
        result.quality
    )


# --------------------------------------------------------------------------------------------
# Multi-model: quality against dollars per query
#
# Curve (mean $/query, quality): (0.01, 0.50) (0.10, 0.70) (0.40, 0.85) (1.00, 0.90);
# the strongest model alone costs $1.00 and scores 0.90.
#   quality at $0.25: between 0.10 and 0.40, t = 0.15/0.30 = 0.5 -> 0.70 + 0.5*0.15 = 0.775
#   95% of 0.90 = 0.855: between (0.40, 0.85) and (1.00, 0.90), t = 0.005/0.05 = 0.1
#     -> cost 0.40 + 0.1*0.60 = 0.46 -> saving 1 - 0.46/1.00 = 0.54
# --------------------------------------------------------------------------------------------

COST_CURVE = [
    CostPoint(0.40, 0.85),
    CostPoint(0.01, 0.50),
    CostPoint(1.00, 0.90),
    CostPoint(0.10, 0.70),
]


def test_quality_at_cost_interpolates_and_clamps() -> None:
    assert quality_at_cost(COST_CURVE, 0.25) == pytest.approx(0.775)
    assert quality_at_cost(COST_CURVE, 0.10) == pytest.approx(0.70)
    assert quality_at_cost(COST_CURVE, 0.005) is None  # cannot afford any setting
    assert quality_at_cost(COST_CURVE, 2.0) == pytest.approx(0.90)


def test_cost_saving_at_quality_hand_example() -> None:
    assert min_cost_at_quality(COST_CURVE, 0.855) == pytest.approx(0.46)
    assert cost_saving_at_quality(COST_CURVE, 1.0, 0.9) == pytest.approx(0.54)
    assert cost_saving_at_quality(COST_CURVE, 1.0, 0.9, fraction=1.0) == pytest.approx(0.0)
    assert cost_saving_at_quality(COST_CURVE, 1.0, 0.9, fraction=1.1) is None


def test_routed_cost_point_by_hand() -> None:
    # models: strong ($1.00), mid ($0.10), cheap ($0.01); choice 0, 1, 2, 2
    quality = [[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]]
    choice = np.array([0, 1, 2, 2])
    point = routed_cost_point(quality, [1.0, 0.1, 0.01], choice)
    # quality (1 + 1 + 1 + 0) / 4 = 0.75; cost (1.00 + 0.10 + 0.01 + 0.01) / 4 = 0.28
    assert point.quality == pytest.approx(0.75)
    assert point.mean_cost == pytest.approx(0.28)
    per_query_cost = [[2.0, 0.2, 0.02]] * 4  # twice the price on every query
    assert routed_cost_point(quality, per_query_cost, choice).mean_cost == pytest.approx(0.56)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


@needs_data
def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    strong, _ = _mmlu_columns()
    values = np.array(strong)
    first = bootstrap_ci(np.mean, values, n_resamples=500, seed=7)
    again = bootstrap_ci(np.mean, values, n_resamples=500, seed=7)
    other = bootstrap_ci(np.mean, values, n_resamples=500, seed=8)
    assert first == again
    assert first != other
    assert first.estimate == pytest.approx(0.8012, abs=5e-5)
    assert first.low < first.estimate < first.high
    # Normal approximation: 2 * 1.96 * sqrt(0.8 * 0.2 / 2797) = 0.0297.
    assert 0.024 < first.high - first.low < 0.036


@needs_data
def test_bootstrap_ci_keeps_per_query_pairs_together() -> None:
    strong, weak = _mmlu_columns(limit=200)
    routed = np.array(strong) > np.array(weak)  # the oracle's decisions
    ci = bootstrap_ci(routed_quality, np.array(strong), np.array(weak), routed, seed=1)
    assert ci.estimate == pytest.approx(oracle(strong, weak).quality)
    assert ci.low <= ci.estimate <= ci.high
    # Pairs stay intact: every resample of the oracle is its own best-of-both, never below it.
    worst = bootstrap_ci(
        lambda s, w, r: routed_quality(s, w, r) - float(np.maximum(s, w).mean()),
        np.array(strong),
        np.array(weak),
        routed,
        n_resamples=200,
        seed=1,
    )
    assert (worst.low, worst.high) == (0.0, 0.0)


def test_bootstrap_ci_of_constant_data_is_a_point() -> None:
    ci = bootstrap_ci(np.mean, np.full(10, 0.3), n_resamples=50, seed=0)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.3, 0.3, 0.3))


def test_bootstrap_ci_rejects_misaligned_arrays() -> None:
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(routed_quality, np.ones(3), np.ones(4), np.ones(3, dtype=bool))


# --------------------------------------------------------------------------------------------
# Intent metrics
#
#   row   true   predicted   in-scope right?   detected as oos?
#   0     a      a           yes               no
#   1     a      None        no (cold)         yes (false alarm)
#   2     b      b           yes               no
#   3     b      a           no                no
#   4     c      c           yes               no
#   5     oos    None        -                 yes (hit)
#   6     oos    b           -                 no (miss)
#   7     oos    "oos"       -                 yes (hit)
#
# in-scope accuracy 3/5 = 0.6; in-scope cold rate 1/5 = 0.2
# OOS: detected rows 1, 5, 7 (3); hits 5, 7 (2); true oos 3
#   precision 2/3, recall 2/3, F1 2/3; overall accuracy (3 + 2) / 8 = 0.625
# macro-F1, F1 = 2*TP / (#true + #predicted):
#   a: TP 1 (row 0), true 2, predicted 2 (rows 0, 3) -> 2/4 = 0.5
#   b: TP 1 (row 2), true 2, predicted 2 (rows 2, 6) -> 2/4 = 0.5
#   c: TP 1 (row 4), true 1, predicted 1             -> 2/2 = 1.0
#   mean = 2/3
# --------------------------------------------------------------------------------------------


def test_intent_report_hand_example() -> None:
    true = ["a", "a", "b", "b", "c", "oos", "oos", "oos"]
    pred = ["a", None, "b", "a", "c", None, "b", "oos"]
    report = intent_report(true, pred)
    assert (report.n_in_scope, report.n_oos) == (5, 3)
    assert report.in_scope_accuracy == pytest.approx(0.6)
    assert report.in_scope_cold_rate == pytest.approx(0.2)
    assert report.macro_f1 == pytest.approx(2 / 3)
    assert report.oos_precision == pytest.approx(2 / 3)
    assert report.oos_recall == pytest.approx(2 / 3)
    assert report.oos_f1 == pytest.approx(2 / 3)
    assert report.overall_accuracy == pytest.approx(0.625)


def test_intent_report_without_oos_rows_leaves_oos_figures_undefined() -> None:
    # Banking77 style: no oos rows. 2 of 3 right; label x: F1 2*1/(2+1) = 2/3, y: 2*1/(1+1) = 1.
    report = intent_report(["x", "x", "y"], ["x", None, "y"])
    assert report.n_oos == 0
    assert report.in_scope_accuracy == pytest.approx(2 / 3)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1.0) / 2)
    assert report.oos_recall is None
    assert report.oos_precision == 0.0  # one cold start, and it was wrong
    assert report.oos_f1 is None


def test_intent_report_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        intent_report(["a", "b"], ["a"])


def test_macro_f1_counts_a_label_that_is_only_predicted_as_scikit_learn_does() -> None:
    # "c" is no row's true label, but row 3 is routed to it. Per label, 2*TP / (#true + #pred):
    #   a: 2*2 / (2 + 2) = 1;  b: 2*1 / (2 + 1) = 2/3;  c: 0 / (0 + 1) = 0  -> mean 5/9
    # (over the true labels alone it read (1 + 2/3) / 2 = 5/6, hiding the wrong route to c).
    true = ["a", "a", "b", "b", "oos"]
    pred: list[str | None] = ["a", "a", "b", "c", None]
    report = intent_report(true, pred)
    assert report.macro_f1 == pytest.approx(5 / 9)
    labels = sorted({*true, *(p for p in pred if p)} - {"oos"})
    expected = f1_score(true, [p or "oos" for p in pred], labels=labels, average="macro")
    assert report.macro_f1 == pytest.approx(expected)


def test_macro_f1_matches_scikit_learn_over_the_true_and_predicted_labels() -> None:
    rng = np.random.default_rng(3)
    names = ["a", "b", "c", "d", "e", "oos"]
    for _ in range(200):
        n = int(rng.integers(1, 30))
        true = [names[i] for i in rng.integers(0, 6, n)]
        pred = [None if i == 6 else names[i] for i in rng.integers(0, 7, n)]
        report = intent_report(true, pred)
        as_labels = [p or "oos" for p in pred]
        labels = sorted({*true, *as_labels} - {"oos"})
        if not labels:
            assert report.macro_f1 is None
            continue
        expected = f1_score(true, as_labels, labels=labels, average="macro", zero_division=0.0)
        assert report.macro_f1 == pytest.approx(expected)
