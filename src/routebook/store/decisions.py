"""The decision log kept in the store, so RecordOutcome can name a decision by its id."""

from __future__ import annotations

from sqlalchemy.orm import Session

from routebook.store.tables import DecisionRow


def get_decision(session: Session, decision_id: str) -> DecisionRow | None:
    return session.get(DecisionRow, decision_id)
