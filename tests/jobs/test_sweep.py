"""The exact target sweep: hand-worked curves, and agreement with brute force at every target."""

from __future__ import annotations

import numpy as np
import pytest

from routebook.jobs import sweep

# Two models (weak, strong), three queries, call costs weak 1, strong 10.
#   q0 warm, weak estimate 0.9, outcomes weak 1 strong 1
#   q1 warm, weak estimate 0.4, outcomes weak 0 strong 1
#   q2 cold (cascade): outcomes weak 1 strong 0 -> accepted at weak for any target <= 1
ESTIMATES = np.array([[0.9, 0.95], [0.4, 0.7], [0.2, 0.8]])
COLD = np.array([False, False, True])
QUALITY = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
COST = np.array([[1.0, 10.0]] * 3)


def test_hand_worked_curve() -> None:
    p = sweep.policy(ESTIMATES, COLD, QUALITY, COST)
    # Cold query keys come from its outcomes (running max: 1, inf); costs are cumulative.
    assert p.keys[2].tolist() == [1.0, np.inf]
    assert p.cost[2].tolist() == [1.0, 11.0]
    c = sweep.curve(sweep.events(p))
    # Targets from high to low: inf (q0, q1 strong; q2 escalates), then 1.0 (q2 accepts weak),
    # 0.9 (q0 weak), 0.4 (q1 weak).
    assert c.targets.tolist() == [np.inf, 1.0, 0.9, 0.4]
    assert c.quality.tolist() == pytest.approx([2 / 3, 1.0, 1.0, 2 / 3])
    assert c.cost.tolist() == pytest.approx([31 / 3, 21 / 3, 12 / 3, 3 / 3])


def test_weights_are_bootstrap_multiplicities() -> None:
    ev = sweep.events(sweep.policy(ESTIMATES, COLD, QUALITY, COST))
    weighted = sweep.curve(ev, np.array([2.0, 0.0, 1.0]))
    rows = [0, 0, 2]
    plain = sweep.curve(
        sweep.events(sweep.policy(ESTIMATES[rows], COLD[rows], QUALITY[rows], COST[rows]))
    )
    assert weighted.quality[0] == pytest.approx(plain.quality[0])
    for target in (1.0, 0.9):
        assert weighted.quality[weighted.targets == target] == pytest.approx(
            plain.quality[plain.targets == target]
        )


def test_sweep_equals_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(3)
    n, m = 300, 3
    estimates = np.round(rng.random((n, m)), 2)  # many ties on purpose
    cold = rng.random(n) < 0.3
    quality = (rng.random((n, m)) < 0.6).astype(float)
    cost = np.sort(rng.random((n, m)) * 5, axis=1)
    p = sweep.policy(estimates, cold, quality, cost)
    c = sweep.curve(sweep.events(p))
    assert np.all(np.diff(c.cost) <= 1e-12)  # lowering the target never costs more
    for target, q, cst in zip(c.targets[1:], c.quality[1:], c.cost[1:], strict=True):
        final = np.empty(n, dtype=int)
        paid = np.empty(n)
        for i in range(n):
            if cold[i]:  # cascade: first answer whose quality reaches the target
                j = next((j for j in range(m) if quality[i, j] >= target), m - 1)
                paid[i] = cost[i, : j + 1].sum()
            else:  # decide: cheapest model whose estimate reaches the target
                j = next((j for j in range(m) if estimates[i, j] >= target), m - 1)
                paid[i] = cost[i, j]
            final[i] = j
        assert q == pytest.approx(quality[np.arange(n), final].mean())
        assert cst == pytest.approx(paid.mean())
        assert (sweep.choices_at(p, target) == final).all()


