"""decide() with a namespace head: the head is the prior of the neighbour vote, adds to the route
vote and to the cold-start support, and a precedent recorded now still counts at once.

Unless a test says otherwise: similarity floor 0 and power 1, so a neighbour's weight is its
similarity, and no cold-start test, so the numbers below can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from routebook.decide import DecisionParams, DecisionRequest, decide
from routebook.domain import HeadPrediction, Neighbour, ObservedOutcome, ReasonCode, Strategy
from tests.unit.test_decide import BIG, CATALOG, MINI, NANO, facts, near

PLAIN = DecisionParams(
    similarity_floor=0.0, weight_power=1.0, cold_start_threshold=-1.0, min_support=0.0
)


def ask(
    neighbours: Sequence[Neighbour],
    head: HeadPrediction | None,
    params: DecisionParams = PLAIN,
) -> DecisionRequest:
    return DecisionRequest(
        neighbours=neighbours,
        catalog=CATALOG,
        params=params,
        index_size=100,
        input_tokens=1000,
        output_tokens=500,
        head=head,
    )


def test_without_a_head_the_head_settings_change_nothing() -> None:
    neighbours = [
        near(facts(best_model=MINI, route="a"), 0.9),
        near(facts(best_model=BIG, route="b"), 0.7),
        near(facts(outcomes=[ObservedOutcome(NANO, 1.0, 1)]), 0.6),
    ]
    plain = decide(ask(neighbours, None, DecisionParams()))
    other = DecisionParams(head_strength=50.0, route_head_strength=50.0)
    assert decide(ask(neighbours, None, other)) == plain
    assert plain.head is None
    assert all(e.head_success is None for e in plain.estimates)
    assert "head" not in plain.reason


def test_the_heads_success_is_the_prior_of_the_vote() -> None:
    neighbours = [
        near(facts(outcomes=[ObservedOutcome(NANO, 1.0, 1)]), 0.5),
        near(facts(outcomes=[ObservedOutcome(NANO, 0.0, 1)]), 0.25),
    ]
    head = HeadPrediction(success=((NANO, 0.2), (MINI, 0.6)), generation=3, trained_on=40)
    choice = decide(ask(neighbours, head, replace(PLAIN, head_strength=4.0)))
    by_model = {e.model: e for e in choice.estimates}
    # nano: (0.2 * 4 + 0.5 * 1 + 0.25 * 0) / (4 + 0.75)
    assert by_model[NANO].success == pytest.approx(1.3 / 4.75)
    assert by_model[NANO].head_success == 0.2
    # mini: no neighbour evidence, so the head's prior alone.
    assert by_model[MINI].success == pytest.approx(0.6)
    # big is not in the head: the constant prior 0.5 at strength 0.25.
    assert by_model[BIG].success == pytest.approx(0.5)
    assert by_model[BIG].head_success is None
    assert choice.head == head
    assert "head (generation 3)" in choice.reason


def test_strength_zero_leaves_the_head_out() -> None:
    neighbours = [near(facts(best_model=MINI, route="a"), 0.8)]
    head = HeadPrediction(success=((NANO, 0.99),), routes=(("b", 1.0),))
    off = DecisionParams(head_strength=0.0, route_head_strength=0.0)
    assert decide(ask(neighbours, head, off)) == decide(ask(neighbours, None, off))


def test_the_head_joins_the_route_vote() -> None:
    neighbours = [near(facts(route="a"), 0.6), near(facts(route="b"), 0.5)]
    head = HeadPrediction(routes=(("a", 0.1), ("b", 0.9)))
    assert decide(ask(neighbours, None)).route == "a"
    # a: 0.6 + 1 * 0.1 = 0.7 against b: 0.5 + 1 * 0.9 = 1.4
    strong = replace(PLAIN, route_head_strength=1.0)
    assert decide(ask(neighbours, head, strong)).route == "b"
    # a: 0.6 + 0.1 * 0.1 = 0.61 against b: 0.5 + 0.1 * 0.9 = 0.59
    weak = replace(PLAIN, route_head_strength=0.1)
    assert decide(ask(neighbours, head, weak)).route == "a"


def test_the_heads_confidence_counts_as_support() -> None:
    """Cold-start support is the neighbours' weight plus strength x the head's top probability
    above chance: (p - 1/R) / (1 - 1/R) over R routes."""
    params = replace(PLAIN, min_support=1.0, route_head_strength=1.0)
    neighbours = [near(facts(best_model=NANO, route="a"), 0.5)]
    assert decide(ask(neighbours, None, params)).reason_code is ReasonCode.COLD_LOW_SUPPORT
    sure = HeadPrediction(routes=(("a", 0.9), ("b", 0.1)))
    # 0.5 + (0.9 - 0.5) / 0.5 = 0.5 + 0.8
    assert decide(ask(neighbours, sure, params)).strategy is Strategy.SEMANTIC
    unsure = HeadPrediction(routes=(("a", 0.3), ("b", 0.2), ("c", 0.5)))
    cold = decide(ask(neighbours, unsure, params))  # 0.5 + (0.5 - 1/3) / (2/3) = 0.5 + 0.25
    assert cold.strategy is Strategy.CASCADE
    assert cold.reason_code is ReasonCode.COLD_LOW_SUPPORT
    assert "weight 0.75 (0.25 of it the head's confidence)" in cold.reason
    assert cold.head == unsure


def test_a_head_no_surer_than_chance_adds_no_support() -> None:
    """A head spread evenly over four routes (0.25 each) used to add strength x 0.25 to every
    query's support: with the default strength 3 and minimum 0.25 no query of a namespace with
    up to 12 routes could be a cold start for lack of support, and a neighbour that says
    nothing sent it to a model on the bare prior."""
    params = replace(PLAIN, min_support=0.25, route_head_strength=3.0)
    says_nothing = [near(facts(route="r0"), 0.6)]
    even = HeadPrediction(routes=tuple((f"r{i}", 0.25) for i in range(4)))
    choice = decide(ask(says_nothing, even, params))
    assert choice.strategy is Strategy.CASCADE
    assert choice.reason_code is ReasonCode.COLD_LOW_SUPPORT
    one_route = HeadPrediction(routes=(("r0", 1.0),))  # a single route tells nothing either
    assert decide(ask(says_nothing, one_route, params)).strategy is Strategy.CASCADE


def test_the_reason_tells_the_heads_part_from_the_neighbours_weight() -> None:
    params = replace(PLAIN, min_support=0.5, route_head_strength=3.0)
    neighbours = [near(facts(best_model=NANO, route="a"), 0.4)]
    head = HeadPrediction(routes=(("a", 0.95), ("b", 0.05)), generation=7)
    choice = decide(ask(neighbours, head, params))
    assert choice.strategy is Strategy.SEMANTIC
    assert "1 neighbours with weight 0.40" in choice.reason
    # a route head only: it placed the query, it was no prior of any estimate
    assert "head (generation 7) put the query in route a at 0.95" in choice.reason
    assert "prior" not in choice.reason


def test_an_outcome_recorded_now_changes_the_next_decision_at_once() -> None:
    """The head is not retrained between the two decisions: the new precedent alone moves them.

    Head: nano 0.79, mini 0.79, big 0.95 at strength 10, target 0.8. Before: no model but big
    reaches the target. A nano success on a close paraphrase is recorded (similarity 0.99,
    weight 0.99): nano's estimate becomes (0.79 * 10 + 0.99) / 10.99 = 0.809, and nano is chosen.
    A failure instead drops it to 7.9 / 10.99.
    """
    head = HeadPrediction(success=((NANO, 0.79), (MINI, 0.79), (BIG, 0.95)))
    params = replace(PLAIN, head_strength=10.0)
    far = [near(facts(route="x"), 0.4)]  # a precedent that says nothing about any model
    before = decide(ask(far, head, params))
    assert before.model == BIG

    success = [near(facts(outcomes=[ObservedOutcome(NANO, 1.0, 1)]), 0.99), *far]
    after = decide(ask(success, head, params))
    nano = next(e for e in after.estimates if e.model == NANO)
    assert nano.success == pytest.approx(8.89 / 10.99)
    assert after.model == NANO

    failure = [near(facts(outcomes=[ObservedOutcome(NANO, 0.0, 1)]), 0.99), *far]
    worse = next(e for e in decide(ask(failure, head, params)).estimates if e.model == NANO)
    assert worse.success == pytest.approx(7.9 / 10.99)


def test_a_precedent_of_this_very_query_caps_the_heads_strength() -> None:
    """Head: nano 0.96, mini 0.97, big 0.99 at strength 10, target 0.8, so nano. nano failed this
    very query (similarity 1, reported three times: one example). Uncapped and counted once,
    nano stayed at (0.96 * 10 + 0) / 11 = 0.873 and kept the query; capped at the precedent's
    weight 1, with each of its three reports counted, it is 0.96 / (1 + 3) = 0.24, and mini,
    which the precedent says nothing of, keeps the head at 10."""
    head = HeadPrediction(success=((NANO, 0.96), (MINI, 0.97), (BIG, 0.99)))
    params = replace(PLAIN, head_strength=10.0, quality_target=0.8)
    assert decide(ask([near(facts(route="x"), 0.4)], head, params)).model == NANO
    failed = near(facts(outcomes=[ObservedOutcome(NANO, 0.0, 3)]), 1.0)
    choice = decide(ask([failed], head, params))
    by_model = {e.model: e for e in choice.estimates}
    assert by_model[NANO].success == pytest.approx(0.96 / 4)
    assert by_model[NANO].support == pytest.approx(3.0)
    assert by_model[NANO].head_success == 0.96  # still the prior, at the capped strength
    assert by_model[MINI].success == pytest.approx(0.97)
    assert choice.model == MINI
    # An admin's label on this very utterance ("mini and up") wins over a head sure of nano.
    labelled = near(facts(best_model=MINI), 0.999)
    assert decide(ask([labelled, near(facts(route="x"), 0.4)], head, params)).model == MINI
    # Below the same-query similarity the head keeps its whole strength.
    paraphrase = near(facts(outcomes=[ObservedOutcome(NANO, 0.0, 3)]), 0.99)
    kept = next(e for e in decide(ask([paraphrase], head, params)).estimates if e.model == NANO)
    assert kept.success == pytest.approx(9.6 / 10.99)


def test_a_precedent_of_this_very_query_caps_the_heads_route_vote() -> None:
    """The utterance asked word for word keeps its route, however sure the head is of another
    (strength 3 at probability 0.9 outweighed the utterance's own weight 1)."""
    head = HeadPrediction(routes=(("b", 0.9), ("a", 0.1)))
    params = replace(PLAIN, route_head_strength=3.0)
    exact = [near(facts(best_model=MINI, route="a"), 1.0), near(facts(route="b"), 0.3)]
    assert decide(ask(exact, head, params)).route == "a"  # 1 against 0.3, the head left out
    close = [near(facts(best_model=MINI, route="a"), 0.98), near(facts(route="b"), 0.3)]
    assert decide(ask(close, head, params)).route == "b"  # 0.98 + 0.3 against 0.3 + 2.7
