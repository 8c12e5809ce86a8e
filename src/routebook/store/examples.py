"""Examples: reference (admin-labelled) and history (learned from outcomes) queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.orm import Session

from routebook.domain import Source
from routebook.store.db import in_chunks
from routebook.store.tables import ExampleRow, OutcomeRow, TombstoneRow


def find_example(
    session: Session, namespace_id: int, source: Source, text_hash: str
) -> ExampleRow | None:
    return session.scalars(
        select(ExampleRow).where(
            ExampleRow.namespace_id == namespace_id,
            ExampleRow.source == source.value,
            ExampleRow.text_hash == text_hash,
        )
    ).one_or_none()


def reference_examples_by_hash(
    session: Session, namespace_id: int, hashes: Sequence[str] | None = None
) -> dict[str, ExampleRow]:
    """The namespace's reference examples by text hash: all of them, or those among `hashes`
    (an upsert of a few examples must not read a namespace of 100k, vectors and all)."""
    query = select(ExampleRow).where(
        ExampleRow.namespace_id == namespace_id,
        ExampleRow.source == Source.REFERENCE.value,
    )
    if hashes is None:
        return {r.text_hash: r for r in session.scalars(query)}
    return {
        r.text_hash: r
        for part in in_chunks(sorted(set(hashes)))
        for r in session.scalars(query.where(ExampleRow.text_hash.in_(part)))
    }


def hashes_with_vector(
    session: Session, namespace_id: int, hashes: Sequence[str], model_id: str
) -> set[str]:
    """Those of `hashes` whose reference example in the namespace has a vector of `model_id`
    cached (ids and hashes only: no vectors are read)."""
    query = select(ExampleRow.text_hash).where(
        ExampleRow.namespace_id == namespace_id,
        ExampleRow.source == Source.REFERENCE.value,
        ExampleRow.embedding.is_not(None),
        ExampleRow.embedding_model == model_id,
    )
    return {
        h
        for part in in_chunks(sorted(set(hashes)))
        for h in session.scalars(query.where(ExampleRow.text_hash.in_(part)))
    }


def vector_bytes(vector: npt.NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_from_bytes(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


@dataclass(frozen=True, slots=True)
class StoredExample:
    id: int
    text: str
    route: str | None
    source: Source
    best_model: str | None
    embedding: bytes | None
    embedding_model: str | None
    tenant: str | None = None
    contains_pii: bool = False


#: The columns a StoredExample is made of, in its field order: `select(*STORED_COLUMNS)`.
STORED_COLUMNS = (
    ExampleRow.id,
    ExampleRow.text,
    ExampleRow.route,
    ExampleRow.source,
    ExampleRow.best_model,
    ExampleRow.embedding,
    ExampleRow.embedding_model,
    ExampleRow.tenant,
    ExampleRow.contains_pii,
)


def stored_examples(rows: Sequence[Row[*tuple[Any, ...]]]) -> list[StoredExample]:
    return [
        StoredExample(
            r.id,
            r.text,
            r.route,
            Source(r.source),
            r.best_model,
            r.embedding,
            r.embedding_model,
            r.tenant,
            bool(r.contains_pii),
        )
        for r in rows
    ]


def pii_example_ids(session: Session, namespace_id: int) -> list[int]:
    """The namespace's examples marked `contains_pii`, for an index whose facts lack marks."""
    return list(
        session.scalars(
            select(ExampleRow.id).where(
                ExampleRow.namespace_id == namespace_id, ExampleRow.contains_pii.is_(True)
            )
        )
    )


def iter_examples(
    session: Session, namespace_id: int, after_id: int = 0, batch: int = 5000
) -> Iterator[list[StoredExample]]:
    """Every example of a namespace in id order, in batches (keyset paging, no OFFSET)."""
    last = after_id
    while True:
        rows = session.execute(
            select(*STORED_COLUMNS)
            .where(ExampleRow.namespace_id == namespace_id, ExampleRow.id > last)
            .order_by(ExampleRow.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield stored_examples(rows)
        last = rows[-1].id


def count_examples(session: Session, namespace_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ExampleRow)
            .where(ExampleRow.namespace_id == namespace_id)
        )
        or 0
    )


def outcome_means(
    session: Session, example_ids: list[int] | None = None, namespace_id: int | None = None
) -> dict[int, list[tuple[str, float, int]]]:
    """example id → [(model, mean quality, count)] from the outcomes table."""
    query = select(
        OutcomeRow.example_id,
        OutcomeRow.model,
        func.avg(OutcomeRow.quality),
        func.count(OutcomeRow.id),
    ).group_by(OutcomeRow.example_id, OutcomeRow.model)
    if namespace_id is not None:
        query = query.join(ExampleRow, ExampleRow.id == OutcomeRow.example_id).where(
            ExampleRow.namespace_id == namespace_id
        )
    # Each example's rows fall in one chunk (the grouping is per example), so the parts merge.
    queries = (
        [query]
        if example_ids is None
        else [query.where(OutcomeRow.example_id.in_(part)) for part in in_chunks(example_ids)]
    )
    result: dict[int, list[tuple[str, float, int]]] = {}
    for part_query in queries:
        for example_id, model, mean, count in session.execute(part_query):
            result.setdefault(example_id, []).append((model, float(mean), int(count)))
    for entries in result.values():
        entries.sort()
    return result


