"""Fallback order and cooldown filtering, with plain values."""

from __future__ import annotations

from dataclasses import replace

from routebook.decide.fallbacks import fallback_order, without_cooled
from routebook.domain import (
    CascadePlan,
    CascadeStep,
    Choice,
    ModelEstimate,
    ReasonCode,
    Strategy,
)


def choice(
    model: str, estimates: list[tuple[str, float, bool]], cascade: CascadePlan | None = None
) -> Choice:
    return Choice(
        model=model,
        route=None,
        strategy=Strategy.CASCADE if cascade else Strategy.SEMANTIC,
        confidence=0.9,
        estimated_cost_usd=0.0,
        reason_code=ReasonCode.CHEAPEST_MEETS_TARGET,
        reason="",
        neighbours=(),
        estimates=tuple(ModelEstimate(m, s, 1.0, 0.0, ok) for m, s, ok in estimates),
        cascade=cascade,
        quality_target=0.8,
        top_similarity=0.9,
    )


ESTIMATES = [("a", 0.5, False), ("b", 0.85, True), ("c", 0.95, True), ("d", 0.6, False)]


def test_models_meeting_the_target_come_first_cheapest_first_then_by_success() -> None:
    assert fallback_order(choice("b", ESTIMATES), "abcd", 5) == ("c", "d", "a")


def test_equal_success_prefers_the_stronger_model() -> None:
    tied = [("a", 0.5, False), ("b", 0.9, True), ("c", 0.5, False)]
    assert fallback_order(choice("b", tied), "abc", 5) == ("c", "a")


def test_only_available_models_and_at_most_the_limit() -> None:
    assert fallback_order(choice("b", ESTIMATES), "abd", 5) == ("d", "a")
    assert fallback_order(choice("b", ESTIMATES), "abcd", 1) == ("c",)
    assert fallback_order(choice("b", ESTIMATES), "abcd", 0) == ()


def test_a_cascade_falls_back_along_its_plan() -> None:
    plan = CascadePlan((CascadeStep("a", 0.0), CascadeStep("b", 0.0), CascadeStep("c", 0.0)), 0.8)
    assert fallback_order(choice("a", ESTIMATES, plan), "abcd", 5) == ("b", "c")


def test_cooled_models_are_left_out_unless_that_leaves_nothing() -> None:
    assert without_cooled(("a", "b", "c"), {"b"}) == ("a", "c")
    assert without_cooled(("a", "b"), {"a", "b"}) == ("a", "b")


def test_models_meeting_the_target_come_cheapest_for_this_request_first() -> None:
    # c is listed above b but costs less for this request (a long prompt, cheap input).
    priced = tuple(
        ModelEstimate(m, 0.9, 1.0, cost, True)
        for m, cost in [("a", 0.01), ("b", 0.05), ("c", 0.02)]
    )
    chosen = replace(choice("a", []), estimates=priced)
    assert fallback_order(chosen, "abc", 5) == ("c", "b")
