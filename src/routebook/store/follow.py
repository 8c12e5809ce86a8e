"""What changed in the store after a point: replicas tail these by increasing id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from routebook.store.db import in_chunks
from routebook.store.examples import STORED_COLUMNS, StoredExample, stored_examples
from routebook.store.tables import ExampleRow, OutcomeRow, TombstoneRow, utcnow


@dataclass(frozen=True, slots=True)
class Marks:
    """High-water marks: the last example, outcome and tombstone id an index has seen."""

    example: int = 0
    outcome: int = 0
    tombstone: int = 0


def current_marks(session: Session) -> Marks:
    return Marks(
        example=int(session.scalar(select(func.coalesce(func.max(ExampleRow.id), 0))) or 0),
        outcome=int(session.scalar(select(func.coalesce(func.max(OutcomeRow.id), 0))) or 0),
        tombstone=int(session.scalar(select(func.coalesce(func.max(TombstoneRow.id), 0))) or 0),
    )


def settled_marks(session: Session, settle: timedelta) -> Marks:
    """Marks below which every row is visible: the newest ids created more than `settle` ago.

    Ids are allocated when a row is inserted, not when it commits, so a row with a lower id
    may appear after one with a higher id; waiting `settle` closes that gap.
    """
    cutoff = utcnow() - settle

    def newest(column: object, created: object) -> int:
        return int(
            session.scalar(select(func.coalesce(func.max(column), 0)).where(created < cutoff))  # type: ignore[operator, arg-type]
            or 0
        )

    return Marks(
        example=newest(ExampleRow.id, ExampleRow.created_at),
        outcome=newest(OutcomeRow.id, OutcomeRow.created_at),
        tombstone=newest(TombstoneRow.id, TombstoneRow.deleted_at),
    )


def tombstones_after(session: Session, namespace_id: int, after: int) -> list[tuple[int, int]]:
    """[(tombstone id, example id)] in id order."""
    rows = session.execute(
        select(TombstoneRow.id, TombstoneRow.example_id)
        .where(TombstoneRow.namespace_id == namespace_id, TombstoneRow.id > after)
        .order_by(TombstoneRow.id)
    ).all()
    return [(int(t), int(e)) for t, e in rows]


def example_ids_after(session: Session, namespace_id: int, after: int) -> list[int]:
    """Ids only, in id order: most rows past a mark are indexed already (this server wrote
    them, or an earlier pass saw them before they settled), so their text and vector need not
    be read again."""
    return list(
        session.scalars(
            select(ExampleRow.id)
            .where(ExampleRow.namespace_id == namespace_id, ExampleRow.id > after)
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


def outcomes_after(session: Session, namespace_id: int, after: int) -> list[tuple[int, int]]:
    """[(outcome id, example id)] of the namespace's outcomes after `after`, in id order."""
    rows = session.execute(
        select(OutcomeRow.id, OutcomeRow.example_id)
        .join(ExampleRow, ExampleRow.id == OutcomeRow.example_id)
        .where(ExampleRow.namespace_id == namespace_id, OutcomeRow.id > after)
        .order_by(OutcomeRow.id)
    ).all()
    return [(int(o), int(e)) for o, e in rows]
