"""reindex heartbeat

A running reindex job touches its row every few seconds, so a job whose process was killed
reads as abandoned instead of "running" forever, and a second reindex of the same namespace
can be refused while the first is alive.

Revision ID: b41c7e2d9a10
Revises: 698a83b36d17
Create Date: 2026-11-24 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b41c7e2d9a10"
down_revision: str | Sequence[str] | None = "698a83b36d17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reindex_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reindex_jobs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_seconds")
        batch_op.drop_column("heartbeat_at")
