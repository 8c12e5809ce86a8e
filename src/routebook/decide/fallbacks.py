"""Fallbacks: where a caller goes when the chosen model's call fails, best next choice first.

On a cascade the plan already is the order. Otherwise: the other models that still reach the
quality target, cheapest first for this request, then the rest by estimated success (ties: the
stronger first).
"""

from __future__ import annotations

from collections.abc import Collection

from routebook.domain import Choice, ModelEstimate


def fallback_order(choice: Choice, available: Collection[str], limit: int) -> tuple[str, ...]:
    if choice.cascade is not None:
        ordered = [s.model for s in choice.cascade.steps if s.model != choice.model]
        return tuple(ordered[:limit])
    candidates = [e for e in choice.estimates if e.model in available and e.model != choice.model]
    meeting = sorted((e for e in candidates if e.meets_target), key=lambda e: e.estimated_cost_usd)
    rest = [e for e in candidates if not e.meets_target]
    position = {e.model: i for i, e in enumerate(choice.estimates)}

    def strength(estimate: ModelEstimate) -> tuple[float, int]:
        return (-estimate.success, -position[estimate.model])

    return tuple(e.model for e in [*meeting, *sorted(rest, key=strength)][:limit])


def without_cooled(allowed: tuple[str, ...], cooled: Collection[str]) -> tuple[str, ...]:
    """The allowed models off cooldown; all of them when every one is cooling down (a degraded
    answer beats none)."""
    available = tuple(m for m in allowed if m not in cooled)
    return available or allowed
