"""decision tokens

A report by decision_id without usage, for a model other than the decided one (a fallback, a
later cascade step), was charged from the routing text alone: the decision did not keep the
whole conversation's size. Decisions now keep the tokens Decide estimated (input and expected
output), so such a report is charged what the plan estimated for its model.

Revision ID: a4e7c2b9d1f6
Revises: f3c1a9d5b7e2
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a4e7c2b9d1f6"
down_revision: str | Sequence[str] | None = "f3c1a9d5b7e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("output_tokens")
        batch_op.drop_column("input_tokens")