def delete_examples(session: Session, namespace_id: int, ids: list[int]) -> list[int]:
    """Delete the namespace's examples among `ids`, leaving tombstones for replicas; returns
    the ids deleted. Their outcomes stay, detached: they no longer say anything about a
    query, but they are still what was spent (tenant budgets sum them). Any number of ids, in
    slices that fit one statement (PostgreSQL takes at most 65,535 parameters), in the caller's
    one transaction."""
    found: list[int] = []
    for chunk in in_chunks(ids):
        found += session.scalars(
            select(ExampleRow.id).where(
                ExampleRow.namespace_id == namespace_id, ExampleRow.id.in_(chunk)
            )
        )
    for chunk in in_chunks(found):
        session.execute(
            update(OutcomeRow).where(OutcomeRow.example_id.in_(chunk)).values(example_id=None)
        )
        session.execute(delete(ExampleRow).where(ExampleRow.id.in_(chunk)))
    session.add_all(TombstoneRow(namespace_id=namespace_id, example_id=i) for i in found)
    return found


def relabel_reference(
    session: Session,
    existing: ExampleRow,
    route: str | None,
    best_model: str | None,
    origin: str,
) -> ExampleRow:
    """Change a reference example's label in place, so it keeps its id: the id a client got
    from the first upsert still deletes it. Its text, hence its vector, stays; a tombstone of
    the id tells replicas, which follow new ids and tombstones, to read the example again.
    The example now belongs to whoever relabelled it (`origin`).

    A row another writer deleted since `existing` was read (on PostgreSQL such a delete does
    not wait for this transaction) is added again under a new id, as a new text would be."""
    relabelled = session.execute(
        update(ExampleRow)
        .where(ExampleRow.id == existing.id)
        .values(route=route, best_model=best_model, origin=origin)
    )
    if relabelled.rowcount == 1:  # type: ignore[attr-defined]
        session.add(TombstoneRow(namespace_id=existing.namespace_id, example_id=existing.id))
        return existing
    fresh = ExampleRow(
        namespace_id=existing.namespace_id,
        text=existing.text,
        text_hash=existing.text_hash,
        route=route,
        source=Source.REFERENCE.value,
        best_model=best_model,
        origin=origin,
        embedding=existing.embedding,
        embedding_model=existing.embedding_model,
    )
    session.add(fresh)
    session.flush()
    return fresh


@dataclass(frozen=True, slots=True)
class ExampleFilter:
    source: Source | None = None
    model: str | None = None
    text_prefix: str | None = None
    route: str | None = None


def list_examples(
    session: Session, namespace_id: int, flt: ExampleFilter, after_id: int, limit: int
) -> list[ExampleRow]:
    """A page of examples in id order after `after_id` (keyset paging)."""
    query = select(ExampleRow).where(
        ExampleRow.namespace_id == namespace_id, ExampleRow.id > after_id
    )
    if flt.source is not None:
        query = query.where(ExampleRow.source == flt.source.value)
    if flt.route:
        query = query.where(ExampleRow.route == flt.route)
    if flt.text_prefix:
        # Not LIKE: SQLite's ignores case, PostgreSQL's does not, so one filter answered
        # differently on the two stores. A prefix compare is exact on both.
        prefix = flt.text_prefix
        query = query.where(func.substr(ExampleRow.text, 1, len(prefix)) == prefix)
    if flt.model:
        with_outcome = select(OutcomeRow.example_id).where(OutcomeRow.model == flt.model)
        query = query.where((ExampleRow.best_model == flt.model) | ExampleRow.id.in_(with_outcome))
    return list(session.scalars(query.order_by(ExampleRow.id).limit(limit)))


def count_by(session: Session, namespace_id: int, column: str) -> dict[str, int]:
    col = ExampleRow.source if column == "source" else ExampleRow.best_model
    rows = session.execute(
        select(col, func.count())
        .where(ExampleRow.namespace_id == namespace_id, col.is_not(None))
        .group_by(col)
    )
    return {str(k): int(n) for k, n in rows}


def outcome_counts(session: Session, namespace_id: int) -> dict[str, int]:
    rows = session.execute(
        select(OutcomeRow.model, func.count())
        .join(ExampleRow, ExampleRow.id == OutcomeRow.example_id)
        .where(ExampleRow.namespace_id == namespace_id)
        .group_by(OutcomeRow.model)
    )
    return {str(k): int(n) for k, n in rows}
