"""followed rows and outcome ledger

Replicas tail examples, outcomes and tombstones by id; ids are allocated before commit, so
on PostgreSQL a row can become visible below a replica's mark. Each row now records the
transaction that inserted it (`xact`, a database default), and a published generation the
oldest transaction open when its marks were taken (`high_water_xact`); see store/follow.py.
On SQLite the three tables are rebuilt AUTOINCREMENT, so the id of a deleted newest row is
never reused (its tombstone would remove the new row from replicas' indexes).

Outcomes outlive their example: deleting a history example used to delete its outcomes, and
with them the spend they recorded, so a tenant's budget was refunded. An outcome now keeps
its namespace and loses only its example (`example_id` NULL).

Revision ID: d7a1f3c9e2b4
Revises: c5d2e8f1a7b3
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d7a1f3c9e2b4"
down_revision: str | Sequence[str] | None = "c5d2e8f1a7b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOLLOWED = ("examples", "outcomes", "example_tombstones")
INDEXES = (
    ("ix_examples_namespace_id_xact", "examples", ["namespace_id", "xact"]),
    ("ix_outcomes_xact", "outcomes", ["xact"]),
    ("ix_example_tombstones_namespace_id_xact", "example_tombstones", ["namespace_id", "xact"]),
)
EXAMPLE_FK = "fk_outcomes_example_id_examples"
NAMESPACE_FK = "fk_outcomes_namespace_id_namespaces"
EXAMPLE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _rebuilt(table: str, autoincrement: bool) -> object:
    """Alter `table`: on SQLite by copying it (AUTOINCREMENT as asked), on PostgreSQL in place.

    Foreign keys are off while migrations run on SQLite (store/migrate.py, `_migrating`):
    dropping the old `examples` would otherwise cascade to its outcomes."""
    if op.get_bind().dialect.name == "postgresql":
        return op.batch_alter_table(table)
    return op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    )


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("outcomes") as batch_op:
        batch_op.add_column(sa.Column("namespace_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE outcomes SET namespace_id = "
        "(SELECT namespace_id FROM examples WHERE examples.id = outcomes.example_id)"
    )
    for table in FOLLOWED:
        with _rebuilt(table, autoincrement=True) as batch_op:  # type: ignore[attr-defined]
            batch_op.add_column(sa.Column("xact", sa.BigInteger(), nullable=True))
            if table == "outcomes":
                batch_op.alter_column("namespace_id", existing_type=sa.Integer(), nullable=False)
                batch_op.alter_column("example_id", existing_type=EXAMPLE_ID, nullable=True)
                batch_op.drop_constraint(EXAMPLE_FK, type_="foreignkey")
                batch_op.create_foreign_key(
                    EXAMPLE_FK, "examples", ["example_id"], ["id"], ondelete="SET NULL"
                )
                batch_op.create_foreign_key(
                    NAMESPACE_FK, "namespaces", ["namespace_id"], ["id"], ondelete="CASCADE"
                )
        if postgresql:
            # A default given after the column: existing rows keep NULL (no rewrite of a large
            # table); every insert from now on records its transaction.
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN xact "
                "SET DEFAULT (pg_current_xact_id()::text)::bigint"
            )
    if not postgresql:
        _no_id_below_a_mark()
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    with op.batch_alter_table("index_generations") as batch_op:
        batch_op.add_column(sa.Column("high_water_xact", sa.BigInteger(), nullable=True))


#: Per followed table, the ids beyond which a new row must be numbered on SQLite: ids deleted
#: before this migration (a tombstone names them) and ids a published snapshot has read past.
ID_FLOORS = {
    "examples": (
        "SELECT max(example_id) FROM example_tombstones",
        "SELECT max(high_water_example_id) FROM index_generations",
    ),
    "outcomes": ("SELECT max(high_water_outcome_id) FROM index_generations",),
    "example_tombstones": ("SELECT max(high_water_tombstone_id) FROM index_generations",),
}


def _no_id_below_a_mark() -> None:
    """The AUTOINCREMENT copy starts numbering after the highest id still present, so an id
    deleted before the upgrade would be handed out again: below a snapshot's marks, where no
    replica reads it, or under an old tombstone that removes it. Number after every mark."""
    for table, floors in ID_FLOORS.items():
        op.execute(
            f"INSERT INTO sqlite_sequence (name, seq) SELECT '{table}', 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = '{table}')"
        )
        highest = ", ".join(f"coalesce(({floor}), 0)" for floor in floors)
        op.execute(
            f"UPDATE sqlite_sequence SET seq = max(seq, {highest}, 0) WHERE name = '{table}'"
        )


def downgrade() -> None:
    with op.batch_alter_table("index_generations") as batch_op:
        batch_op.drop_column("high_water_xact")
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
    # Outcomes of deleted examples cannot go back to an example: the old schema has no place
    # for them.
    op.execute("DELETE FROM outcomes WHERE example_id IS NULL")
    for table in FOLLOWED:
        with _rebuilt(table, autoincrement=False) as batch_op:  # type: ignore[attr-defined]
            batch_op.drop_column("xact")
            if table == "outcomes":
                batch_op.drop_constraint(NAMESPACE_FK, type_="foreignkey")
                batch_op.drop_constraint(EXAMPLE_FK, type_="foreignkey")
                batch_op.create_foreign_key(
                    EXAMPLE_FK, "examples", ["example_id"], ["id"], ondelete="CASCADE"
                )
                batch_op.alter_column("example_id", existing_type=EXAMPLE_ID, nullable=False)
                batch_op.drop_column("namespace_id")
