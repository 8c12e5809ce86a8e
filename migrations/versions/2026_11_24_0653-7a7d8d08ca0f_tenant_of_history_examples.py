"""tenant of history examples

Revision ID: 7a7d8d08ca0f
Revises: a587bcf6ae6d
Create Date: 2026-11-24 06:53:40.867118
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a7d8d08ca0f"
down_revision: str | Sequence[str] | None = "a587bcf6ae6d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.drop_column("tenant")