def brute_force(
    estimates: np.ndarray,
    cold: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    target: float,
    bar: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's final model and what it paid, query by query in its own cost order: a
    cascade accepts the first answer reaching `bar`, a warm query takes the cheapest model
    whose estimate reaches `target`, else the strongest."""
    n, m = quality.shape
    final = np.empty(n, dtype=int)
    paid = np.empty(n)
    for i in range(n):
        mine = sorted(range(m), key=lambda j: (cost[i, j], j))
        if cold[i]:
            tried = next((k for k, j in enumerate(mine) if quality[i, j] >= bar), m - 1)
            final[i] = mine[tried]
            paid[i] = cost[i, mine[: tried + 1]].sum()
        else:
            final[i] = next((j for j in mine if estimates[i, j] >= target), m - 1)
            paid[i] = cost[i, final[i]]
    return final, paid


def test_sweep_follows_each_querys_own_cost_order() -> None:
    # Costs per query in no common order (a long prompt makes a model with cheap input the
    # cheapest), so each query tries its models in its own order, and a semantic query that no
    # model serves still falls back to the strongest (the last catalog model), wherever it
    # stands in that order.
    rng = np.random.default_rng(5)
    n, m = 300, 3
    estimates = np.round(rng.random((n, m)), 2)
    cold = rng.random(n) < 0.3
    quality = (rng.random((n, m)) < 0.6).astype(float)
    cost = rng.random((n, m)) * 5
    order = sweep.cost_order(cost)
    assert not (order == np.arange(m)).all()
    p = sweep.policy(estimates, cold, quality, cost, order)
    c = sweep.curve(sweep.events(p))
    checked = 0
    for target, q, cst in zip(c.targets[1:], c.quality[1:], c.cost[1:], strict=True):
        final, paid = brute_force(estimates, cold, quality, cost, target, bar=target)
        assert q == pytest.approx(quality[np.arange(n), final].mean())
        assert cst == pytest.approx(paid.mean())
        assert (sweep.choices_at(p, target) == final).all()
        checked += 1
    assert checked > 50
    # A semantic query whose strongest model is not its dearest: above every estimate it
    # answers with the strongest model.
    warm_inverted = np.flatnonzero(~cold & (order[:, -1] != m - 1))
    assert warm_inverted.size > 0
    assert (sweep.choices_at(p, 2.0)[warm_inverted] == m - 1).all()


def test_a_fixed_cascade_bar_answers_cold_queries_alike_at_every_target() -> None:
    # The hand-worked data with the cascades' bar fixed at 0.5: q2 accepts weak (quality 1)
    # whatever the target, paying 1, so the start of the curve (every warm query strong)
    # already has q2 on weak, and no target moves it.
    p = sweep.policy(ESTIMATES, COLD, QUALITY, COST, cascade_bar=0.5)
    c = sweep.curve(sweep.events(p))
    assert c.targets.tolist() == [np.inf, 0.9, 0.4]
    assert c.quality.tolist() == pytest.approx([1.0, 1.0, 2 / 3])
    assert c.cost.tolist() == pytest.approx([21 / 3, 12 / 3, 3 / 3])
    # A bar no answer of q2 reaches: it runs through both models and ends on the last.
    strict = sweep.policy(ESTIMATES, COLD, QUALITY * 0.4, COST, cascade_bar=0.5)
    assert sweep.choices_at(strict, 0.1)[2] == 1
    assert strict.keys[2].tolist() == [-np.inf, np.inf]
    assert strict.cost[2, 1] == 11.0


def test_a_fixed_cascade_bar_equals_brute_force_in_each_querys_order() -> None:
    rng = np.random.default_rng(8)
    n, m, bar = 300, 3, 0.5
    estimates = np.round(rng.random((n, m)), 2)
    cold = rng.random(n) < 0.3
    quality = np.round(rng.random((n, m)), 1)  # graded answers: the bar matters
    cost = rng.random((n, m)) * 5
    order = sweep.cost_order(cost)
    p = sweep.policy(estimates, cold, quality, cost, order, cascade_bar=bar)
    c = sweep.curve(sweep.events(p))
    for target, q, cst in zip(c.targets, c.quality, c.cost, strict=True):
        final, paid = brute_force(estimates, cold, quality, cost, target, bar=bar)
        assert q == pytest.approx(quality[np.arange(n), final].mean())
        assert cst == pytest.approx(paid.mean())
        if np.isfinite(target):
            assert (sweep.choices_at(p, target) == final).all()
