"""How routing went over a time window: cost, quality, escalations, cold starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from routebook.config import Settings
from routebook.decide import DecisionParams
from routebook.errors import NotFound
from routebook.store import namespaces as ns_store
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


def _check_namespace(session: Session, namespace: str | None) -> None:
    """A report for a namespace that does not exist would be all zeros: say so instead."""
    if namespace and ns_store.get_namespace(session, namespace) is None:
        raise NotFound(f"namespace {namespace!r} does not exist in this store")


def routing_stats(store: Store, window_hours: float, namespace: str | None = None) -> RoutingStats:
    since = utcnow() - timedelta(hours=window_hours)
    with store.read() as session:
        _check_namespace(session, namespace)
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


@dataclass(frozen=True, slots=True)
class ShadowReport:
    window_hours: float
    namespace: str | None
    decisions: int
    agreements: int
    disagreement_share: float
    disagreements: dict[str, int]
    estimated_cost_live_usd: float
    estimated_cost_candidate_usd: float
    #: Mean estimated success of each side; None without decisions (no figure, not 0).
    estimated_success_live: float | None
    estimated_success_candidate: float | None
    #: Disagreeing decisions with an outcome for the live model, and their mean quality (None
    #: when there is no such outcome: a quality of 0 would read as "failed every time").
    live_outcomes: int
    live_quality: float | None
    #: Disagreeing decisions with an outcome for the candidate's model too (e.g. a cascade);
    #: None as above.
    candidate_outcomes: int
    candidate_quality: float | None


def cascade_bar(settings: Settings) -> float:
    """The quality a cascade step's answer must reach to be accepted, as `decide` has it."""
    params = DecisionParams(
        quality_target=settings.quality_target, cascade_min_quality=settings.cascade_min_quality
    )
    return params.cascade_bar


def unmeasured_by_shadow(live: Settings, candidate: Settings) -> str | None:
    """What the candidate changes that shadow mode cannot show, said as a warning; None when
    nothing. Shadow compares decisions (model, estimated cost and success), and the cascade
    bar changes no decision, only which of a cascade's answers the caller accepts: a candidate
    that changes only the bar reads "agree" on every cascade while it changes the quality and
    cost of every cold query. The gate measures it (jobs/outcome_eval.py)."""
    live_bar, candidate_bar = cascade_bar(live), cascade_bar(candidate)
    if live_bar == candidate_bar:
        return None
    return (
        f"the shadow candidate's cascade bar (cascade_min_quality, else quality_target) is "
        f"{candidate_bar:g}, the live one {live_bar:g}: shadow mode compares decisions, and the "
        "bar changes none of them, only which cascade answers are accepted, so the shadow "
        "report does not measure it (a cascade reads as agreeing); measure it with the gate: "
        "routebook eval --baseline <live settings> --candidate <candidate settings>"
    )


def shadow_report(store: Store, window_hours: float, namespace: str | None = None) -> ShadowReport:
    since = utcnow() - timedelta(hours=window_hours)
    with store.read() as session:
        _check_namespace(session, namespace)
        rows = stats_store.shadow_rows(session, since, namespace)
        differing = [r for r in rows if r.model != r.shadow_model]
        quality = stats_store.outcome_quality(session, [r.decision_id for r in differing])
    pairs: dict[str, int] = {}
    for r in differing:
        key = f"{r.model} -> {r.shadow_model}"
        pairs[key] = pairs.get(key, 0) + 1
    live = [
        quality[(r.decision_id, r.model)] for r in differing if (r.decision_id, r.model) in quality
    ]
    candidate = [
        quality[(r.decision_id, r.shadow_model)]
        for r in differing
        if (r.decision_id, r.shadow_model) in quality
    ]
    n = len(rows)
    return ShadowReport(
        window_hours=window_hours,
        namespace=namespace,
        decisions=n,
        agreements=n - len(differing),
        disagreement_share=len(differing) / n if n else 0.0,
        disagreements=dict(sorted(pairs.items())),
        estimated_cost_live_usd=sum(r.cost for r in rows),
        estimated_cost_candidate_usd=sum(r.shadow_cost for r in rows),
        estimated_success_live=_mean([r.confidence for r in rows]),
        estimated_success_candidate=_mean([r.shadow_confidence for r in rows]),
        live_outcomes=len(live),
        live_quality=_mean(live),
        candidate_outcomes=len(candidate),
        candidate_quality=_mean(candidate),
    )


def _mean(values: list[float]) -> float | None:
    """The mean, or None for no values: the report shows "n/a" rather than a made-up 0."""
    return sum(values) / len(values) if values else None
