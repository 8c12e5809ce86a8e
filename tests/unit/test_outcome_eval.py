"""evaluate_router on data where the share-of-strong-calls axis does not exist: figures that
need it are undefined (None or NaN), never a crash, and the rest are still reported."""

from __future__ import annotations

import math

import numpy as np
import pytest

from routebook.jobs import sweep
from routebook.jobs.calibrate import cheapest_reaching
from routebook.jobs.outcome_eval import Priced, Scored, as_keys, evaluate_router, reference

QUALITY = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
KEYS = np.array([[0.9, 0.95], [0.3, 0.9], [0.5, 0.6], [0.85, 0.2]])


def test_equal_prices_leave_apgr_and_cpt_undefined_and_the_rest_reported() -> None:
    scored = Scored(name="r", estimates=KEYS, cold=np.zeros(4, dtype=bool))
    figures = evaluate_router(scored, Priced(QUALITY, np.ones((4, 2))), ("a", "b"), 0.8, 50, 1)
    assert math.isnan(figures.apgr.estimate)
    assert figures.cpt50 is None and figures.cpt80 is None
    # Target 0.8: queries 0 and 3 go to a (0.9, 0.85), 1 goes to b (0.9), 2 to b (the
    # strongest, none reaches 0.8): qualities 0, 1, 1, 1.
    assert figures.operating.quality == 0.75
    assert figures.operating.answer_share == {"a": 0.5, "b": 0.5}
    assert figures.operating.cost_per_query == 1.0


def test_one_model_and_free_models_do_not_crash() -> None:
    one = Scored(name="r", estimates=KEYS[:, :1], cold=np.zeros(4, dtype=bool))
    alone = evaluate_router(one, Priced(QUALITY[:, :1], np.ones((4, 1))), ("a",), 0.8, 50, 1)
    assert math.isnan(alone.apgr.estimate) and alone.operating.quality == 0.5
    scored = Scored(name="r", estimates=KEYS, cold=np.zeros(4, dtype=bool))
    free = evaluate_router(scored, Priced(QUALITY, np.zeros((4, 2))), ("a", "b"), 0.8, 50, 1)
    assert math.isnan(free.apgr.estimate) and free.saving95 is None
    assert reference(QUALITY, np.zeros((4, 2)), ("a", "b")).random_saving95 is None


def test_the_calibrated_target_gives_exactly_the_point_it_was_chosen_for() -> None:
    """calibrate writes a quality target; decide at that target must land on the curve point
    whose quality and cost calibrate reported, on random data, both target modes."""
    rng = np.random.default_rng(7)
    checked = 0
    for case in range(300):
        n, m = 6, 2 + case % 2
        raw = np.round(rng.uniform(0, 1, (n, m)), 1)  # rounded: many tied keys
        mode = "relative" if case % 3 else "absolute"
        keys = as_keys(raw, mode)
        quality = rng.integers(0, 2, (n, m)).astype(np.float64)
        cost = np.broadcast_to(np.linspace(0.1, 1.0, m), (n, m)).copy()
        cold = rng.uniform(size=n) < 0.2
        policy = sweep.policy(keys, cold, quality, cost)
        curve = sweep.curve(sweep.events(policy))
        for need in np.unique(curve.quality):
            found = cheapest_reaching(curve, float(need))
            if found is None:
                # Only the all-strongest point reaches it, and no target <= 1 selects it.
                assert curve.targets[1] >= 1.0 and np.all(curve.quality[1:] < need - 1e-12)
                continue
            i, target = found
            assert 0 < target <= 1.0
            chosen = sweep.choices_at(policy, target)
            rows = np.arange(n)
            assert quality[rows, chosen].mean() == pytest.approx(curve.quality[i])
            assert policy.cost[rows, chosen].mean() == pytest.approx(curve.cost[i])
            checked += 1
    assert checked > 300


def test_a_goal_only_the_strongest_model_reaches_is_unreachable_when_a_key_is_one() -> None:
    # The helper's example: relative keys [[1, 0.67], [0.33, 1]]; quality 1 needs both
    # queries on the strongest model (point 0), which no target <= 1 selects.
    keys = as_keys(np.array([[0.9, 0.6], [0.3, 0.9]]), "relative")
    quality = np.array([[0.0, 1.0], [0.0, 1.0]])
    policy = sweep.policy(keys, np.zeros(2, dtype=bool), quality, np.array([[0.1, 1.0]] * 2))
    curve = sweep.curve(sweep.events(policy))
    assert curve.quality[0] == 1.0 and cheapest_reaching(curve, 1.0) is None


def test_the_reference_leaves_apgr_and_cpt_undefined_where_the_routers_are() -> None:
    # Equal prices: the catalog orders the pair by name, so its "strongest" may be the weaker
    # model (mean 0.5 against 0.75 here). The oracle's APGR against it read -0.86 on GSM8K,
    # and the random router's 0.5 / 50% / 80% are figures on an axis that does not exist.
    inverted = QUALITY[:, ::-1]
    equal = reference(inverted, np.ones((4, 2)), ("b", "a"))
    one = reference(QUALITY[:, :1], np.ones((4, 1)), ("a",))
    for ref in (equal, one):
        assert ref.oracle_apgr is None and ref.random_apgr is None
        assert ref.random_cpt50 is None and ref.random_cpt80 is None
        assert ref.oracle_curve == ()
    assert equal.apgr_undefined is not None and "costs no more" in equal.apgr_undefined
    assert one.apgr_undefined is not None and one.apgr_undefined.startswith("one model")
    assert equal.oracle_quality == 1.0 and equal.random_saving95 == 0.0  # dollars still exist
    tied = reference(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 2.0]] * 2), ("a", "b"))
    assert tied.random_apgr is None and tied.random_cpt50 is None
    assert tied.apgr_undefined is not None and "same mean quality" in tied.apgr_undefined
    priced = reference(QUALITY, np.array([[1.0, 2.0]] * 4), ("a", "b"))
    assert priced.apgr_undefined is None
    assert priced.random_apgr == pytest.approx(0.5)
    assert (priced.random_cpt50, priced.random_cpt80) == (0.5, 0.8)
    assert priced.oracle_apgr is not None and priced.oracle_apgr > 1.0
