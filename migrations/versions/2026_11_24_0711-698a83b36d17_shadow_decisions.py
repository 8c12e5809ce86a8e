"""shadow decisions

Revision ID: 698a83b36d17
Revises: 7a7d8d08ca0f
Create Date: 2026-11-24 07:11:49.259116
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "698a83b36d17"
down_revision: str | Sequence[str] | None = "7a7d8d08ca0f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("shadow_model", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("shadow_estimated_cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("shadow_confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("shadow_confidence")
        batch_op.drop_column("shadow_estimated_cost_usd")
        batch_op.drop_column("shadow_model")
        batch_op.drop_column("confidence")
