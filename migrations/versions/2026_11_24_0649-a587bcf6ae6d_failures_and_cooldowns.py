"""failures and cooldowns

Revision ID: a587bcf6ae6d
Revises: cdbede5f4f1a
Create Date: 2026-11-24 06:49:49.645445
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a587bcf6ae6d"
down_revision: str | Sequence[str] | None = "cdbede5f4f1a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cooldowns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespaces.id"],
            name=op.f("fk_cooldowns_namespace_id_namespaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cooldowns")),
        sa.UniqueConstraint("namespace_id", "model", name=op.f("uq_cooldowns_namespace_id_model")),
    )
    op.create_table(
        "model_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("outcome_id", sa.String(length=128), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("decision_id", sa.String(length=32), nullable=True),
        sa.Column("retry_after_seconds", sa.Float(), nullable=True),
        sa.Column("cooldown_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["namespace_id"],
            ["namespaces.id"],
            name=op.f("fk_model_failures_namespace_id_namespaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_failures")),
        sa.UniqueConstraint("outcome_id", name=op.f("uq_model_failures_outcome_id")),
    )
    with op.batch_alter_table("model_failures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_model_failures_ns_model_created",
            ["namespace_id", "model", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("model_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_model_failures_ns_model_created")

    op.drop_table("model_failures")
    op.drop_table("cooldowns")
