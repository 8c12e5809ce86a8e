"""Aggregates over the decision log and the outcomes, for `routebook stats`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from routebook.store.db import in_chunks
from routebook.store.tables import DecisionRow, NamespaceRow, OutcomeRow


def decisions_by_strategy(
    session: Session, since: datetime, namespace: str | None
) -> dict[str, int]:
    query = (
        select(DecisionRow.strategy, func.count())
        .where(DecisionRow.created_at >= since)
        .group_by(DecisionRow.strategy)
    )
    if namespace is not None:
        query = query.join(NamespaceRow, NamespaceRow.id == DecisionRow.namespace_id).where(
            NamespaceRow.name == namespace
        )
    return {strategy: int(n) for strategy, n in session.execute(query)}


def outcomes_by(
    session: Session, column: str, since: datetime, namespace: str | None
) -> list[tuple[str, int, float, float, float]]:
    """(key, outcomes, mean quality, success rate, cost USD) grouped by `model` or `tenant`."""
    key = OutcomeRow.model if column == "model" else func.coalesce(OutcomeRow.tenant, "")
    query = (
        select(
            key,
            func.count(),
            func.avg(OutcomeRow.quality),
            func.avg(case((OutcomeRow.quality >= 0.5, 1.0), else_=0.0)),
            func.coalesce(func.sum(OutcomeRow.cost_usd), 0.0),
        )
        .where(OutcomeRow.created_at >= since)
        .group_by(key)
        .order_by(key)
    )
    if namespace is not None:
        query = query.join(NamespaceRow, NamespaceRow.id == OutcomeRow.namespace_id).where(
            NamespaceRow.name == namespace
        )
    return [
        (str(k), int(n), float(q or 0), float(s or 0), float(c or 0))
        for k, n, q, s, c in session.execute(query)
    ]


def escalations(session: Session, since: datetime, namespace: str | None) -> tuple[int, int]:
    """(decisions with an outcome for another model than chosen, decisions with any outcome)."""
    base = (
        select(DecisionRow.id)
        .distinct()
        .join(OutcomeRow, OutcomeRow.decision_id == DecisionRow.id)
        .where(DecisionRow.created_at >= since)
    )
    if namespace is not None:
        base = base.join(NamespaceRow, NamespaceRow.id == DecisionRow.namespace_id).where(
            NamespaceRow.name == namespace
        )
    with_outcome = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    escalated_query = base.where(OutcomeRow.model != DecisionRow.model)
    escalated = session.scalar(select(func.count()).select_from(escalated_query.subquery())) or 0
    return int(escalated), int(with_outcome)


@dataclass(frozen=True, slots=True)
class ShadowRow:
    decision_id: str
    model: str
    shadow_model: str
    cost: float
    shadow_cost: float
    confidence: float
    shadow_confidence: float


def shadow_rows(session: Session, since: datetime, namespace: str | None) -> list[ShadowRow]:
    query = select(
        DecisionRow.id,
        DecisionRow.model,
        DecisionRow.shadow_model,
        DecisionRow.estimated_cost_usd,
        DecisionRow.shadow_estimated_cost_usd,
        DecisionRow.confidence,
        DecisionRow.shadow_confidence,
    ).where(DecisionRow.created_at >= since, DecisionRow.shadow_model.is_not(None))
    if namespace is not None:
        query = query.join(NamespaceRow, NamespaceRow.id == DecisionRow.namespace_id).where(
            NamespaceRow.name == namespace
        )
    return [
        ShadowRow(
            str(i), str(m), str(s), float(c or 0), float(sc or 0), float(q or 0), float(sq or 0)
        )
        for i, m, s, c, sc, q, sq in session.execute(query)
    ]


def outcome_quality(session: Session, decision_ids: list[str]) -> dict[tuple[str, str], float]:
    """(decision id, model) → mean reported quality, for the given decisions."""
    if not decision_ids:
        return {}
    return {
        (str(d), str(m)): float(q)
        for part in in_chunks(decision_ids)
        for d, m, q in session.execute(
            select(OutcomeRow.decision_id, OutcomeRow.model, func.avg(OutcomeRow.quality))
            .where(OutcomeRow.decision_id.in_(part))
            .group_by(OutcomeRow.decision_id, OutcomeRow.model)
        )
    }
