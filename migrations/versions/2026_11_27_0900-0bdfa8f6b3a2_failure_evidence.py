"""failure evidence

A failure report needed no decision and no real call, and four of them cooled a model for every
tenant of the namespace. Decisions now keep the models they offered (`decisions.offered`), and a
failure records whether it was reported against a decision that offered its model
(`model_failures.counted`): only those may cool a model, and the threshold counts decisions.
Rows from before are not counted (their decisions' offers were not kept).

Revision ID: 0bdfa8f6b3a2
Revises: 698393495bcd
Create Date: 2026-11-27 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0bdfa8f6b3a2"
down_revision: str | Sequence[str] | None = "698393495bcd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("offered", sa.Text(), nullable=True))
    with op.batch_alter_table("model_failures", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("model_failures", schema=None) as batch_op:
        batch_op.drop_column("counted")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("offered")
