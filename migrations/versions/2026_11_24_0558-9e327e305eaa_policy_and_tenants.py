"""policy and tenants

Revision ID: 9e327e305eaa
Revises: 00c6daeeab40
Create Date: 2026-11-24 05:58:27.223659
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e327e305eaa"
down_revision: str | Sequence[str] | None = "00c6daeeab40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_decisions_created_at", ["created_at"], unique=False)

    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy", sa.JSON(), nullable=True))

    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))
        batch_op.create_index(
            "ix_outcomes_tenant_created_at", ["tenant", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_outcomes_tenant_created_at")
        batch_op.drop_column("tenant")

    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.drop_column("policy")

    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_created_at")
        batch_op.drop_column("tenant")
