"""store identity

A random id for the store, written into every snapshot's meta: a server refuses a snapshot
another store wrote (two deployments with different databases sharing one snapshot folder
write the same `<namespace>/gen-…` folders) and builds its index from its own store instead.
The id is made here, once, so every server of the store reads the same one.

Revision ID: e8b2c4d6f1a3
Revises: d7a1f3c9e2b4
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e8b2c4d6f1a3"
down_revision: str | Sequence[str] | None = "d7a1f3c9e2b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_identity")),
    )
    op.bulk_insert(table, [{"id": 1, "store_id": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("store_identity")
