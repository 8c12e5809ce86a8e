"""Keeping this server's indexes equal to the store, so replicas agree within about a second.

Every `interval` the follower:
- refreshes namespaces and catalogs (a catalog change on one replica reaches all);
- loads the index of a namespace it has not seen (newest snapshot, else built from the store);
- swaps to a newer published generation (a reindex elsewhere) once it has loaded and caught up;
  a snapshot it cannot read (missing on this host, damaged, another store's) is tried again
  for a few ticks, then that generation is built from the store, of the kind the reindex chose;
- catches up each index past its marks: new examples by id, tombstones (deletions, and
  relabels in place: a tombstoned example still in the store is read again), outcomes.

Writes made through this server call `catch_up` at once, so its own next Decide sees them.
While the store fails, the follower backs off (service/backoff.py) and logs one line a try.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from routebook.domain import ExampleFacts, ObservedOutcome
from routebook.embed import Embedder
from routebook.errors import ConfigError
from routebook.index import IndexRegistry, NamespaceIndex
from routebook.index.snapshot import (
    MARKS_PII_FROM,
    Expected,
    SnapshotCorrupt,
    SnapshotForeign,
    SnapshotMismatch,
    load_snapshot,
)
from routebook.service.backoff import FailureStreak
from routebook.service.indexing import IndexBuilder, facts_of
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.store import examples as ex_store
from routebook.store import follow
from routebook.store.db import Store
from routebook.store.identity import store_id
from routebook.store.tables import IndexGenerationRow

log = logging.getLogger("routebook.follower")

#: Examples read at once when catching up (their vectors come with them).
CATCH_UP_BATCH = 1000

#: Ticks in a row a published snapshot that cannot be read is tried again (a shared folder
#: that lags behind, a copy still on its way) before its generation is built from the store.
SNAPSHOT_READ_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Published:
    generation: int
    snapshot_path: str
    embedding_model: str
    #: The index kind the reindex built; a server building the generation itself uses it too.
    kind: str
    examples: int
    marks: follow.Marks
    namespace_id: int

    def expected(self, store: str) -> Expected:
        """What this row says its snapshot holds, for `load_snapshot` to check it against."""
        return Expected(
            store_id=store,
            generation=self.generation,
            high_water_example_id=self.marks.example,
            high_water_outcome_id=self.marks.outcome,
            high_water_tombstone_id=self.marks.tombstone,
            count=self.examples,
        )


def published_generations(
    store: Store, namespace_id: int, limit: int | None = None
) -> list[Published]:
    """The namespace's published generations, newest first (at most `limit`)."""
    with store.read() as session:
        rows = session.scalars(
            select(IndexGenerationRow)
            .where(IndexGenerationRow.namespace_id == namespace_id)
            .order_by(IndexGenerationRow.generation.desc())
            .limit(limit)
        )
        return [
            Published(
                row.generation,
                row.snapshot_path,
                row.embedding_model,
                row.kind,
                row.examples,
                follow.Marks(
                    row.high_water_example_id,
                    row.high_water_outcome_id,
                    row.high_water_tombstone_id,
                    row.high_water_xact,
                ),
                namespace_id,
            )
            for row in rows
        ]


def latest_published(store: Store, namespace_id: int) -> Published | None:
    newest = published_generations(store, namespace_id, limit=1)
    return newest[0] if newest else None


