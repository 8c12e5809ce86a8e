"""The cold-start plan: every candidate model, cheapest first, with the acceptance check."""

from __future__ import annotations

from collections.abc import Sequence

from routebook.domain import CascadePlan, CascadeStep, ModelEstimate


def cascade_plan(estimates: Sequence[ModelEstimate], min_quality: float) -> CascadePlan:
    """Cheapest first for this request (`estimated_cost_usd`); equal costs keep the catalog's
    order, in which `estimates` come."""
    ordered = sorted(estimates, key=lambda e: e.estimated_cost_usd)
    steps = tuple(CascadeStep(e.model, e.estimated_cost_usd) for e in ordered)
    return CascadePlan(steps=steps, min_quality=min_quality)
