"""outcomes by age

The history retention sweep (`history_days`, store/history.py) finds expired history examples
through their outcomes' times, oldest first, from where its last pass left off: an index on
`outcomes.created_at` makes each pass read only the outcomes that aged past the window since
the last one, instead of every example. No data changes either way.

On PostgreSQL the index is built with writes to `outcomes` held for the build (seconds per
million rows); SQLite adds it in place (no table copy, so AUTOINCREMENT stays).

Revision ID: c9e4a2f7d1b3
Revises: b7d3e9a1c4f2
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c9e4a2f7d1b3"
down_revision: str | Sequence[str] | None = "b7d3e9a1c4f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outcomes_created_at", "outcomes", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outcomes_created_at", table_name="outcomes")
