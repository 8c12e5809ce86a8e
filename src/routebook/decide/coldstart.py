"""Is this query a cold start? Then routebook does not guess: it hands out a cascade plan."""

from __future__ import annotations

from routebook.domain import ReasonCode


def cold_start_reason(
    *,
    index_size: int,
    top_similarity: float,
    threshold: float,
    support: float,
    min_support: float,
) -> ReasonCode | None:
    """The reason the query is cold, or None when its precedents are close and strong enough."""
    if index_size == 0:
        return ReasonCode.COLD_EMPTY_INDEX
    if top_similarity < threshold:
        return ReasonCode.COLD_LOW_SIMILARITY
    if support < min_support:
        return ReasonCode.COLD_LOW_SUPPORT
    return None
