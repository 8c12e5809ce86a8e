"""One namespace's exact inner-product index, keyed by example id, with the examples' facts.

FAISS holds the vectors; a dict beside it holds what Decide shows as evidence, so answering a
query touches no database. A lock makes add and search safe from many threads.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import faiss
import numpy as np
import numpy.typing as npt

from routebook.domain import ExampleFacts, Neighbour


class NamespaceIndex:
    def __init__(self, dim: int, generation: int = 1) -> None:
        self._dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._facts: dict[int, ExampleFacts] = {}
        self._lock = threading.Lock()
        self.generation = generation

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._facts

    def add(self, facts: Sequence[ExampleFacts], vectors: npt.NDArray[np.float32]) -> None:
        """Add examples; an id already present is replaced (its vector and facts)."""
        if len(facts) != len(vectors):
            raise ValueError(f"{len(facts)} examples but {len(vectors)} vectors")
        if len(facts) == 0:
            return
        last_of: dict[int, int] = {f.example_id: row for row, f in enumerate(facts)}
        if len(last_of) < len(facts):  # an id repeated within the batch: the last one wins
            rows = sorted(last_of.values())
            facts = [facts[row] for row in rows]
            vectors = vectors[rows]
        ids = np.fromiter((f.example_id for f in facts), dtype=np.int64, count=len(facts))
        with self._lock:
            present = [i for i in ids.tolist() if i in self._facts]
            if present:
                self._index.remove_ids(np.asarray(present, dtype=np.int64))  # type: ignore[arg-type]
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            for f in facts:
                self._facts[f.example_id] = f

    def update_facts(self, facts: ExampleFacts) -> None:
        """Replace what is known of an indexed example (e.g. a new outcome) without re-adding it."""
        with self._lock:
            if facts.example_id not in self._facts:
                raise KeyError(facts.example_id)
            self._facts[facts.example_id] = facts

    def facts(self, example_id: int) -> ExampleFacts:
        with self._lock:
            return self._facts[example_id]

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[Neighbour]:
        """The k most similar examples, most similar first."""
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        with self._lock:
            if self._index.ntotal == 0:
                return []
            similarities, ids = self._index.search(query, min(k, int(self._index.ntotal)))
            return [
                Neighbour(facts=self._facts[int(i)], similarity=float(s))
                for s, i in zip(similarities[0], ids[0], strict=True)
                if i >= 0
            ]
