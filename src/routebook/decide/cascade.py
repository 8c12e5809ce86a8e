"""The cold-start plan: every candidate model, cheapest first, with the acceptance check."""

from __future__ import annotations

from collections.abc import Sequence

from routebook.domain import CascadePlan, CascadeStep, ModelEstimate


def cascade_plan(estimates: Sequence[ModelEstimate], min_quality: float) -> CascadePlan:
    """`estimates` come cheapest first, so the plan keeps their order."""
    steps = tuple(CascadeStep(e.model, e.estimated_cost_usd) for e in estimates)
    return CascadePlan(steps=steps, min_quality=min_quality)
