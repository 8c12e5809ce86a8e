"""What a tenant has spent: the sum of reported outcome costs over a rolling window."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from routebook.store.tables import OutcomeRow, utcnow


def tenant_spend(
    session: Session,
    namespace_id: int,
    tenant: str,
    window_hours: float,
    now: datetime | None = None,
) -> float:
    since = (now or utcnow()) - timedelta(hours=window_hours)
    total = session.scalar(
        select(func.coalesce(func.sum(OutcomeRow.cost_usd), 0.0)).where(
            OutcomeRow.tenant == tenant,
            OutcomeRow.created_at >= since,
            OutcomeRow.namespace_id == namespace_id,
        )
    )
    return float(total or 0.0)
