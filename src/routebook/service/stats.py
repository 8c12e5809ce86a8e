"""How routing went over a time window: cost, quality, escalations, cold starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from routebook.store import stats as stats_store
from routebook.store.db import Store
from routebook.store.tables import utcnow


@dataclass(frozen=True, slots=True)
class Group:
    key: str
    outcomes: int
    mean_quality: float
    success_rate: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class RoutingStats:
    window_hours: float
    namespace: str | None
    decisions: int
    decisions_by_strategy: dict[str, int] = field(default_factory=dict)
    cold_start_rate: float = 0.0
    escalation_rate: float = 0.0
    by_model: list[Group] = field(default_factory=list)
    by_tenant: list[Group] = field(default_factory=list)


def routing_stats(store: Store, window_hours: float, namespace: str | None = None) -> RoutingStats:
    since = utcnow() - timedelta(hours=window_hours)
    with store.read() as session:
        strategies = stats_store.decisions_by_strategy(session, since, namespace)
        by_model = [
            Group(*row) for row in stats_store.outcomes_by(session, "model", since, namespace)
        ]
        by_tenant = [
            Group(*row) for row in stats_store.outcomes_by(session, "tenant", since, namespace)
        ]
        escalated, with_outcome = stats_store.escalations(session, since, namespace)
    total = sum(strategies.values())
    return RoutingStats(
        window_hours=window_hours,
        namespace=namespace,
        decisions=total,
        decisions_by_strategy=strategies,
        cold_start_rate=strategies.get("cascade", 0) / total if total else 0.0,
        escalation_rate=escalated / with_outcome if with_outcome else 0.0,
        by_model=by_model,
        by_tenant=by_tenant,
    )
