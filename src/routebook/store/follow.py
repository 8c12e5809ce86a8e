"""What changed in the store after a point: replicas tail these by id (and, on PostgreSQL,
by the transaction that wrote them).

Ids are allocated when a row is inserted, not when it commits, so a row may become visible
after rows with higher ids. On SQLite that cannot happen: one writer at a time holds the
database from its first insert to its commit, so every id not yet visible is above every
visible one. On PostgreSQL it can, for as long as the writing transaction stays open, so each
row also records its transaction (`xact`, set by the database), and a reader keeps re-reading
the rows of every transaction that was still running when it last looked (`xact_floor`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from routebook.store.db import in_chunks
from routebook.store.examples import STORED_COLUMNS, StoredExample, stored_examples
from routebook.store.tables import ExampleRow, OutcomeRow, TombstoneRow


@dataclass(frozen=True, slots=True)
class Marks:
    """Where an index is complete up to: every example, outcome and tombstone with an id at
    or below these marks, and (PostgreSQL) every row of a transaction older than
    `xact_floor`, has been applied to it. `xact_floor` None: ids alone (SQLite, or marks
    kept from before transactions were recorded)."""

    example: int = 0
    outcome: int = 0
    tombstone: int = 0
    xact_floor: int | None = None


def current_marks(session: Session) -> Marks:
    """Marks to read from next: the highest ids visible now, and on PostgreSQL the oldest
    transaction still running. Take them before reading the rows they cover."""
    floor = oldest_running_transaction(session)
    return Marks(
        example=int(session.scalar(select(func.coalesce(func.max(ExampleRow.id), 0))) or 0),
        outcome=int(session.scalar(select(func.coalesce(func.max(OutcomeRow.id), 0))) or 0),
        tombstone=int(session.scalar(select(func.coalesce(func.max(TombstoneRow.id), 0))) or 0),
        xact_floor=floor,
    )


def oldest_running_transaction(session: Session) -> int | None:
    """PostgreSQL: the oldest transaction still running (every older one has committed or
    aborted, so its rows are visible to any read that starts after this). None on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")))


def _past(
    id_column: InstrumentedAttribute[int],
    xact_column: InstrumentedAttribute[int | None],
    after: int,
    floor: int | None,
) -> ColumnElement[bool]:
    """Rows past a mark: a higher id, or a transaction that was still open at the floor."""
    if floor is None:
        return id_column > after
    return or_(id_column > after, xact_column >= floor)


def tombstones_after(session: Session, namespace_id: int, marks: Marks) -> list[tuple[int, int]]:
    """[(tombstone id, example id)] past `marks`, in id order."""
    rows = session.execute(
        select(TombstoneRow.id, TombstoneRow.example_id)
        .where(
            TombstoneRow.namespace_id == namespace_id,
            _past(TombstoneRow.id, TombstoneRow.xact, marks.tombstone, marks.xact_floor),
        )
        .order_by(TombstoneRow.id)
    ).all()
    return [(int(t), int(e)) for t, e in rows]


def example_ids_after(session: Session, namespace_id: int, marks: Marks) -> list[int]:
    """Ids only, in id order: most rows past the marks are indexed already (this server wrote
    them, or an earlier pass saw them while their transaction's neighbours were still open),
    so their text and vector need not be read again."""
    return list(
        session.scalars(
            select(ExampleRow.id)
            .where(
                ExampleRow.namespace_id == namespace_id,
                _past(ExampleRow.id, ExampleRow.xact, marks.example, marks.xact_floor),
            )
            .order_by(ExampleRow.id)
        )
    )


def examples_with_ids(session: Session, ids: list[int]) -> list[StoredExample]:
    rows = [
        row
        for part in in_chunks(sorted(ids))
        for row in session.execute(
            select(*STORED_COLUMNS).where(ExampleRow.id.in_(part)).order_by(ExampleRow.id)
        ).all()
    ]
    return stored_examples(rows)


def outcomes_after(session: Session, namespace_id: int, marks: Marks) -> list[tuple[int, int]]:
    """[(outcome id, example id)] of the namespace's outcomes past `marks`, in id order."""
    rows = session.execute(
        select(OutcomeRow.id, ExampleRow.id)
        .join(ExampleRow, ExampleRow.id == OutcomeRow.example_id)
        .where(
            ExampleRow.namespace_id == namespace_id,
            _past(OutcomeRow.id, OutcomeRow.xact, marks.outcome, marks.xact_floor),
        )
        .order_by(OutcomeRow.id)
    ).all()
    return [(int(o), int(e)) for o, e in rows]
