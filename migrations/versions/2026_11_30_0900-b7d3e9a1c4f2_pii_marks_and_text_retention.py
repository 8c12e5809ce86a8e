"""pii marks and text retention

A query marked `contains_pii` was kept like any other: its text came back as a neighbour's
snippet on later requests of the same tenant that were not marked, and every Decide's text
stayed in `decisions.query_text` for ever. Decisions now record the mark
(`decisions.contains_pii`), and history examples made from a marked query carry it
(`examples.contains_pii`): their text is never shown. `decisions.query_text` becomes nullable:
it is cleared once the server's `decision_text_hours` have passed (or never written when that
is 0). Rows from before are unmarked: nothing said which of their queries held personal data.

Downgrading drops the marks (an older server shows those texts again) and writes an empty
text into decisions whose text was cleared, as the older schema requires one; upgrading again
clears those empty texts.

Revision ID: b7d3e9a1c4f2
Revises: a4e7c2b9d1f6
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d3e9a1c4f2"
down_revision: str | Sequence[str] | None = "a4e7c2b9d1f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A literal default (not sa.false()) lets SQLite add the column in place: a default that
    # is an expression makes batch mode copy the table, and `examples` is the big one (its
    # copy would also lose AUTOINCREMENT). PostgreSQL reads '0' as false.
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("contains_pii", sa.Boolean(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("contains_pii", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.alter_column("query_text", existing_type=sa.Text(), nullable=True)
    # A downgrade wrote '' for cleared texts (Decide never stores an empty one): cleared again,
    # or an outcome on such a decision would make a history example of no text.
    op.execute("UPDATE decisions SET query_text = NULL WHERE query_text = ''")


def downgrade() -> None:
    op.execute("UPDATE decisions SET query_text = '' WHERE query_text IS NULL")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.alter_column("query_text", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("contains_pii")
    # Dropping a column copies the table on SQLite: keep its ids never reused.
    with op.batch_alter_table(
        "examples", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("contains_pii")
