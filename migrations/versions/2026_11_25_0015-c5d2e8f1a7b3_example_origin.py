"""example origin

Who added a reference example: a route file ("routefile") or the Admin API ("admin"), so
`routes sync --prune` removes only what left the files. Rows from before have none and are
pruned as before.

Revision ID: c5d2e8f1a7b3
Revises: b41c7e2d9a10
Create Date: 2026-11-25 00:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5d2e8f1a7b3"
down_revision: str | Sequence[str] | None = "b41c7e2d9a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.drop_column("origin")
