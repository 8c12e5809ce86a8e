"""Building a namespace's index from the store: the store is the truth, the index a copy.

Vectors cached in the store by the same embedding model are reused (unless a reindex asks to
re-embed everything); the rest are embedded in batches and written back, so the next start is
cheap. The marks taken before reading say where a follower must catch up from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, bindparam, update

from routebook.domain import ExampleFacts, ObservedOutcome
from routebook.embed import Embedder
from routebook.index import NamespaceIndex
from routebook.index.kinds import APPROXIMATE_ABOVE, choose_kind
from routebook.store import examples as ex_store
from routebook.store import follow
from routebook.store.db import Store
from routebook.store.tables import ExampleRow

EMBED_BATCH = 256

_EXAMPLES = cast(Table, ExampleRow.__table__)
_SAVE_VECTOR = (
    update(_EXAMPLES)
    .where(_EXAMPLES.c.id == bindparam("example_id"))
    .values(embedding=bindparam("embedding"), embedding_model=bindparam("embedding_model"))
)

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
        tenant=example.tenant,
        contains_pii=example.contains_pii,
    )


@dataclass(frozen=True, slots=True)
class BuiltIndex:
    index: NamespaceIndex
    marks: follow.Marks
    embedded: int


class IndexBuilder:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        approximate_above: int = APPROXIMATE_ABOVE,
        approximate_kind: str = "ivf",
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._approximate_above = approximate_above
        self._approximate_kind = approximate_kind

    @property
    def model_id(self) -> str:
        return self._embedder.model_id

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The model's vectors of `texts`, EMBED_BATCH at a time; nothing is stored."""
        vectors = np.zeros((len(texts), self._embedder.dim), dtype=np.float32)
        for start in range(0, len(texts), EMBED_BATCH):
            vectors[start : start + EMBED_BATCH] = self._embedder.embed(
                texts[start : start + EMBED_BATCH]
            )
        return vectors

    def count(self, namespace_id: int) -> int:
        with self._store.read() as session:
            return ex_store.count_examples(session, namespace_id)

    def build(
        self,
        namespace_id: int,
        *,
        kind: str | None = None,
        reembed: bool = False,
        progress: Progress | None = None,
    ) -> BuiltIndex:
        """A new index of every example of the namespace, off to the side (nothing is swapped)."""
        with self._store.read() as session:
            marks = follow.current_marks(session)
            outcomes = ex_store.outcome_means(session, namespace_id=namespace_id)
        facts: list[ExampleFacts] = []
        chunks: list[npt.NDArray[np.float32]] = []
        embedded = 0
        with self._store.read() as session:
            # Batches of EMBED_BATCH rows, so progress moves at the pace of the model.
            for batch in ex_store.iter_examples(session, namespace_id, batch=EMBED_BATCH):
                vectors, fresh = self._vectors(batch, reembed)
                embedded += fresh
                facts.extend(facts_of(e, outcomes.get(e.id)) for e in batch)
                chunks.append(vectors)
                if progress is not None:
                    progress(len(batch))
        vectors = (
            np.concatenate(chunks) if chunks else np.zeros((0, self._embedder.dim), np.float32)
        )
        index = NamespaceIndex.build(
            self._embedder.dim,
            kind or choose_kind(len(facts), self._approximate_above, self._approximate_kind),
            facts,
            vectors,
        )
        return BuiltIndex(index, marks, embedded)

    def vectors_for(self, batch: list[ex_store.StoredExample]) -> npt.NDArray[np.float32]:
        return self._vectors(batch, reembed=False)[0]

    def _vectors(
        self, batch: list[ex_store.StoredExample], reembed: bool
    ) -> tuple[npt.NDArray[np.float32], int]:
        model_id = self._embedder.model_id
        vectors = np.zeros((len(batch), self._embedder.dim), dtype=np.float32)
        missing = []
        for row, example in enumerate(batch):
            cached = example.embedding is not None and example.embedding_model == model_id
            if cached and not reembed:
                assert example.embedding is not None
                vectors[row] = ex_store.vector_from_bytes(example.embedding)
            else:
                missing.append(row)
        for start in range(0, len(missing), EMBED_BATCH):
            rows = missing[start : start + EMBED_BATCH]
            fresh = self.embed([batch[r].text for r in rows])
            vectors[rows] = fresh
            # A Core UPDATE per row, not the ORM's bulk update by primary key, which fails the
            # whole batch when one row was deleted meanwhile (a delete during a reindex, or
            # racing the catch-up after an upsert): that row needs no vector.
            with self._store.write() as session:
                session.execute(
                    _SAVE_VECTOR,
                    [
                        {
                            "example_id": batch[r].id,
                            "embedding": ex_store.vector_bytes(v),
                            "embedding_model": model_id,
                        }
                        for r, v in zip(rows, fresh, strict=True)
                    ],
                )
        return vectors, len(missing)