class StoreFollower:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        registry: IndexRegistry,
        directory: NamespaceDirectory,
        builder: IndexBuilder,
        interval: float,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._registry = registry
        self._directory = directory
        self._builder = builder
        self._interval = interval
        self._marks: dict[str, follow.Marks] = {}
        #: Namespaces failing tick after tick (the others still follow), for the log.
        self._namespace_failures: dict[str, FailureStreak] = {}
        # Per namespace: outcome ids past its outcome mark already applied to its index.
        self._seen_outcomes: dict[str, frozenset[int]] = {}
        # (namespace id, generation) pairs whose snapshot another embedding model made: not
        # tried again (this server keeps its generation until it runs that model).
        self._refused: set[tuple[int, int]] = set()
        # (namespace id, generation) → failed reads of its snapshot so far.
        self._unreadable: dict[tuple[int, int], int] = {}
        self._store_id: str | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loading --------------------------------------------------------------------------

    def is_loaded(self, namespace: str) -> bool:
        with self._lock:
            return namespace in self._marks

    def load(self, info: NamespaceInfo, *, strict: bool = True) -> NamespaceIndex:
        """Install the namespace's index: the newest snapshot if there is one, else built from
        the store; then catch up. With `strict`, a snapshot of another embedding model is an
        error; otherwise it is logged and the index is built from the store.

        A snapshot that is missing, damaged or not the one the store published (another
        store's) is logged, and the index built from the store, of the published kind."""
        with self._lock:
            published = latest_published(self._store, info.id)
            index: NamespaceIndex | None = None
            marks = follow.Marks()
            if published is not None and not Path(published.snapshot_path).exists():
                log.warning(
                    "namespace %s: no snapshot at %s (replicas need the snapshot folder at "
                    "the same path as the server that reindexed); building from the store",
                    info.name,
                    published.snapshot_path,
                )
            elif published is not None:
                try:
                    index = self._read_snapshot(published)
                    marks = published.marks
                except (FileNotFoundError, SnapshotCorrupt) as exc:
                    # FileNotFoundError: pruned since the check above (a newer generation
                    # was published meanwhile, and this one was two behind).
                    log.error("namespace %s: %s; building from the store", info.name, exc)
                except SnapshotMismatch as exc:
                    if strict:
                        raise ConfigError(
                            f"namespace {info.name!r}: {exc}; run `routebook reindex` with the "
                            "configured model, or configure the snapshot's model"
                        ) from None
                    log.error("namespace %s: %s; building from the store", info.name, exc)
            if index is None:
                built = self._builder.build(
                    info.id, kind=published.kind if published is not None else None
                )
                index, marks = built.index, built.marks
                index.generation = published.generation if published is not None else 0
            self._install(info.name, index, marks)
            self.catch_up(info)
            return index

    def _install(
        self,
        namespace: str,
        index: NamespaceIndex,
        marks: follow.Marks,
        seen: frozenset[int] = frozenset(),
    ) -> None:
        generation = index.generation
        self._registry.swap(namespace, index)
        index.generation = generation  # the published generation, not the swap count
        self._marks[namespace] = marks
        self._seen_outcomes[namespace] = seen

    def _read_snapshot(self, published: Published) -> NamespaceIndex:
        """The published snapshot, if it is the one the row describes (see `Expected`)."""
        if self._store_id is None:
            self._store_id = store_id(self._store)
        expected = published.expected(self._store_id)
        index, meta = load_snapshot(
            Path(published.snapshot_path),
            self._embedder.model_id,
            self._embedder.dim,
            expected=expected,
        )
        index.generation = published.generation
        if meta.format_version < MARKS_PII_FROM:
            # Written by a routebook that kept no PII marks in snapshots (possibly while a
            # newer one marked examples in the store, in a rolling upgrade): the store says
            # which examples are marked, before this index serves a snippet.
            with self._store.read() as session:
                marked = ex_store.pii_example_ids(session, published.namespace_id)
            for example_id in marked:
                index.revise_facts(example_id, _marked)
        return index

    def swap_to_published(self, info: NamespaceInfo) -> bool:
        """Load and swap in a generation newer than the serving one; False when none is.

        A snapshot this server cannot read is tried again on the next ticks; after
        SNAPSHOT_READ_ATTEMPTS failures (at once for another store's) the generation is built
        from the store instead, so every server serves it, of the kind its reindex chose."""
        published = latest_published(self._store, info.id)
        current = self._registry.get(info.name)
        if published is None or published.generation <= current.generation:
            return False
        key = (info.id, published.generation)
        if key in self._refused:
            return False
        try:
            index = self._read_snapshot(published)
            marks = published.marks
        except SnapshotMismatch as exc:
            self._refused.add(key)
            log.error(
                "namespace %s: not swapping to generation %d: %s",
                info.name,
                published.generation,
                exc,
            )
            return False
        except (FileNotFoundError, SnapshotCorrupt) as exc:
            failures = self._unreadable[key] = self._unreadable.get(key, 0) + 1
            if failures < SNAPSHOT_READ_ATTEMPTS and not isinstance(exc, SnapshotForeign):
                log.warning(
                    "namespace %s: cannot read the snapshot of generation %d (%s); trying "
                    "again next tick (%d of %d)",
                    info.name,
                    published.generation,
                    exc,
                    failures,
                    SNAPSHOT_READ_ATTEMPTS,
                )
                return False
            log.error(
                "namespace %s: cannot use the snapshot of generation %d: %s; building it from "
                "the store",
                info.name,
                published.generation,
                exc,
            )
            built = self._builder.build(info.id, kind=published.kind)
            index, marks = built.index, built.marks
            index.generation = published.generation
        self._unreadable.pop(key, None)
        with self._lock:
            # Catch the new index up before it serves, so no answer goes back in time.
            marks, seen = self._catch_up_index(info, index, marks, frozenset())
            self._install(info.name, index, marks, seen)
        log.info("namespace %s: now serving generation %d", info.name, published.generation)
        return True

    # -- catching up ----------------------------------------------------------------------

    def catch_up(self, info: NamespaceInfo) -> None:
        with self._lock:
            marks = self._marks.get(info.name)
            if marks is None:
                return
            seen = self._seen_outcomes.get(info.name, frozenset())
            index = self._registry.get(info.name)
            self._marks[info.name], self._seen_outcomes[info.name] = self._catch_up_index(
                info, index, marks, seen
            )

    def _catch_up_index(
        self,
        info: NamespaceInfo,
        index: NamespaceIndex,
        marks: follow.Marks,
        seen: frozenset[int],
    ) -> tuple[follow.Marks, frozenset[int]]:
        """Apply what the store has past `marks` to `index`, where `seen` are the outcome ids
        past `marks` already applied; returns the new marks and seen ids.

        On PostgreSQL rows of transactions still open at the last pass are read again, so most
        rows read are known already: only ids are read for those, and only an example not
        indexed or an outcome not seen costs real work.
        """
        with self._store.read() as session:
            # Taken first: whatever commits while this pass reads is past them.
            next_marks = follow.current_marks(session)
            # New examples (a row already indexed is skipped).
            ids = follow.example_ids_after(session, info.id, marks)
            unindexed = [i for i in ids if i not in index]
            for start in range(0, len(unindexed), CATCH_UP_BATCH):
                fresh = follow.examples_with_ids(session, unindexed[start : start + CATCH_UP_BATCH])
                if fresh:
                    means = ex_store.outcome_means(session, example_ids=[e.id for e in fresh])
                    vectors = self._builder.vectors_for(fresh)
                    index.add([facts_of(e, means.get(e.id)) for e in fresh], vectors)
            # Tombstones: an example deleted, or relabelled in place. One still in the store
            # is read again; the others leave (removing one already gone does nothing).
            tombstoned = list(
                dict.fromkeys(e for _, e in follow.tombstones_after(session, info.id, marks))
            )
            if tombstoned:
                kept = self._reread(session, index, tombstoned)
                index.remove([i for i in tombstoned if i not in kept])
            # New outcomes change what the examples' facts say.
            recent = follow.outcomes_after(session, info.id, marks)
            touched = sorted({e for o, e in recent if o not in seen})
            if touched:
                means = ex_store.outcome_means(session, example_ids=touched)
                for example_id in touched:
                    # One locked step: an example deleted meanwhile is simply skipped.
                    index.revise_facts(example_id, with_outcomes(means.get(example_id, [])))
        new_marks = follow.Marks(
            max(marks.example, next_marks.example),
            max(marks.outcome, next_marks.outcome),
            max(marks.tombstone, next_marks.tombstone),
            next_marks.xact_floor,
        )
        # The next pass reads a subset of what this one read (its marks are no lower), so the
        # outcomes seen now are all it needs to skip.
        return new_marks, frozenset(o for o, _ in recent)

    def _reread(self, session: Session, index: NamespaceIndex, ids: list[int]) -> set[int]:
        """Give the examples among `ids` still in the store (relabelled in place) their facts
        as stored now; returns their ids. Their text is unchanged, so an indexed one keeps its
        vector: only its facts are replaced, and only when they differ (on PostgreSQL a
        tombstone is read on every pass while an older transaction is open)."""
        stored = follow.examples_with_ids(session, ids)
        if not stored:
            return set()
        means = ex_store.outcome_means(session, example_ids=[e.id for e in stored])
        unindexed: list[tuple[ex_store.StoredExample, ExampleFacts]] = []
        for example in stored:
            facts = facts_of(example, means.get(example.id))
            if not index.revise_facts(example.id, to_facts(facts)):
                unindexed.append((example, facts))
        if unindexed:
            index.add(
                [facts for _, facts in unindexed],
                self._builder.vectors_for([example for example, _ in unindexed]),
            )
        return {e.id for e in stored}

    # -- the loop -------------------------------------------------------------------------

    def tick(self) -> None:
        for info in self._directory.refresh():
            try:
                self._follow(info)
            except OperationalError:
                raise  # the store is down: every namespace after this one would fail too
            except Exception as exc:
                # One namespace's failure (a bad snapshot file, a bug) must not stop the others
                # from following the store; this one is tried again next tick, and logged as
                # any repeated background failure (the traceback with the first in a row or a
                # new kind only: it used to be a traceback every tick).
                self._namespace_streak(info.name).failed(exc)
            else:
                streak = self._namespace_failures.pop(info.name, None)
                if streak is not None:
                    streak.succeeded()

    def _namespace_streak(self, name: str) -> FailureStreak:
        streak = self._namespace_failures.get(name)
        if streak is None:
            # Tried again every tick: the cap at the interval keeps "next try in" true.
            streak = FailureStreak(
                log, f"following namespace {name!r}", self._interval, cap=self._interval
            )
            self._namespace_failures[name] = streak
        return streak

    def _follow(self, info: NamespaceInfo) -> None:
        if info.name not in self._marks:
            self.load(info, strict=False)
        elif not self.swap_to_published(info):
            self.catch_up(info)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="store-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # A store outage must not kill the follower, nor flood the log: the traceback with the
        # first failure in a row (or a new kind), one line per try after, backing off to a few
        # seconds while failing (service/backoff.py); every interval again once healthy.
        streak = FailureStreak(log, "following the store", self._interval)
        while not self._stop.wait(streak.wait()):
            try:
                self.tick()
            except Exception as exc:
                streak.failed(exc)
            else:
                streak.succeeded()


def with_outcomes(means: list[tuple[str, float, int]]) -> Callable[[ExampleFacts], ExampleFacts]:
    """A revision that gives an example's facts these outcome means."""
    outcomes = tuple(ObservedOutcome(m, q, c) for m, q, c in means)
    return lambda facts: replace(facts, outcomes=outcomes)


def _marked(facts: ExampleFacts) -> ExampleFacts | None:
    return None if facts.contains_pii else replace(facts, contains_pii=True)


def to_facts(facts: ExampleFacts) -> Callable[[ExampleFacts], ExampleFacts | None]:
    """A revision that gives an example `facts`; none (its version unchanged) when it has
    them already."""
    return lambda current: None if current == facts else facts
