"""Building a namespace's index from the store: the store is the truth, the index a copy.

Vectors cached in the store by the same embedding model are reused; the rest are embedded in
batches and written back, so the next start is cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sqlalchemy import update

from routebook.domain import ExampleFacts, ObservedOutcome
from routebook.embed import Embedder
from routebook.index import IndexRegistry, NamespaceIndex
from routebook.store import examples as ex_store
from routebook.store.db import Store
from routebook.store.tables import ExampleRow

EMBED_BATCH = 256

Progress = Callable[[int], None]


def facts_of(
    example: ex_store.StoredExample, outcomes: list[tuple[str, float, int]] | None
) -> ExampleFacts:
    return ExampleFacts(
        example_id=example.id,
        text=example.text,
        route=example.route,
        source=example.source,
        best_model=example.best_model,
        outcomes=tuple(ObservedOutcome(m, q, c) for m, q, c in (outcomes or [])),
    )


class IndexMaintainer:
    def __init__(self, store: Store, embedder: Embedder, registry: IndexRegistry) -> None:
        self._store = store
        self._embedder = embedder
        self._registry = registry

    def rebuild(self, namespace: str, namespace_id: int, progress: Progress | None = None) -> int:
        """Build a fresh index off to the side, then swap it in; returns its size."""
        index = NamespaceIndex(self._embedder.dim)
        with self._store.read() as session:
            outcomes = ex_store.outcome_means(session, namespace_id=namespace_id)
            batches = list(ex_store.iter_examples(session, namespace_id))
        for batch in batches:
            vectors = self._vectors(batch)
            index.add([facts_of(e, outcomes.get(e.id)) for e in batch], vectors)
            if progress is not None:
                progress(len(batch))
        self._registry.swap(namespace, index)
        return len(index)

    def _vectors(self, batch: list[ex_store.StoredExample]) -> np.ndarray:
        model_id = self._embedder.model_id
        vectors = np.zeros((len(batch), self._embedder.dim), dtype=np.float32)
        missing = []
        for row, example in enumerate(batch):
            if example.embedding is not None and example.embedding_model == model_id:
                vectors[row] = ex_store.vector_from_bytes(example.embedding)
            else:
                missing.append(row)
        for start in range(0, len(missing), EMBED_BATCH):
            rows = missing[start : start + EMBED_BATCH]
            fresh = self._embedder.embed([batch[r].text for r in rows])
            vectors[rows] = fresh
            with self._store.write() as session:
                session.execute(
                    update(ExampleRow),
                    [
                        {
                            "id": batch[r].id,
                            "embedding": ex_store.vector_bytes(v),
                            "embedding_model": model_id,
                        }
                        for r, v in zip(rows, fresh, strict=True)
                    ],
                )
        return vectors
