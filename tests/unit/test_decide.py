"""Tests for routebook.decide: the pure decision rule, checked against hand-computed numbers.

The shared catalog has three models, cheapest first: nano (0.10 / 0.40 USD per Mtok),
mini (0.40 / 1.60) and big (3.00 / 15.00). Unless a test says otherwise the parameters are the
defaults: target 0.8, cold-start threshold 0.55, floor 0.3, min support 0.25, prior 0.5 with
strength 0.25, power 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routebook.catalog import Catalog, ModelSpec
from routebook.decide import DecisionParams, DecisionRequest, decide
from routebook.decide.cascade import cascade_plan
from routebook.decide.coldstart import cold_start_reason
from routebook.decide.estimate import (
    estimate_models,
    evidence_for,
    evidence_weight,
    neighbour_weight,
    vote_route,
)
from routebook.domain import (
    CascadeStep,
    Choice,
    ExampleFacts,
    ModelEstimate,
    Neighbour,
    ObservedOutcome,
    ReasonCode,
    Source,
    Strategy,
)

NANO, MINI, BIG = "nano", "mini", "big"


def spec(name: str, input_price: float, output_price: float) -> ModelSpec:
    return ModelSpec(
        name=name,
        provider="test",
        input_usd_per_mtok=input_price,
        output_usd_per_mtok=output_price,
        latency_ms=100.0,
        context_window=128_000,
    )


# Deliberately given out of price order: the catalog sorts them.
CATALOG = Catalog([spec(BIG, 3.0, 15.0), spec(NANO, 0.1, 0.4), spec(MINI, 0.4, 1.6)])

_next_id = iter(range(1, 1_000_000))


def facts(
    best_model: str | None = None,
    route: str | None = None,
    outcomes: Sequence[ObservedOutcome] = (),
    example_id: int | None = None,
) -> ExampleFacts:
    return ExampleFacts(
        example_id=next(_next_id) if example_id is None else example_id,
        text="an example",
        route=route,
        source=Source.REFERENCE,
        best_model=best_model,
        outcomes=tuple(outcomes),
    )


def weighted(f: ExampleFacts, weight: float) -> Neighbour:
    """A neighbour whose weight is already set (for calling estimate_models directly): a
    paraphrase, not the query itself, so its outcomes count once however many were folded in."""
    return Neighbour(facts=f, similarity=0.9, weight=weight)


def estimate(
    neighbours: Sequence[Neighbour],
    catalog: Catalog = CATALOG,
    *,
    prior_success: float = 0.5,
    prior_strength: float = 0.25,
    quality_target: float = 0.8,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> dict[str, ModelEstimate]:
    result = estimate_models(
        neighbours,
        catalog,
        prior_success=prior_success,
        prior_strength=prior_strength,
        quality_target=quality_target,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    assert tuple(e.model for e in result) == catalog.names
    return {e.model: e for e in result}


def request(
    neighbours: Sequence[Neighbour],
    *,
    params: DecisionParams | None = None,
    catalog: Catalog = CATALOG,
    index_size: int | None = None,
    input_tokens: int = 1000,
    output_tokens: int = 500,
) -> DecisionRequest:
    return DecisionRequest(
        neighbours=neighbours,
        catalog=catalog,
        params=params or DecisionParams(),
        index_size=len(neighbours) if index_size is None else index_size,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def near(f: ExampleFacts, similarity: float) -> Neighbour:
    """A neighbour as the index returns it: similarity set, weight left for decide."""
    return Neighbour(facts=f, similarity=similarity)


# Costs for 1000 input and 500 output tokens:
#   nano: (1000 * 0.10 + 500 * 0.40) / 1e6 = (100 + 200) / 1e6   = 0.0003
#   mini: (1000 * 0.40 + 500 * 1.60) / 1e6 = (400 + 800) / 1e6   = 0.0012
#   big:  (1000 * 3.00 + 500 * 15.0) / 1e6 = (3000 + 7500) / 1e6 = 0.0105
COST = {NANO: 0.0003, MINI: 0.0012, BIG: 0.0105}


# --------------------------------------------------------------------------------------------
# neighbour_weight
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", [-1.0, 0.0, 0.1, 0.29999, 0.3])
def test_weight_is_zero_at_or_below_the_floor(similarity: float) -> None:
    assert neighbour_weight(similarity, floor=0.3, power=1.0) == 0.0


def test_weight_is_one_at_identity() -> None:
    assert neighbour_weight(1.0, floor=0.3, power=1.0) == pytest.approx(1.0)
    assert neighbour_weight(1.0, floor=0.3, power=3.0) == pytest.approx(1.0)
    assert neighbour_weight(1.0, floor=-0.5, power=0.5) == pytest.approx(1.0)


def test_weight_is_capped_at_one_above_identity() -> None:
    # Inner products of normalised float32 vectors can come out a hair above 1.
    assert neighbour_weight(1.0001, floor=0.3, power=1.0) == 1.0
    assert neighbour_weight(1.5, floor=0.3, power=2.0) == 1.0


def test_weight_is_linear_between_floor_and_identity_with_power_one() -> None:
    # (0.65 - 0.3) / (1 - 0.3) = 0.35 / 0.7 = 0.5
    assert neighbour_weight(0.65, floor=0.3, power=1.0) == pytest.approx(0.5)
    # (0.3 - 0.0) / (1 - 0.0) = 0.3
    assert neighbour_weight(0.3, floor=0.0, power=1.0) == pytest.approx(0.3)


def test_weight_power_sharpens() -> None:
    # 0.5 ** 2 = 0.25; 0.5 ** 0.5 = 0.70710678...
    assert neighbour_weight(0.65, floor=0.3, power=2.0) == pytest.approx(0.25)
    assert neighbour_weight(0.65, floor=0.3, power=0.5) == pytest.approx(0.5**0.5)
    # (0.6 - 0.3) / 0.7 = 3/7; (3/7) ** 2 = 9/49 = 0.183673...
    assert neighbour_weight(0.6, floor=0.3, power=2.0) == pytest.approx(9 / 49)


def test_weight_is_monotonic_in_similarity() -> None:
    sims = [i / 20 for i in range(-20, 21)]
    weights = [neighbour_weight(s, floor=0.3, power=2.0) for s in sims]
    assert weights == sorted(weights)


# --------------------------------------------------------------------------------------------
# evidence_for: labels and observed outcomes
# --------------------------------------------------------------------------------------------


def test_label_means_success_for_the_labelled_and_pricier_models_failure_for_cheaper() -> None:
    labelled_mini = facts(best_model=MINI)
    assert evidence_for(labelled_mini, NANO, CATALOG) == 0.0
    assert evidence_for(labelled_mini, MINI, CATALOG) == 1.0
    assert evidence_for(labelled_mini, BIG, CATALOG) == 1.0


def test_label_on_the_cheapest_model_means_everything_succeeds() -> None:
    labelled_nano = facts(best_model=NANO)
    assert [evidence_for(labelled_nano, m, CATALOG) for m in CATALOG.names] == [1.0, 1.0, 1.0]


def test_label_on_the_strongest_model_means_only_it_succeeds() -> None:
    labelled_big = facts(best_model=BIG)
    assert [evidence_for(labelled_big, m, CATALOG) for m in CATALOG.names] == [0.0, 0.0, 1.0]


def test_no_label_and_no_outcomes_says_nothing() -> None:
    unlabelled = facts()
    assert [evidence_for(unlabelled, m, CATALOG) for m in CATALOG.names] == [None, None, None]


def test_label_naming_a_model_outside_the_catalog_says_nothing() -> None:
    retired = facts(best_model="retired-model")
    assert [evidence_for(retired, m, CATALOG) for m in CATALOG.names] == [None, None, None]


def test_observed_outcome_overrides_the_label_for_that_model_only() -> None:
    # Labelled big (so nano would be 0.0), but nano was observed at mean quality 0.9.
    f = facts(best_model=BIG, outcomes=[ObservedOutcome(NANO, 0.9, 3)])
    assert evidence_for(f, NANO, CATALOG) == 0.9
    assert evidence_for(f, MINI, CATALOG) == 0.0  # still from the label
    assert evidence_for(f, BIG, CATALOG) == 1.0  # still from the label


def test_observed_failure_overrides_a_label_success() -> None:
    f = facts(best_model=NANO, outcomes=[ObservedOutcome(BIG, 0.2, 5)])
    assert evidence_for(f, BIG, CATALOG) == 0.2
    assert evidence_for(f, NANO, CATALOG) == 1.0


def test_observed_outcomes_count_without_any_label() -> None:
    f = facts(outcomes=[ObservedOutcome(MINI, 0.7, 2)])
    assert [evidence_for(f, m, CATALOG) for m in CATALOG.names] == [None, 0.7, None]


# --------------------------------------------------------------------------------------------
# estimate_models: prior shrinkage, costs, ignored neighbours
# --------------------------------------------------------------------------------------------


def test_no_evidence_leaves_every_model_at_the_prior() -> None:
    # (0.5 * 0.25 + 0) / (0.25 + 0) = 0.5
    est = estimate([])
    for e in est.values():
        assert e.success == pytest.approx(0.5)
        assert e.support == 0.0
        assert e.meets_target is False


def test_one_identical_labelled_neighbour() -> None:
    # Label mini, weight 1, prior 0.5, strength 0.25:
    #   nano: (0.5*0.25 + 1*0) / (0.25 + 1) = 0.125 / 1.25 = 0.1
    #   mini: (0.125 + 1*1) / 1.25          = 1.125 / 1.25 = 0.9
    #   big:  same as mini                                  = 0.9
    est = estimate([weighted(facts(best_model=MINI), 1.0)])
    assert est[NANO].success == pytest.approx(0.1)
    assert est[MINI].success == pytest.approx(0.9)
    assert est[BIG].success == pytest.approx(0.9)
    assert [est[m].support for m in CATALOG.names] == [1.0, 1.0, 1.0]
    assert [est[m].meets_target for m in CATALOG.names] == [False, True, True]


def test_prior_shrinkage_formula_with_custom_prior() -> None:
    # prior 0.3, strength 2; neighbours: w=0.5 labelled big, w=1.0 with nano observed at 0.6.
    #   nano: (0.3*2 + 0.5*0 + 1.0*0.6) / (2 + 0.5 + 1.0) = 1.2 / 3.5 = 0.342857...
    #   mini: (0.6 + 0.5*0) / (2 + 0.5)                    = 0.6 / 2.5 = 0.24
    #   big:  (0.6 + 0.5*1) / (2 + 0.5)                    = 1.1 / 2.5 = 0.44
    neighbours = [
        weighted(facts(best_model=BIG), 0.5),
        weighted(facts(outcomes=[ObservedOutcome(NANO, 0.6, 4)]), 1.0),
    ]
    est = estimate(neighbours, prior_success=0.3, prior_strength=2.0, quality_target=0.4)
    assert est[NANO].success == pytest.approx(1.2 / 3.5)
    assert est[MINI].success == pytest.approx(0.24)
    assert est[BIG].success == pytest.approx(0.44)
    assert est[NANO].support == pytest.approx(1.5)
    assert est[MINI].support == pytest.approx(0.5)
    assert est[BIG].support == pytest.approx(0.5)
    # target 0.4: only big (0.44) reaches it.
    assert [est[m].meets_target for m in CATALOG.names] == [False, False, True]


def test_meets_target_is_inclusive() -> None:
    # Label nano, weight 1: every model is (0.125 + 1) / 1.25 = 0.9. A target equal to the very
    # float computed meets it; the next float up does not.
    success = (0.5 * 0.25 + 1.0) / (0.25 + 1.0)
    est = estimate([weighted(facts(best_model=NANO), 1.0)], quality_target=success)
    assert all(e.success == success and e.meets_target for e in est.values())
    above = math.nextafter(success, 2.0)
    est = estimate([weighted(facts(best_model=NANO), 1.0)], quality_target=above)
    assert not any(e.meets_target for e in est.values())


def test_strong_prior_resists_one_neighbour() -> None:
    # strength 10, one weight-1 label on big: nano = (0.5*10 + 0) / 11 = 5/11 = 0.4545...
    #                                        big  = (5 + 1) / 11       = 6/11 = 0.5454...
    est = estimate([weighted(facts(best_model=BIG), 1.0)], prior_strength=10.0)
    assert est[NANO].success == pytest.approx(5 / 11)
    assert est[BIG].success == pytest.approx(6 / 11)


def test_estimated_costs_are_price_times_tokens() -> None:
    est = estimate([], input_tokens=1000, output_tokens=500)
    for name, cost in COST.items():
        assert est[name].estimated_cost_usd == pytest.approx(cost)


def test_zero_tokens_cost_nothing() -> None:
    est = estimate([], input_tokens=0, output_tokens=0)
    assert all(e.estimated_cost_usd == 0.0 for e in est.values())


def test_neighbours_with_zero_weight_are_ignored() -> None:
    ignored = [weighted(facts(best_model=NANO), 0.0), weighted(facts(best_model=BIG), -0.5)]
    est = estimate(ignored)
    for e in est.values():
        assert e.success == pytest.approx(0.5)
        assert e.support == 0.0
    # ... and they do not change the estimate next to a real neighbour.
    with_real = estimate([*ignored, weighted(facts(best_model=MINI), 1.0)])
    alone = estimate([weighted(facts(best_model=MINI), 1.0)])
    assert with_real == alone


def test_neighbours_without_evidence_do_not_count_as_support() -> None:
    est = estimate([weighted(facts(), 1.0), weighted(facts(best_model="ghost"), 1.0)])
    assert all(e.support == 0.0 and e.success == pytest.approx(0.5) for e in est.values())


# --------------------------------------------------------------------------------------------
# evidence_weight, vote_route, cold_start_reason, cascade_plan
# --------------------------------------------------------------------------------------------


def test_evidence_weight_counts_only_neighbours_that_say_something() -> None:
    neighbours = [
        weighted(facts(best_model=MINI), 0.75),
        weighted(facts(outcomes=[ObservedOutcome(BIG, 0.1, 1)]), 0.5),
        weighted(facts(), 1.0),  # says nothing
        weighted(facts(best_model="ghost"), 1.0),  # says nothing
        weighted(facts(best_model=NANO), 0.0),  # no weight
    ]
    # 0.75 + 0.5 = 1.25
    assert evidence_weight(neighbours, CATALOG) == pytest.approx(1.25)


def test_evidence_weight_counts_only_evidence_about_allowed_models() -> None:
    only_big = weighted(facts(outcomes=[ObservedOutcome(BIG, 1.0, 1)]), 1.0)
    labelled_big = weighted(facts(best_model=BIG), 0.5)  # says the cheaper ones fail: evidence
    assert evidence_weight([only_big, labelled_big], CATALOG) == pytest.approx(1.5)
    allowed = frozenset({NANO, MINI})
    assert evidence_weight([only_big, labelled_big], CATALOG, allowed) == pytest.approx(0.5)


def test_precedents_about_a_removed_model_alone_leave_the_query_cold() -> None:
    """Exact precedents whose only outcome is for a model policy removed used to pass the
    support test: every allowed model sat at the bare prior and the query went SEMANTIC to a
    model nobody had tried, with "5 neighbours" as its evidence."""
    neighbours = [near(facts(outcomes=[ObservedOutcome(BIG, 1.0, 1)]), 0.97) for _ in range(5)]
    allowed = replace(request(neighbours), allowed=frozenset({NANO, MINI}))
    choice = decide(allowed)
    assert choice.strategy is Strategy.CASCADE
    assert choice.reason_code is ReasonCode.COLD_LOW_SUPPORT
    assert choice.cascade is not None
    assert [s.model for s in choice.cascade.steps] == [NANO, MINI]
    assert decide(request(neighbours)).strategy is Strategy.SEMANTIC  # big allowed: warm


def test_evidence_weight_ignores_outcomes_for_models_outside_the_catalog() -> None:
    f = facts(outcomes=[ObservedOutcome("ghost", 1.0, 1)])
    assert evidence_weight([weighted(f, 1.0)], CATALOG) == 0.0


def test_vote_route_is_a_weighted_majority() -> None:
    # a: 0.4 + 0.4 = 0.8; b: 0.7 → a wins although b has the single heaviest neighbour.
    neighbours = [
        weighted(facts(route="b"), 0.7),
        weighted(facts(route="a"), 0.4),
        weighted(facts(route="a"), 0.4),
    ]
    assert vote_route(neighbours) == "a"


def test_vote_route_ignores_weightless_and_routeless_neighbours() -> None:
    neighbours = [
        weighted(facts(route="loud"), 0.0),
        weighted(facts(route=None), 5.0),
        weighted(facts(route=""), 5.0),
        weighted(facts(route="quiet"), 0.1),
    ]
    assert vote_route(neighbours) == "quiet"


def test_vote_route_is_none_without_routes() -> None:
    assert vote_route([]) is None
    assert vote_route([weighted(facts(), 1.0)]) is None
    assert vote_route([weighted(facts(route="x"), 0.0)]) is None


def test_vote_route_breaks_ties_deterministically() -> None:
    neighbours = [weighted(facts(route="alpha"), 0.5), weighted(facts(route="beta"), 0.5)]
    # Equal weight: the later name wins, whatever order the neighbours came in.
    assert vote_route(neighbours) == "beta"
    assert vote_route(list(reversed(neighbours))) == "beta"


def test_cold_start_reasons_in_priority_order() -> None:
    kwargs = {"threshold": 0.55, "min_support": 0.25}
    assert (
        cold_start_reason(index_size=0, top_similarity=0.0, support=0.0, **kwargs)
        is ReasonCode.COLD_EMPTY_INDEX
    )
    # An empty index wins even if the other numbers look fine.
    assert (
        cold_start_reason(index_size=0, top_similarity=1.0, support=5.0, **kwargs)
        is ReasonCode.COLD_EMPTY_INDEX
    )
    assert (
        cold_start_reason(index_size=3, top_similarity=0.54, support=0.0, **kwargs)
        is ReasonCode.COLD_LOW_SIMILARITY
    )
    assert (
        cold_start_reason(index_size=3, top_similarity=0.9, support=0.24, **kwargs)
        is ReasonCode.COLD_LOW_SUPPORT
    )
    assert cold_start_reason(index_size=3, top_similarity=0.9, support=1.0, **kwargs) is None


def test_cold_start_thresholds_are_inclusive_for_warm() -> None:
    # similarity == threshold and support == min_support are warm (the tests are strict "<").
    assert (
        cold_start_reason(
            index_size=1, top_similarity=0.55, threshold=0.55, support=0.25, min_support=0.25
        )
        is None
    )


def test_cascade_plan_keeps_the_estimates_order() -> None:
    estimates = tuple(
        estimate_models(
            [],
            CATALOG,
            prior_success=0.5,
            prior_strength=0.25,
            quality_target=0.8,
            input_tokens=1000,
            output_tokens=500,
        )
    )
    plan = cascade_plan(estimates, 0.7)
    assert plan.min_quality == 0.7
    assert [s.model for s in plan.steps] == [NANO, MINI, BIG]
    assert [s.estimated_cost_usd for s in plan.steps] == pytest.approx(
        [COST[NANO], COST[MINI], COST[BIG]]
    )
    assert "0.70" in plan.acceptance


# --------------------------------------------------------------------------------------------
# decide: SEMANTIC choices
# --------------------------------------------------------------------------------------------


def test_cheapest_model_meeting_the_target_is_chosen() -> None:
    # One identical neighbour labelled mini: nano 0.1, mini 0.9, big 0.9 (see above).
    # Cold start? index 1, top similarity 1.0 >= 0.55, support 1.0 >= 0.25 → warm.
    choice = decide(request([near(facts(best_model=MINI, route="faq"), 1.0)]))
    assert choice.strategy is Strategy.SEMANTIC
    assert choice.reason_code is ReasonCode.CHEAPEST_MEETS_TARGET
    assert choice.model == MINI
    assert choice.confidence == pytest.approx(0.9)
    assert choice.estimated_cost_usd == pytest.approx(COST[MINI])
    assert choice.route == "faq"
    assert choice.cascade is None
    assert choice.quality_target == 0.8
    assert choice.top_similarity == 1.0
    assert MINI in choice.reason
    assert [e.model for e in choice.estimates] == [NANO, MINI, BIG]
    assert [e.estimated_cost_usd for e in choice.estimates] == pytest.approx(
        [COST[NANO], COST[MINI], COST[BIG]]
    )


# A catalog where the list order and a long prompt's cost disagree: "reader" has cheap input
# and dear output (0.10 / 8.00, listed dearer: 8.10), "writer" the reverse (2.00 / 1.00, 3.00).
# For 20,000 input and 10 output tokens: reader (2000 + 80) / 1e6 = 0.00208, writer
# (40000 + 10) / 1e6 = 0.04001. For 10 input and 2,000 output: reader 0.016001, writer 0.00202.
READER, WRITER = "reader", "writer"
INVERTING = Catalog([spec(READER, 0.10, 8.00), spec(WRITER, 2.00, 1.00)])


def test_cheapest_for_this_request_is_chosen_not_the_cheapest_listed() -> None:
    assert INVERTING.names == (WRITER, READER)  # list order: writer first, reader "strongest"
    # Both models have succeeded on this very query.
    both = facts(outcomes=[ObservedOutcome(READER, 1.0, 1), ObservedOutcome(WRITER, 1.0, 1)])
    long_prompt = decide(
        request([near(both, 1.0)], catalog=INVERTING, input_tokens=20_000, output_tokens=10)
    )
    assert long_prompt.strategy is Strategy.SEMANTIC
    assert long_prompt.model == READER
    assert long_prompt.estimated_cost_usd == pytest.approx(0.00208)
    assert "reader is the cheapest model" in long_prompt.reason
    long_answer = decide(
        request([near(both, 1.0)], catalog=INVERTING, input_tokens=10, output_tokens=2_000)
    )
    assert long_answer.model == WRITER


def test_a_cascade_tries_the_cheapest_for_this_request_first() -> None:
    choice = decide(request([], catalog=INVERTING, input_tokens=20_000, output_tokens=10))
    assert choice.strategy is Strategy.CASCADE and choice.cascade is not None
    assert [s.model for s in choice.cascade.steps] == [READER, WRITER]
    assert [s.estimated_cost_usd for s in choice.cascade.steps] == pytest.approx([0.00208, 0.04001])
    assert choice.model == READER
    assert choice.estimated_cost_usd == pytest.approx(0.00208)


def test_none_meeting_the_target_still_goes_to_the_strongest_listed() -> None:
    # Strength is the list order: with no model meeting the target, the strongest (reader,
    # listed dearest) is chosen, whatever this request costs.
    failed = facts(outcomes=[ObservedOutcome(READER, 0.0, 1), ObservedOutcome(WRITER, 0.0, 1)])
    choice = decide(
        request([near(failed, 1.0)], catalog=INVERTING, input_tokens=10, output_tokens=2_000)
    )
    assert choice.reason_code is ReasonCode.NONE_MEETS_TARGET
    assert choice.model == READER


def test_a_label_says_nothing_of_a_model_at_the_same_prices() -> None:
    # twin-a and twin-b are listed at the same prices: neither is stronger, so a label on one
    # is no failure of the other (it used to be, by name order), and no success either.
    twins = Catalog([spec("twin-b", 1.0, 2.0), spec("twin-a", 1.0, 2.0), spec(NANO, 0.1, 0.4)])
    assert twins.tier("twin-a") == twins.tier("twin-b") == twins.tier(NANO) + 1
    on_b = facts(best_model="twin-b")
    assert evidence_for(on_b, "twin-b", twins) == 1.0
    assert evidence_for(on_b, "twin-a", twins) is None
    assert evidence_for(on_b, NANO, twins) == 0.0
    on_nano = facts(best_model=NANO)
    assert evidence_for(on_nano, "twin-a", twins) == evidence_for(on_nano, "twin-b", twins) == 1.0
    by_model = estimate([weighted(on_b, 1.0)], twins)
    assert by_model["twin-a"].support == 0.0 and by_model["twin-a"].success == 0.5


def test_decide_sets_neighbour_weights_and_keeps_their_order() -> None:
    # weights: sim 1.0 → 1.0; sim 0.65 → 0.35/0.7 = 0.5; sim 0.2 (below floor 0.3) → 0.
    neighbours = [
        near(facts(best_model=MINI), 1.0),
        near(facts(best_model=BIG), 0.65),
        near(facts(best_model=NANO), 0.2),
    ]
    choice = decide(request(neighbours))
    assert [n.facts for n in choice.neighbours] == [n.facts for n in neighbours]
    assert [n.weight for n in choice.neighbours] == pytest.approx([1.0, 0.5, 0.0])
    assert [n.similarity for n in choice.neighbours] == [1.0, 0.65, 0.2]


def test_two_neighbours_pick_the_strongest_when_only_it_meets_the_target() -> None:
    # n1: sim 1.0 → w 1.0, labelled mini, route a; n2: sim 0.65 → w 0.5, labelled big, route b.
    #   nano: (0.125 + 1*0 + 0.5*0) / (0.25 + 1.5) = 0.125 / 1.75 = 0.071428...
    #   mini: (0.125 + 1*1 + 0.5*0) / 1.75         = 1.125 / 1.75 = 0.642857...
    #   big:  (0.125 + 1*1 + 0.5*1) / 1.75         = 1.625 / 1.75 = 0.928571...
    # Only big reaches 0.8 → big, and it is the cheapest that does.
    # Route vote: a 1.0 vs b 0.5 → a.
    neighbours = [
        near(facts(best_model=MINI, route="a"), 1.0),
        near(facts(best_model=BIG, route="b"), 0.65),
    ]
    choice = decide(request(neighbours))
    successes = [e.success for e in choice.estimates]
    assert successes == pytest.approx([0.125 / 1.75, 1.125 / 1.75, 1.625 / 1.75])
    assert [e.support for e in choice.estimates] == pytest.approx([1.5, 1.5, 1.5])
    assert choice.reason_code is ReasonCode.CHEAPEST_MEETS_TARGET
    assert choice.model == BIG
    assert choice.confidence == pytest.approx(1.625 / 1.75)
    assert choice.route == "a"


def test_none_meets_the_target_picks_the_strongest_model() -> None:
    # Same neighbours as above; big's 0.9286 < target 0.95 → nothing meets it.
    neighbours = [
        near(facts(best_model=MINI, route="a"), 1.0),
        near(facts(best_model=BIG, route="b"), 0.65),
    ]
    choice = decide(request(neighbours, params=DecisionParams(quality_target=0.95)))
    assert choice.strategy is Strategy.SEMANTIC
    assert choice.reason_code is ReasonCode.NONE_MEETS_TARGET
    assert choice.model == BIG == CATALOG.strongest.name
    assert choice.confidence == pytest.approx(1.625 / 1.75)
    assert choice.estimated_cost_usd == pytest.approx(COST[BIG])
    assert not any(e.meets_target for e in choice.estimates)
    assert choice.cascade is None
    assert "0.95" in choice.reason


def test_none_meets_target_picks_strongest_even_if_a_cheaper_model_scores_higher() -> None:
    # One neighbour, w 1: nano observed at 0.7, big observed at 0.1 (label absent).
    #   nano: (0.125 + 0.7) / 1.25 = 0.66;  mini: prior 0.5;  big: (0.125 + 0.1) / 1.25 = 0.18
    # Nothing reaches 0.8 → the rule is "strongest", i.e. big, not the best-scoring nano.
    f = facts(outcomes=[ObservedOutcome(NANO, 0.7, 1), ObservedOutcome(BIG, 0.1, 1)])
    choice = decide(request([near(f, 1.0)]))
    assert [e.success for e in choice.estimates] == pytest.approx([0.66, 0.5, 0.18])
    assert choice.reason_code is ReasonCode.NONE_MEETS_TARGET
    assert choice.model == BIG
    assert f"best: {NANO} at 0.66" in choice.reason


def test_observed_outcome_overrides_label_in_a_decision() -> None:
    # Labelled big, but nano observed at 0.9; w 1:
    #   nano: (0.125 + 0.9) / 1.25 = 1.025 / 1.25 = 0.82  (meets 0.8)
    #   mini: (0.125 + 0)   / 1.25 = 0.1
    #   big:  (0.125 + 1)   / 1.25 = 0.9
    f = facts(best_model=BIG, outcomes=[ObservedOutcome(NANO, 0.9, 1)])
    choice = decide(request([near(f, 1.0)]))
    assert [e.success for e in choice.estimates] == pytest.approx([0.82, 0.1, 0.9])
    assert choice.model == NANO
    assert choice.reason_code is ReasonCode.CHEAPEST_MEETS_TARGET
    assert choice.estimated_cost_usd == pytest.approx(COST[NANO])


def test_each_report_on_the_query_itself_counts() -> None:
    # The query itself (similarity 1, weight 1) with nano reported 3 times, mean 0.0, beside a
    # paraphrase (weight 0.5) labelled nano:
    #   nano: (0.125 + 3*1*0.0 + 0.5*1) / (0.25 + 3 + 0.5) = 0.625 / 3.75 = 0.1666...
    # Counted once, as before, it was (0.125 + 0.5) / (0.25 + 1 + 0.5) = 0.357...
    itself = Neighbour(facts(outcomes=[ObservedOutcome(NANO, 0.0, 3)]), 1.0, weight=1.0)
    paraphrase = weighted(facts(best_model=NANO), 0.5)
    est = estimate([itself, paraphrase])
    assert est[NANO].success == pytest.approx(0.625 / 3.75)
    assert est[NANO].support == pytest.approx(3.5)
    # mini and big know only the label (the query's reports are about nano): weight 0.5.
    assert est[MINI].success == pytest.approx(0.625 / 0.75)
    assert est[MINI].support == pytest.approx(0.5)


def test_reports_on_a_paraphrase_count_once() -> None:
    # The same precedent at similarity 0.99 (a paraphrase): its 3 reports are one neighbour.
    #   nano: (0.125 + 1*0.0 + 0.5*1) / (0.25 + 1 + 0.5) = 0.625 / 1.75
    paraphrase_of_many = Neighbour(facts(outcomes=[ObservedOutcome(NANO, 0.0, 3)]), 0.99, 1.0)
    est = estimate([paraphrase_of_many, weighted(facts(best_model=NANO), 0.5)])
    assert est[NANO].success == pytest.approx(0.625 / 1.75)
    assert est[NANO].support == pytest.approx(1.5)


def test_a_second_failure_of_the_same_query_moves_the_decision() -> None:
    # Four paraphrases labelled nano at similarity 0.86 (weight (0.86 - 0.3) / 0.7 = 0.8 each,
    # 3.2 in all) and the query itself, reported failing on nano n times:
    #   nano: (0.125 + 3.2) / (0.25 + 3.2 + n) = 3.325 / (3.45 + n)
    #   n = 1: 0.7449 < 0.8 already; so with a target of 0.7:
    #   n = 1: 0.7449 (nano stays), n = 2: 3.325 / 5.45 = 0.6101 (nano no longer reaches it).
    # Counted once, every further failure left nano at 0.7449.
    params = DecisionParams(quality_target=0.7)
    paraphrases = [near(facts(best_model=NANO), 0.86) for _ in range(4)]

    def after(failures: int) -> Choice:
        itself = near(facts(best_model=NANO, outcomes=[ObservedOutcome(NANO, 0.0, failures)]), 1.0)
        return decide(request([itself, *paraphrases], params=params))

    once, twice = after(1), after(2)
    assert once.estimates[0].success == pytest.approx(3.325 / 4.45)
    assert once.model == NANO
    assert twice.estimates[0].success == pytest.approx(3.325 / 5.45)
    assert twice.model == MINI


def test_zero_weight_neighbour_does_not_change_the_decision() -> None:
    # The second neighbour sits under the floor (0.25 <= 0.3): weight 0, so its nano label is
    # ignored and the estimates equal the one-neighbour case: nano 0.1, mini 0.9, big 0.9.
    # (Had it counted with weight 1, nano would be (0.125 + 0 + 1) / 2.25 = 0.5.)
    neighbours = [near(facts(best_model=MINI), 1.0), near(facts(best_model=NANO, route="x"), 0.25)]
    choice = decide(request(neighbours))
    assert [e.success for e in choice.estimates] == pytest.approx([0.1, 0.9, 0.9])
    assert [e.support for e in choice.estimates] == pytest.approx([1.0, 1.0, 1.0])
    assert choice.model == MINI
    assert choice.route is None  # the only routed neighbour carries no weight
    assert "1 neighbours" in choice.reason


def test_power_and_floor_from_params_are_applied() -> None:
    # floor 0.0, power 2: sim 0.8 → 0.8 ** 2 = 0.64. Label nano, prior 0.5 strength 0.25:
    #   every model: (0.125 + 0.64) / (0.25 + 0.64) = 0.765 / 0.89 = 0.859550...
    params = DecisionParams(similarity_floor=0.0, weight_power=2.0)
    choice = decide(request([near(facts(best_model=NANO), 0.8)], params=params))
    assert choice.neighbours[0].weight == pytest.approx(0.64)
    assert [e.success for e in choice.estimates] == pytest.approx([0.765 / 0.89] * 3)
    assert choice.model == NANO


# --------------------------------------------------------------------------------------------
# decide: cold start → CASCADE
# --------------------------------------------------------------------------------------------


def check_cascade(choice: Choice, reason: ReasonCode, target: float) -> None:
    assert choice.strategy is Strategy.CASCADE
    assert choice.reason_code is reason
    assert choice.route is None
    assert choice.cascade is not None
    assert choice.cascade.min_quality == target
    assert choice.quality_target == target
    assert [s.model for s in choice.cascade.steps] == [NANO, MINI, BIG]
    assert choice.cascade.steps == tuple(
        CascadeStep(e.model, e.estimated_cost_usd) for e in choice.estimates
    )
    assert choice.model == choice.cascade.steps[0].model == NANO
    assert choice.estimated_cost_usd == pytest.approx(COST[NANO])
    assert choice.confidence == choice.estimates[0].success
    assert choice.reason.startswith("cold start: ")
    assert "cascade over 3 models, cheapest first" in choice.reason


def test_cold_start_empty_index() -> None:
    choice = decide(request([], index_size=0))
    check_cascade(choice, ReasonCode.COLD_EMPTY_INDEX, 0.8)
    assert choice.top_similarity == 0.0
    assert choice.neighbours == ()
    assert choice.confidence == pytest.approx(0.5)  # the prior, no evidence
    assert "no examples" in choice.reason


def test_no_neighbours_in_a_non_empty_index_is_low_similarity() -> None:
    choice = decide(request([], index_size=10))
    check_cascade(choice, ReasonCode.COLD_LOW_SIMILARITY, 0.8)


def test_cold_start_low_top_similarity() -> None:
    # top similarity 0.5 < threshold 0.55 → cold, even though the neighbour has weight
    # (0.5 - 0.3) / 0.7 = 0.2857 and a route.
    params = DecisionParams(quality_target=0.7)
    choice = decide(request([near(facts(best_model=BIG, route="r"), 0.5)], params=params))
    check_cascade(choice, ReasonCode.COLD_LOW_SIMILARITY, 0.7)
    assert choice.top_similarity == 0.5
    assert "0.50" in choice.reason and "0.55" in choice.reason
    # The estimates are still computed from the neighbour, for the evidence panel:
    #   nano: (0.125 + 0) / (0.25 + 2/7) = 0.125 / 0.535714... = 0.233333...
    w = 0.2 / 0.7
    assert choice.estimates[0].success == pytest.approx(0.125 / (0.25 + w))


def test_cold_start_low_support() -> None:
    # sim 0.6 >= 0.55, but with power 2 its weight is (0.3/0.7)**2 = 9/49 = 0.1837 < 0.25.
    params = DecisionParams(weight_power=2.0)
    choice = decide(request([near(facts(best_model=NANO, route="r"), 0.6)], params=params))
    check_cascade(choice, ReasonCode.COLD_LOW_SUPPORT, 0.8)
    assert choice.neighbours[0].weight == pytest.approx(9 / 49)
    assert "0.18" in choice.reason and "0.25" in choice.reason


def test_cold_start_low_support_when_neighbours_say_nothing() -> None:
    # Identical neighbour, weight 1, but no label and no outcomes → support 0 < 0.25.
    choice = decide(request([near(facts(route="r"), 1.0)]))
    check_cascade(choice, ReasonCode.COLD_LOW_SUPPORT, 0.8)


def test_empty_catalog_raises_value_error() -> None:
    with pytest.raises(ValueError, match="empty catalog"):
        decide(request([near(facts(best_model=NANO), 1.0)], catalog=Catalog([])))
    with pytest.raises(ValueError, match="empty catalog"):
        decide(request([], catalog=Catalog([]), index_size=0))


def test_single_model_catalog() -> None:
    solo = Catalog([spec("only", 1.0, 2.0)])
    # Label outside the catalog for a SEMANTIC choice would be cold (no support); use outcomes.
    # w 1, observed 0.3: (0.125 + 0.3) / 1.25 = 0.34 → none meets → strongest == only.
    f = facts(outcomes=[ObservedOutcome("only", 0.3, 1)])
    choice = decide(request([near(f, 1.0)], catalog=solo))
    assert choice.model == "only"
    assert choice.reason_code is ReasonCode.NONE_MEETS_TARGET
    assert choice.confidence == pytest.approx(0.34)
    # (1000 * 1 + 500 * 2) / 1e6 = 0.002
    assert choice.estimated_cost_usd == pytest.approx(0.002)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    n = draw(st.integers(min_value=1, max_value=4))
    prices = draw(
        st.lists(
            st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False)),
            min_size=n,
            max_size=n,
        )
    )
    return Catalog(spec(f"m{i}", a, b) for i, (a, b) in enumerate(prices))


@st.composite
def scenarios(draw: st.DrawFn, warm: bool = False) -> DecisionRequest:
    """Random requests; `warm` disables every cold-start rule so all choices are SEMANTIC."""
    catalog = draw(catalogs())
    names = list(catalog.names)
    model_names = st.sampled_from([*names, "ghost"])
    outcome = st.builds(
        ObservedOutcome,
        model=model_names,
        mean_quality=st.floats(0, 1),
        count=st.integers(1, 50),
    )
    one_facts = st.builds(
        ExampleFacts,
        example_id=st.integers(1, 10_000),
        text=st.just("t"),
        route=st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3"])),
        source=st.sampled_from(list(Source)),
        best_model=st.one_of(st.none(), model_names),
        outcomes=st.lists(outcome, max_size=3).map(tuple),
    )
    neighbours = draw(
        st.lists(
            st.builds(Neighbour, facts=one_facts, similarity=st.floats(-1, 1)),
            max_size=8,
        )
    )
    neighbours.sort(key=lambda n: -n.similarity)
    params = DecisionParams(
        quality_target=draw(st.floats(0.01, 1)),
        cold_start_threshold=-1.0 if warm else draw(st.floats(-1, 1)),
        similarity_floor=draw(st.floats(-1, 0.95)),
        min_support=0.0 if warm else draw(st.floats(0, 2)),
        prior_success=draw(st.floats(0, 1)),
        prior_strength=draw(st.floats(0.01, 10)),
        weight_power=draw(st.floats(0.1, 4)),
    )
    return DecisionRequest(
        neighbours=neighbours,
        catalog=catalog,
        params=params,
        index_size=draw(st.integers(1 if warm else 0, 3)) + len(neighbours),
        input_tokens=draw(st.integers(0, 100_000)),
        output_tokens=draw(st.integers(0, 10_000)),
    )


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_decide_properties(req: DecisionRequest) -> None:
    check_properties(req, decide(req))


@settings(max_examples=300, deadline=None, database=None)
@given(scenarios(warm=True))
def test_decide_properties_of_semantic_choices(req: DecisionRequest) -> None:
    choice = decide(req)
    assert choice.strategy is Strategy.SEMANTIC
    check_properties(req, choice)


def check_properties(req: DecisionRequest, choice: Choice) -> None:
    catalog = req.catalog
    target = req.params.quality_target

    # One estimate per model, cheapest first, each a probability with non-negative support.
    assert tuple(e.model for e in choice.estimates) == catalog.names
    for e in choice.estimates:
        assert 0.0 <= e.success <= 1.0
        assert e.support >= 0.0
        assert e.meets_target == (e.success >= target)
        assert e.estimated_cost_usd == pytest.approx(
            catalog.get(e.model).cost_usd(req.input_tokens, req.output_tokens)
        )
    for n in choice.neighbours:
        assert 0.0 <= n.weight <= 1.0

    # "Cheapest" is this request's cost; equal costs keep the catalog's order.
    def cost_order(name: str) -> tuple[float, int]:
        return (catalog.get(name).cost_usd(req.input_tokens, req.output_tokens), catalog.rank(name))

    if choice.strategy is Strategy.SEMANTIC:
        meeting = [e.model for e in choice.estimates if e.meets_target]
        if meeting:
            assert choice.model in meeting
            assert cost_order(choice.model) == min(cost_order(m) for m in meeting)
            assert choice.reason_code is ReasonCode.CHEAPEST_MEETS_TARGET
        else:
            assert choice.model == catalog.strongest.name
            assert choice.reason_code is ReasonCode.NONE_MEETS_TARGET
        assert choice.cascade is None
    else:
        assert choice.strategy is Strategy.CASCADE
        assert choice.cascade is not None
        assert tuple(s.model for s in choice.cascade.steps) == tuple(
            sorted(catalog.names, key=cost_order)
        )
        assert choice.cascade.min_quality == target
        assert choice.model == choice.cascade.steps[0].model
        assert choice.route is None
        assert choice.reason_code in {
            ReasonCode.COLD_EMPTY_INDEX,
            ReasonCode.COLD_LOW_SIMILARITY,
            ReasonCode.COLD_LOW_SUPPORT,
        }
