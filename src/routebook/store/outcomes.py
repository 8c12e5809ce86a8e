"""Outcomes: what a model achieved on a query, idempotent on the client's outcome_id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from routebook.store.tables import OutcomeRow


def find_outcome(session: Session, outcome_id: str) -> OutcomeRow | None:
    return session.scalars(
        select(OutcomeRow).where(OutcomeRow.outcome_id == outcome_id)
    ).one_or_none()
