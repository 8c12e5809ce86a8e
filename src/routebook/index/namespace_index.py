"""One namespace's inner-product index, keyed by example id, with the examples' facts.

FAISS holds the vectors; a columnar `FactsTable` beside it holds what Decide shows as evidence,
so answering a query touches no database. A lock makes add, remove and search safe from many
threads.

The FAISS index is flat (exact), HNSW or IVF (see `kinds`). Flat and IVF label vectors with
example ids and remove them for real. HNSW cannot remove, so its vectors are labelled with their
insertion row and a removed or replaced example's row goes into a tombstone set that search
skips; a rebuild (a new generation) sheds the tombstones.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from routebook.domain import ExampleFacts, Neighbour
from routebook.index.facts_table import FactsColumns, FactsTable
from routebook.index.kinds import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    IndexKind,
    SearchParams,
    apply_params,
    choose_kind,
    concrete_index,
    kind_of,
    new_flat,
    new_hnsw,
    new_ivf,
    parse_kind,
)

__all__ = ["IndexKind", "IndexState", "NamespaceIndex", "SearchParams", "choose_kind"]

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

#: Removed ids an index remembers (the newest ones): a writer that read an example before its
#: deletion takes milliseconds to index it, so this bounds memory with a wide margin.
REMEMBER_REMOVED = 65_536


def training_sample(count: int, limit: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """Positions of the examples a head trains on, in order: all of them up to `limit`, a
    seeded sample beyond (the evaluation jobs draw the same one as `serve`)."""
    if count <= limit:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=limit, replace=False)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class IndexState:
    """A self-consistent copy of an index (taken under its lock), for snapshots.

    `labels[r]` is the FAISS label of the example in row r of `facts`: the example id for flat
    and IVF, the insertion row for HNSW (rows no example claims are tombstones).
    """

    dim: int
    kind: IndexKind
    generation: int
    faiss_bytes: npt.NDArray[np.uint8]
    facts: FactsColumns
    labels: npt.NDArray[np.int64]


class NamespaceIndex:
    """Examples of one namespace, searchable by similarity.

    `NamespaceIndex(dim)` is an empty exact index that grows with `add`; `NamespaceIndex.build`
    makes any kind from a full set of examples at once (IVF needs them to train).
    """

    def __init__(
        self,
        dim: int,
        generation: int = 1,
        *,
        kind: IndexKind | str = IndexKind.FLAT,
        ef_search: int = DEFAULT_EF_SEARCH,
        nprobe: int = DEFAULT_NPROBE,
    ) -> None:
        kind = parse_kind(kind)
        if kind is IndexKind.IVF:
            raise ValueError(
                "an IVF index must be trained on its vectors: use NamespaceIndex.build"
            )
        index = new_hnsw(dim) if kind is IndexKind.HNSW else new_flat(dim)
        self._setup(dim, kind, index, SearchParams(ef_search, nprobe), generation)

    def _setup(
        self,
        dim: int,
        kind: IndexKind,
        index: faiss.Index,
        params: SearchParams,
        generation: int,
    ) -> None:
        apply_params(index, kind, params)
        # Ids removed lately (ids are never reused): `add_new` refuses them, so a writer that
        # read an example before its deletion cannot put it back after the removal.
        self._removed: OrderedDict[int, None] = OrderedDict()
        self._dim = dim
        self._kind = kind
        self._params = params
        self._index = index
        self._version = 0  # changes since made: adds, removals, fact updates
        self._facts = FactsTable()
        # HNSW only: row → example id (-1 once dead), example id → live row, dead rows.
        self._row_ids: list[int] = []
        self._row_of: dict[int, int] = {}
        self._dead: set[int] = set()
        self._lock = threading.Lock()
        self.generation = generation

    @classmethod
    def build(
        cls,
        dim: int,
        kind: IndexKind | str,
        facts: Sequence[ExampleFacts],
        vectors: Vectors,
        generation: int = 1,
        *,
        ef_search: int = DEFAULT_EF_SEARCH,
        nprobe: int = DEFAULT_NPROBE,
    ) -> NamespaceIndex:
        """An index of `kind` holding `facts`; IVF is trained on `vectors` first.

        With too few vectors to train IVF the result is flat, and its `kind` says so.
        """
        kind = parse_kind(kind)
        facts, vectors = _check_batch(dim, facts, vectors)
        params = SearchParams(ef_search, nprobe)
        if kind is not IndexKind.IVF:
            built = cls(dim, generation, kind=kind, ef_search=ef_search, nprobe=nprobe)
        else:
            ivf = new_ivf(vectors)
            if ivf is None:
                log.info("%d vectors are too few to train IVF; building a flat index", len(facts))
                built = cls(dim, generation, ef_search=ef_search, nprobe=nprobe)
            else:
                built = cls.__new__(cls)
                built._setup(dim, IndexKind.IVF, ivf, params, generation)
        built._add_checked(facts, vectors)
        return built

    @classmethod
    def from_state(cls, state: IndexState, params: SearchParams | None = None) -> NamespaceIndex:
        """Recreate an index from `export_state`'s copy; ValueError if the copy is inconsistent."""
        return cls.from_parts(
            faiss.deserialize_index(state.faiss_bytes),
            dim=state.dim,
            kind=state.kind,
            generation=state.generation,
            facts=state.facts,
            labels=state.labels,
            params=params,
        )

    @classmethod
    def from_parts(
        cls,
        index: faiss.Index,
        *,
        dim: int,
        kind: IndexKind,
        generation: int,
        facts: FactsColumns,
        labels: npt.NDArray[np.int64],
        params: SearchParams | None = None,
    ) -> NamespaceIndex:
        """An index around an already read FAISS index (a snapshot's, read straight from its
        file); ValueError if the parts do not fit together."""
        if int(index.d) != dim:
            raise ValueError(f"the FAISS index has dimension {index.d}, expected {dim}")
        if kind_of(index) is not kind:
            raise ValueError(f"the FAISS index is {kind_of(index)}, expected {kind}")
        restored = cls.__new__(cls)
        restored._setup(dim, kind, index, params or SearchParams(), generation)
        restored._restore_labels(facts, labels)
        return restored

    def _restore_labels(self, packed: FactsColumns, labels: npt.NDArray[np.int64]) -> None:
        self._facts = FactsTable(packed)  # ValueError for repeated ids or ill-fitting columns
        ids = packed.columns["example_id"]
        total = int(self._index.ntotal)
        if len(labels) != len(ids):
            raise ValueError(f"{len(labels)} FAISS labels for {len(ids)} facts")
        if self._kind is IndexKind.HNSW:
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= total):
                raise ValueError("an HNSW row is out of range")
            if len(np.unique(labels)) != len(labels):
                raise ValueError("an HNSW row is claimed twice")
            row_ids = np.full(total, -1, dtype=np.int64)
            row_ids[labels] = ids
            self._row_ids = row_ids.tolist()
            self._row_of = dict(zip(ids.tolist(), labels.tolist(), strict=True))
            self._dead = set(np.flatnonzero(row_ids < 0).tolist())
            return
        if not np.array_equal(labels, ids):
            raise ValueError("an example is labelled with another id")
        if total != len(ids):
            raise ValueError(f"the FAISS index holds {total} vectors for {len(ids)} facts")
        if self._kind is IndexKind.FLAT:
            faiss_ids = faiss.vector_to_array(concrete_index(self._index).id_map)
            if not np.array_equal(np.sort(faiss_ids), np.sort(ids)):
                raise ValueError("the FAISS ids differ from the facts' example ids")

    def export_state(self) -> IndexState:
        with self._lock:
            packed = self._facts.packed()
            ids = packed.columns["example_id"]
            if self._kind is IndexKind.HNSW:
                labels = np.fromiter(
                    map(self._row_of.__getitem__, ids.tolist()), np.int64, len(ids)
                )
            else:
                labels = ids.copy()
            return IndexState(
                dim=self._dim,
                kind=self._kind,
                generation=self.generation,
                faiss_bytes=faiss.serialize_index(self._index),
                facts=packed,
                labels=labels,
            )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> IndexKind:
        """The kind actually built (flat when IVF was asked for with too little data)."""
        return self._kind

    @property
    def params(self) -> SearchParams:
        return self._params

    @property
    def tombstones(self) -> int:
        """Dead HNSW vectors still in the graph; a high count is a reason to rebuild."""
        with self._lock:
            return len(self._dead)

    def __len__(self) -> int:
        with self._lock:
            return len(self._facts)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._facts

    def all_facts(self) -> list[ExampleFacts]:
        """A copy of every example's facts, for checks against the store."""
        with self._lock:
            return list(self._facts)

    def add(self, facts: Sequence[ExampleFacts], vectors: Vectors) -> None:
        """Add examples; an id already present is replaced (its vector and facts)."""
        facts, vectors = _check_batch(self._dim, facts, vectors)
        self._add_checked(facts, vectors)

    def add_new(self, facts: Sequence[ExampleFacts], vectors: Vectors) -> list[int]:
        """Add the examples not in the index yet, in one step under the lock; returns the ids
        not added: already there (another writer got there first) or removed lately (deleted
        after the caller read them)."""
        facts, vectors = _check_batch(self._dim, facts, vectors)
        with self._lock:
            new = [
                i
                for i, f in enumerate(facts)
                if f.example_id not in self._facts and f.example_id not in self._removed
            ]
            self._add_locked([facts[i] for i in new], vectors[new])
        added = {facts[i].example_id for i in new}
        return [f.example_id for f in facts if f.example_id not in added]

    def _add_checked(self, facts: Sequence[ExampleFacts], vectors: Vectors) -> None:
        with self._lock:
            self._add_locked(facts, vectors)

    def _add_locked(self, facts: Sequence[ExampleFacts], vectors: Vectors) -> None:
        if len(facts) == 0:
            return
        ids = np.fromiter((f.example_id for f in facts), dtype=np.int64, count=len(facts))
        self._drop([i for i in ids.tolist() if i in self._facts])
        if self._kind is IndexKind.HNSW:
            first_row = int(self._index.ntotal)
            self._index.add(vectors)
            for offset, example_id in enumerate(ids.tolist()):
                self._row_ids.append(example_id)
                self._row_of[example_id] = first_row + offset
        else:
            self._index.add_with_ids(vectors, ids)
        self._facts.put(facts)
        self._version += len(facts)

    def remove(self, example_ids: Iterable[int]) -> int:
        """Remove examples by id; returns how many were present (absent ids are ignored, but
        remembered: an example deleted before a writer indexed it stays out)."""
        example_ids = list(example_ids)
        with self._lock:
            for example_id in example_ids:
                self._removed[example_id] = None
                self._removed.move_to_end(example_id)
            while len(self._removed) > REMEMBER_REMOVED:
                self._removed.popitem(last=False)
            present = [i for i in dict.fromkeys(example_ids) if i in self._facts]
            self._drop(present)
            self._facts.remove(present)
            self._version += len(present)
            return len(present)

    def inherit_removed(self, previous: NamespaceIndex) -> None:
        """Remember the ids `previous` removed lately as if removed here (before this index's
        own removals), so `add_new` refuses them too.

        For an index that replaces `previous`: one loaded from a snapshot taken after a
        delete never removes that example itself, so without this a writer that committed
        before the delete could put the example back into the new generation.
        """
        with previous._lock:
            carried = list(previous._removed)
        with self._lock:
            merged: OrderedDict[int, None] = OrderedDict.fromkeys(carried)
            for example_id in self._removed:
                merged[example_id] = None
                merged.move_to_end(example_id)
            while len(merged) > REMEMBER_REMOVED:
                merged.popitem(last=False)
            self._removed = merged

    def _drop(self, example_ids: list[int]) -> None:
        """Take the vectors of present `example_ids` out of FAISS (or tombstone them). Locked."""
        if not example_ids:
            return
        if self._kind is IndexKind.HNSW:
            for example_id in example_ids:
                row = self._row_of.pop(example_id)
                self._row_ids[row] = -1
                self._dead.add(row)
        else:
            self._index.remove_ids(np.asarray(example_ids, dtype=np.int64))  # type: ignore[arg-type]

    def revise_facts(
        self, example_id: int, revise: Callable[[ExampleFacts], ExampleFacts | None]
    ) -> bool:
        """Replace an example's facts with `revise(current)` (None keeps them), reading and
        writing under one lock so a concurrent remove or update cannot come in between.
        False when the example is not in the index."""
        with self._lock:
            if example_id not in self._facts:
                return False
            revised = revise(self._facts.get(example_id))
            if revised is not None:
                self._facts.put([revised])
                self._version += 1
            return True

    def update_facts(self, facts: ExampleFacts) -> None:
        """Replace what is known of an indexed example (e.g. a new outcome) without re-adding it."""
        if not self.revise_facts(facts.example_id, lambda _current: facts):
            raise KeyError(facts.example_id)

    @property
    def version(self) -> int:
        """How many changes (examples added or removed, facts updated) since it was made; a
        namespace's learned head is retrained once enough have piled up."""
        return self._version

    def training_data(self, limit: int, seed: int = 0) -> tuple[Vectors, list[ExampleFacts]]:
        """Live examples' vectors (as stored) and facts, a seeded sample of `limit` beyond it:
        what a learned head trains on, read from the index so it sees what the neighbours see."""
        with self._lock:
            ids, read = self._stored_vectors()
            positions = training_sample(len(ids), limit, seed)
            vectors = read(positions) if len(positions) else np.zeros((0, self._dim), np.float32)
            return vectors, self._facts.get_many(ids[positions].tolist())

    def _stored_vectors(
        self,
    ) -> tuple[npt.NDArray[np.int64], Callable[[npt.NDArray[np.int64]], Vectors]]:
        """Every live example id, and a reader of the vectors at chosen positions. Locked."""
        concrete = concrete_index(self._index)
        total = int(concrete.ntotal)
        if self._kind is IndexKind.FLAT:
            ids = faiss.vector_to_array(concrete.id_map).astype(np.int64)

            def read_flat(positions: npt.NDArray[np.int64]) -> Vectors:
                stored = concrete_index(concrete.index).reconstruct_n(0, total)
                return np.ascontiguousarray(stored[positions], dtype=np.float32)

            return ids, read_flat
        if self._kind is IndexKind.HNSW:
            rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(self._row_of))
            ids = np.array([self._row_ids[r] for r in rows.tolist()], dtype=np.int64)

            def read_hnsw(positions: npt.NDArray[np.int64]) -> Vectors:
                storage = concrete_index(concrete.storage)
                stored = faiss.rev_swig_ptr(storage.get_xb(), total * self._dim)
                return np.array(stored.reshape(total, -1)[rows[positions]], dtype=np.float32)

            return ids, read_hnsw
        # IVF: ids live in the inverted lists; vectors are decoded from their list and offset.
        lists = concrete.invlists
        sizes = np.array([lists.list_size(n) for n in range(int(concrete.nlist))], np.int64)
        found = [
            faiss.rev_swig_ptr(lists.get_ids(n), int(size)).astype(np.int64)
            for n, size in enumerate(sizes.tolist())
            if size
        ]
        ids = np.concatenate(found) if found else np.zeros(0, np.int64)
        list_of = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        offset_of = np.arange(len(ids), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)

        def read_ivf(positions: npt.NDArray[np.int64]) -> Vectors:
            out = np.empty((len(positions), self._dim), dtype=np.float32)
            for row, p in enumerate(positions.tolist()):
                concrete.reconstruct_from_offset(
                    int(list_of[p]), int(offset_of[p]), faiss.swig_ptr(out[row])
                )
            return out

        return ids, read_ivf

    def facts(self, example_id: int) -> ExampleFacts:
        with self._lock:
            return self._facts.get(example_id)

    def search(self, vector: Vectors, k: int) -> list[Neighbour]:
        """The k most similar examples, most similar first."""
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        with self._lock:
            live = len(self._facts)
            if live == 0 or k <= 0:
                return []
            if self._kind is not IndexKind.HNSW:
                sims, ids = self._index.search(query, min(k, live))
                pairs = zip(sims[0].tolist(), ids[0].tolist(), strict=True)
                return self._neighbours([(s, i) for s, i in pairs if i >= 0])
            return self._search_skipping_tombstones(query, min(k, live))

    def _search_skipping_tombstones(self, query: Vectors, k: int) -> list[Neighbour]:
        """HNSW search that asks for extra hits to make up for dead rows, widening if short.

        When even a search for every row comes back short (the graph walk does not reach every
        node, which matters once most of them are tombstones), the live rows are scored
        exactly instead.
        """
        total = int(self._index.ntotal)
        dead = len(self._dead)
        # Expect dead rows among the hits in proportion to their share of the graph.
        fetch = min(total, k + min(dead, math.ceil(k * dead / (total - dead)) + 8))
        while True:
            sims, rows = self._index.search(query, fetch)
            found = self._neighbours(
                [
                    (s, self._row_ids[row])
                    for s, row in zip(sims[0].tolist(), rows[0].tolist(), strict=True)
                    if row >= 0 and row not in self._dead
                ]
            )
            if len(found) >= k:
                return found[:k]
            if fetch >= total:
                return self._exact_over_live(query, k)
            fetch = min(total, fetch * 2)

    def _exact_over_live(self, query: Vectors, k: int) -> list[Neighbour]:
        total = int(self._index.ntotal)
        storage = concrete_index(concrete_index(self._index).storage)
        stored = faiss.rev_swig_ptr(storage.get_xb(), total * self._dim).reshape(total, -1)
        rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(self._row_of))
        sims = stored[rows] @ query[0]
        best = np.argsort(-sims, kind="stable")[:k]
        return self._neighbours([(float(sims[i]), self._row_ids[int(rows[i])]) for i in best])

    def _neighbours(self, hits: list[tuple[float, int]]) -> list[Neighbour]:
        """(similarity, example id) pairs as neighbours with their facts, in the same order."""
        facts = self._facts.get_many([example_id for _, example_id in hits])
        return [Neighbour(facts=f, similarity=s) for (s, _), f in zip(hits, facts, strict=True)]


def _check_batch(
    dim: int, facts: Sequence[ExampleFacts], vectors: Vectors
) -> tuple[Sequence[ExampleFacts], Vectors]:
    """The batch as float32 rows of `dim`, with only the last of any repeated id."""
    if len(facts) != len(vectors):
        raise ValueError(f"{len(facts)} examples but {len(vectors)} vectors")
    if len(facts) == 0:
        return facts, np.zeros((0, dim), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors have shape {vectors.shape}, expected (n, {dim})")
    last_of: dict[int, int] = {f.example_id: row for row, f in enumerate(facts)}
    if len(last_of) < len(facts):  # an id repeated within the batch: the last one wins
        rows = sorted(last_of.values())
        facts = [facts[row] for row in rows]
        vectors = vectors[rows]
    return facts, np.ascontiguousarray(vectors, dtype=np.float32)
