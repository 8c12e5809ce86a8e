"""The decision log kept in the store, so RecordOutcome can name a decision by its id.

A decision's query text is kept only as long as an outcome may still need it to find or make
the query's history example (`decision_text_hours`); `clear_texts` is the step that forgets
it (service/retention.py runs it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from routebook.store.tables import DecisionRow


def get_decision(session: Session, decision_id: str) -> DecisionRow | None:
    return session.get(DecisionRow, decision_id)


def clear_texts(
    session: Session, before: datetime, since: datetime | None, limit: int
) -> tuple[int, datetime | None]:
    """Clear the query text of at most `limit` decisions made before `before` (and not before
    `since`, where an earlier pass left off); returns how many, and the newest one's time (the
    next pass's `since`), None when there were none.

    Oldest first, through the `created_at` index: with `since`, a pass reads only rows it has
    not cleared, instead of every old row whose text is gone already. Rows made at the very
    time `since` names are read again, so none made in the same instant is skipped.
    """
    query = (
        select(DecisionRow.id, DecisionRow.created_at)
        .where(DecisionRow.created_at < before, DecisionRow.query_text.is_not(None))
        .order_by(DecisionRow.created_at)
        .limit(limit)
    )
    if since is not None:
        query = query.where(DecisionRow.created_at >= since)
    rows = session.execute(query).all()
    if not rows:
        return 0, None
    session.execute(
        update(DecisionRow)
        .where(DecisionRow.id.in_([decision_id for decision_id, _ in rows]))
        .values(query_text=None)
    )
    return len(rows), rows[-1].created_at
