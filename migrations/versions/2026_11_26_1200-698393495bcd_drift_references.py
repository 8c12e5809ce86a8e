"""drift references

The drift watch's reference window was kept in memory only: every restart (a deploy, a crash)
froze a new one from the traffic of the day, so drift that built up across restarts was never
seen. One row per namespace and embedding model keeps it; servers load it at start, and a
rebaseline turns it into a marker (no `frozen_at`) until the next reference is frozen.

Revision ID: 698393495bcd
Revises: e8b2c4d6f1a3
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "698393495bcd"
down_revision: str | Sequence[str] | None = "e8b2c4d6f1a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drift_references",
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("embedding_model", sa.String(length=256), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("top_similarity", sa.JSON(), nullable=False),
        sa.Column("cold", sa.JSON(), nullable=False),
        sa.Column("outcomes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespaces.id"],
            name=op.f("fk_drift_references_namespace_id_namespaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "namespace_id", "embedding_model", name=op.f("pk_drift_references")
        ),
    )


def downgrade() -> None:
    op.drop_table("drift_references")
