"""Aggregates over the decision log and the outcomes, for `routebook stats`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from routebook.store.tables import DecisionRow, ExampleRow, NamespaceRow, OutcomeRow


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
        query = (
            query.join(ExampleRow, ExampleRow.id == OutcomeRow.example_id)
            .join(NamespaceRow, NamespaceRow.id == ExampleRow.namespace_id)
            .where(NamespaceRow.name == namespace)
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
