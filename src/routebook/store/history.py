"""History examples past their retention window (`history_days`): found, and deleted.

An example is expired when its newest outcome is older than the window. The outcomes' times
say which ones those are, so they are read through the `created_at` index on outcomes, oldest
first, from where the last pass left off (`seen_before`): a pass reads the outcomes that aged
past the window since the pass before, not every example. (Every history example was made
with its first outcome, in one transaction.)

Deleting one races with RecordOutcome writing a new outcome about it. An acknowledged outcome
must never be lost, nor quietly detached from the query it was about, so `expire` decides and
deletes in one transaction, and on PostgreSQL it first locks the rows it may delete:

- `FOR UPDATE SKIP LOCKED`: an outcome being written about an example holds a key-share lock
  on it (its foreign key check) until it commits, so such an example is skipped, not waited
  for (the sweep never holds up an outcome, and never deadlocks with a batch of them); the
  caller tries it again next pass.
- The delete then checks for an outcome newer than the window in a statement of its own, so
  it sees every outcome committed before the locks were taken; one written after waits for
  this transaction, and then finds its example gone (a foreign key violation, which
  RecordOutcome retries: it makes the example again, with this outcome).

On SQLite one writer at a time holds the database, and the delete's own `NOT EXISTS` is
checked in the statement that deletes.

Outcomes stay, detached (`example_id` NULL, by the foreign key's ON DELETE SET NULL on both
stores): they are still what was spent, and `routebook stats` and the shadow report read them.
Each deleted example leaves a tombstone, so every replica's index drops it (store/follow.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, delete, exists, insert, or_, select
from sqlalchemy.orm import Session

from routebook.domain import Source
from routebook.store.tables import ExampleRow, OutcomeRow, TombstoneRow

_EXAMPLES = cast(Table, ExampleRow.__table__)
_OUTCOMES = cast(Table, OutcomeRow.__table__)
_TOMBSTONES = cast(Table, TombstoneRow.__table__)
_HISTORY = Source.HISTORY.value


@dataclass(frozen=True, slots=True)
class Cursor:
    """A place in the outcomes' (created_at, id) order: a pass goes on after it."""

    created_at: datetime
    id: int


@dataclass(frozen=True, slots=True)
class Expired:
    """What one `expire` did."""

    #: (example id, namespace id) of each history example deleted.
    deleted: list[tuple[int, int]]
    #: History examples not looked at because another transaction held them (an outcome
    #: being written about them): to try again.
    busy: set[int]


def seen_before(
    session: Session, before: datetime, after: Cursor | None, limit: int
) -> tuple[list[int], Cursor | None]:
    """The examples of at most `limit` outcomes made before `before` (and after `after`),
    oldest first, each example once; and the last outcome's place, None when there was none.

    Outcomes already detached are left out: their example is gone."""
    o = _OUTCOMES.c
    query = (
        select(o.created_at, o.id, o.example_id)
        .where(o.created_at < before, o.example_id.is_not(None))
        .order_by(o.created_at, o.id)
        .limit(limit)
    )
    if after is not None:
        # Written so the index's range starts at `after`, whatever the database makes of
        # row-value comparisons.
        query = query.where(
            o.created_at >= after.created_at,
            or_(o.created_at > after.created_at, o.id > after.id),
        )
    rows = session.execute(query).all()
    if not rows:
        return [], None
    last = rows[-1]
    return list(dict.fromkeys(int(r.example_id) for r in rows)), Cursor(last.created_at, last.id)


def expire(session: Session, ids: Collection[int], before: datetime) -> Expired:
    """Delete those of `ids` that are history examples made before `before` with no outcome
    at or after it, leaving tombstones; in the caller's transaction, which should commit soon
    (it holds the rows it deletes). `ids` fit one statement (see store/db.py IN_CHUNK)."""
    e, o = _EXAMPLES.c, _OUTCOMES.c
    if not ids:
        return Expired([], set())
    history = select(e.id).where(e.id.in_(sorted(ids)), e.source == _HISTORY).order_by(e.id)
    locked = list(session.scalars(history.with_for_update(skip_locked=True)))
    # SQLite renders no FOR UPDATE, and its one writer leaves nothing to skip.
    busy = (
        set(session.scalars(history)) - set(locked)
        if session.get_bind().dialect.name == "postgresql"
        else set()
    )
    if not locked:
        return Expired([], busy)
    newer = exists().where(o.example_id == e.id, o.created_at >= before)
    deleted = [
        (int(example_id), int(namespace_id))
        for example_id, namespace_id in session.execute(
            delete(_EXAMPLES)
            .where(and_(e.id.in_(locked), e.source == _HISTORY, e.created_at < before, ~newer))
            .returning(e.id, e.namespace_id)
        )
    ]
    if deleted:
        session.execute(
            insert(_TOMBSTONES),
            [{"namespace_id": n, "example_id": i} for i, n in sorted(deleted)],
        )
    return Expired(deleted, busy)
