"""failures by decision

An outcome for one of the strongest models counts against the tenant's escalation cap unless
every model its decision offered ahead of it was reported failed on that decision (the
fallback walk during an outage): RecordOutcome looks up a decision's failures, which needs
them indexed by decision.

Revision ID: f3c1a9d5b7e2
Revises: 0bdfa8f6b3a2
Create Date: 2026-11-28 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "f3c1a9d5b7e2"
down_revision: str | Sequence[str] | None = "0bdfa8f6b3a2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_failures", schema=None) as batch_op:
        batch_op.create_index("ix_model_failures_decision_id", ["decision_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_model_failures_decision_id")
