"""Examples: reference (admin-labelled) and history (learned from outcomes) queries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from routebook.domain import Source
from routebook.store.tables import ExampleRow, OutcomeRow


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


def reference_examples_by_hash(session: Session, namespace_id: int) -> dict[str, ExampleRow]:
    rows = session.scalars(
        select(ExampleRow).where(
            ExampleRow.namespace_id == namespace_id,
            ExampleRow.source == Source.REFERENCE.value,
        )
    )
    return {r.text_hash: r for r in rows}


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


def iter_examples(
    session: Session, namespace_id: int, after_id: int = 0, batch: int = 5000
) -> Iterator[list[StoredExample]]:
    """Every example of a namespace in id order, in batches (keyset paging, no OFFSET)."""
    last = after_id
    while True:
        rows = session.execute(
            select(
                ExampleRow.id,
                ExampleRow.text,
                ExampleRow.route,
                ExampleRow.source,
                ExampleRow.best_model,
                ExampleRow.embedding,
                ExampleRow.embedding_model,
            )
            .where(ExampleRow.namespace_id == namespace_id, ExampleRow.id > last)
            .order_by(ExampleRow.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield [
            StoredExample(
                r.id,
                r.text,
                r.route,
                Source(r.source),
                r.best_model,
                r.embedding,
                r.embedding_model,
            )
            for r in rows
        ]
        last = rows[-1].id


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
    if example_ids is not None:
        query = query.where(OutcomeRow.example_id.in_(example_ids))
    if namespace_id is not None:
        query = query.join(ExampleRow, ExampleRow.id == OutcomeRow.example_id).where(
            ExampleRow.namespace_id == namespace_id
        )
    result: dict[int, list[tuple[str, float, int]]] = {}
    for example_id, model, mean, count in session.execute(query):
        result.setdefault(example_id, []).append((model, float(mean), int(count)))
    for entries in result.values():
        entries.sort()
    return result
