"""Batch reindex: re-embed every example, build a new generation off to the side, write a
snapshot, then publish it in the store; every server (this one and the replicas) swaps to it
when its follower sees the published row.

Publishing is the last step and a single insert, so a reindex killed half-way leaves the
serving generation untouched, and running it again simply starts over.

Once published, the namespace's snapshots that no server can need any more are deleted
(`prune_generations`): every server loads the newest published generation, so only that one
and the one before it stay (a replica on any host may still be loading the one before: it
read the row before this publish). Older ones hold the text of examples deleted or expired
since, and nothing else would ever delete them. So a deleted text leaves the snapshot folder
at the second reindex after its delete.

A running job touches its row every `heartbeat_seconds`. One silent for `ABANDON_AFTER_BEATS`
of its own intervals is reported failed ("abandoned"): its process died, and it must not read
"running" forever nor block the next reindex. While a job is alive, another reindex of the
same namespace (or of every namespace) is refused: both would build the same generation
number into the same snapshot folder.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from routebook.embed import Embedder
from routebook.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RoutebookError,
)
from routebook.index.snapshot import (
    SnapshotMeta,
    prune_before,
    remove_published,
    save_snapshot,
    store_folder,
)
from routebook.service.follower import published_generations
from routebook.service.indexing import IndexBuilder
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.store.db import STORE_UNAVAILABLE, Store
from routebook.store.identity import store_id
from routebook.store.tables import (
    IndexGenerationRow,
    NamespaceRow,
    ReindexJobRow,
    as_utc,
    utcnow,
)

#: Waits between attempts to mark a failed job failed while the store is down (about a minute).
FINISH_RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)

log = logging.getLogger("routebook.reindex")

INDEX_KINDS = ("flat", "hnsw", "ivf")

#: Missed heartbeats after which a running job counts as abandoned.
ABANDON_AFTER_BEATS = 12


@dataclass(frozen=True, slots=True)
class PublishedIndex:
    """One index a job published: its kind may differ from the one asked for (IVF on too few
    vectors is flat), and the job's caller says so."""

    namespace: str
    generation: int
    kind: str
    examples: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    state: str
    namespace: str
    total: int
    done: int
    generation: int
    error: str
    #: What this process's `run` published; empty when read back from the store.
    published: tuple[PublishedIndex, ...] = ()


class Reindexer:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        directory: NamespaceDirectory,
        snapshot_dir: Path,
        approximate_above: int,
        approximate_kind: str = "ivf",
        *,
        heartbeat_seconds: float = 5.0,
    ) -> None:
        self._store = store
        self._heartbeat = heartbeat_seconds
        self._embedder = embedder
        self._directory = directory
        self._builder = IndexBuilder(store, embedder, approximate_above, approximate_kind)
        self._snapshot_dir = snapshot_dir

    def targets(self, namespace: str | None) -> list[NamespaceInfo]:
        self._directory.refresh()
        if namespace:
            return [self._directory.resolve(namespace)]
        return self._directory.all()

    def start(self, namespace: str | None, kind: str | None) -> str:
        """Create the job row; `run` does the work (here or in a thread). Refused while another
        live job rebuilds any of the same namespaces, or when the snapshots cannot be written
        (said now, not after re-embedding every example)."""
        if kind and kind not in INDEX_KINDS:
            raise InvalidArgument(f"index kind {kind!r}: use one of {', '.join(INDEX_KINDS)}")
        try:
            store_folder(self._snapshot_dir, store_id(self._store)).mkdir(
                parents=True, exist_ok=True
            )
        except OSError as exc:
            raise self._unwritable(exc) from None
        targets = self.targets(namespace)
        total = sum(self._builder.count(info.id) for info in targets)
        name = targets[0].name if namespace else ""
        job_id = uuid.uuid4().hex
        now = utcnow()
        with self._store.write() as session:
            # A write first: on PostgreSQL it locks the namespaces' rows, on SQLite it takes
            # the database's write lock, so two starts cannot both pass the check below.
            session.execute(
                update(NamespaceRow)
                .where(NamespaceRow.id.in_([info.id for info in targets]))
                .values(id=NamespaceRow.id)
            )
            for other in _running_jobs(session):
                if _silent_since(other, now) is not None:
                    continue  # abandoned: its process died; `status` reports it failed
                if not other.namespace or not name or other.namespace == name:
                    raise FailedPrecondition(
                        f"reindex job {other.id} of "
                        f"{repr(other.namespace) if other.namespace else 'every namespace'} "
                        f"is running ({other.done} of {other.total} examples done): wait for "
                        "it to finish (GetReindexJob), then start this one"
                    )
            session.add(
                ReindexJobRow(
                    id=job_id,
                    namespace=name,
                    state="running",
                    total=total,
                    done=0,
                    heartbeat_at=now,
                    heartbeat_seconds=self._heartbeat,
                )
            )
        return job_id

    def run(
        self,
        job_id: str,
        namespace: str | None,
        kind: str | None,
        progress: Callable[[int], None] | None = None,
        *,
        reembed: bool = True,
    ) -> JobStatus:
        """Rebuild and publish; `reembed=False` reuses vectors the store caches for this
        embedding model (e.g. to change only the index kind)."""
        done = 0
        generation = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            with self._store.write() as session:
                session.execute(
                    update(ReindexJobRow)
                    .where(ReindexJobRow.id == job_id)
                    .values(done=done, heartbeat_at=utcnow())
                )
            if progress is not None:
                progress(n)

        stop_beating = self._beat_in_background(job_id)
        published: list[PublishedIndex] = []
        try:
            try:
                for info in self.targets(namespace):
                    published.append(self._reindex_one(info, kind, advance, reembed))
                    # One generation per namespace: a job over every namespace has none of
                    # its own (it reported the last namespace's, as if it were every one's).
                    generation = published[-1].generation if namespace else 0
            except Exception as exc:
                # Recorded on the job and raised, not logged: the caller says it (the CLI's
                # error line; `run_in_background`'s log), and a log here printed it twice.
                error = str(exc) or type(exc).__name__
                if published:  # those namespaces serve their new generation all the same
                    done_ones = ", ".join(
                        f"{p.namespace} generation {p.generation}" for p in published
                    )
                    error += f" (already published: {done_ones})"
                self._record_end(job_id, "failed", 0, error)
                raise
            # Published: an outage now must not turn the job "failed", or someone re-embeds
            # everything for nothing; the end is written once the store is back.
            self._record_end(job_id, "succeeded", generation, "")
        finally:
            stop_beating()
        return replace(self.status(job_id), published=tuple(published))

    def _beat_in_background(self, job_id: str) -> Callable[[], None]:
        """Touch the job's row every heartbeat (building an index or writing a snapshot can
        take minutes without progress to report); returns the function that stops it."""
        stopped = threading.Event()

        def beat() -> None:
            while not stopped.wait(self._heartbeat):
                try:
                    with self._store.write() as session:
                        session.execute(
                            update(ReindexJobRow)
                            .where(ReindexJobRow.id == job_id)
                            .values(heartbeat_at=utcnow())
                        )
                except STORE_UNAVAILABLE:
                    pass  # the next beat tries again; the job itself meets the outage too
                except Exception:
                    # Beating on keeps the job alive: a silent job reads abandoned, and then a
                    # second reindex of the namespace may start beside it.
                    log.exception("reindex job %s: heartbeat failed", job_id)

        thread = threading.Thread(target=beat, name=f"reindex-beat-{job_id[:8]}", daemon=True)
        thread.start()

        def stop() -> None:
            stopped.set()
            thread.join()

        return stop

    def run_in_background(self, namespace: str | None, kind: str | None) -> str:
        job_id = self.start(namespace, kind)

        def work() -> None:
            # A failure is recorded on the job row; there is no caller to raise to, so the
            # log says it here.
            try:
                self.run(job_id, namespace, kind)
            except RoutebookError as exc:  # its message says it all
                log.error("reindex job %s failed: %s", job_id, exc)
            except Exception:
                log.exception("reindex job %s failed", job_id)

        threading.Thread(target=work, name=f"reindex-{job_id[:8]}", daemon=True).start()
        return job_id

    def status(self, job_id: str) -> JobStatus:
        with self._store.read() as session:
            row = session.get(ReindexJobRow, job_id)
            if row is None:
                raise NotFound(f"reindex job {job_id!r} does not exist")
            state, error = row.state, row.error
            if state == "running":
                silent = _silent_since(row, utcnow())
                if silent is not None:
                    state = "failed"
                    error = (
                        f"abandoned: no heartbeat since {silent:%Y-%m-%d %H:%M:%S} UTC (its "
                        "process stopped); the serving generation is untouched: start the "
                        "reindex again"
                    )
            published: tuple[PublishedIndex, ...] = ()
            if state == "succeeded" and row.namespace:
                published = _published_by(session, row.namespace, row.generation)
            return JobStatus(
                row.id, state, row.namespace, row.total, row.done, row.generation, error, published
            )

    def _reindex_one(
        self,
        info: NamespaceInfo,
        kind: str | None,
        advance: Callable[[int], None],
        reembed: bool,
    ) -> PublishedIndex:
        built = self._builder.build(info.id, kind=kind, reembed=reembed, progress=advance)
        with self._store.read() as session:
            generation = 1 + int(
                session.scalar(
                    select(func.coalesce(func.max(IndexGenerationRow.generation), 0)).where(
                        IndexGenerationRow.namespace_id == info.id
                    )
                )
                or 0
            )
        built.index.generation = generation
        this_store = store_id(self._store)
        meta = SnapshotMeta(
            namespace=info.name,
            generation=generation,
            embedding_model_id=self._embedder.model_id,
            dim=self._embedder.dim,
            high_water_example_id=built.marks.example,
            high_water_outcome_id=built.marks.outcome,
            high_water_tombstone_id=built.marks.tombstone,
            kind=str(built.index.kind),
            count=len(built.index),
            store_id=this_store,
        )
        try:
            path = save_snapshot(built.index, store_folder(self._snapshot_dir, this_store), meta)
        except OSError as exc:
            raise self._unwritable(exc) from None
        try:
            with self._store.write() as session:
                session.add(
                    IndexGenerationRow(
                        namespace_id=info.id,
                        generation=generation,
                        snapshot_path=str(path.resolve()),
                        embedding_model=self._embedder.model_id,
                        dim=self._embedder.dim,
                        kind=str(built.index.kind),
                        examples=len(built.index),
                        high_water_example_id=built.marks.example,
                        high_water_outcome_id=built.marks.outcome,
                        high_water_tombstone_id=built.marks.tombstone,
                        high_water_xact=built.marks.xact_floor,
                    )
                )
        except IntegrityError:
            raise FailedPrecondition(
                f"another reindex of {info.name!r} published generation {generation} first; "
                "run this one again"
            ) from None
        log.info(
            "namespace %s: published generation %d (%d examples, %s)",
            info.name,
            generation,
            len(built.index),
            built.index.kind,
        )
        try:
            prune_generations(self._store, self._snapshot_dir, info)
        except Exception as exc:  # the generation is published: the job succeeded all the same
            expected = isinstance(exc, (OSError, *STORE_UNAVAILABLE))
            log.warning(
                "namespace %s: old snapshots not pruned (the next reindex tries again): %s",
                info.name,
                exc,
                exc_info=not expected,
            )
        return PublishedIndex(info.name, generation, str(built.index.kind), len(built.index))

    def _unwritable(self, exc: OSError) -> ConfigError:
        """A snapshot_dir that is a file, or that this process may not write."""
        return ConfigError(
            f"snapshot_dir {str(self._snapshot_dir)!r} cannot hold snapshots: "
            f"{exc.strerror or exc} ({exc.filename}); point snapshot_dir at a folder this "
            "process can write"
        )

    def _record_end(self, job_id: str, state: str, generation: int, error: str) -> None:
        """Mark the job ended, retrying while the store is down: an end never written would
        read "running", then "abandoned"."""
        for wait in (*FINISH_RETRY_WAITS, None):
            try:
                self._finish(job_id, state, generation, error)
                return
            except STORE_UNAVAILABLE as exc:
                if wait is None:
                    log.error(
                        "reindex job %s (%s) stays marked running: the store is down: %s",
                        job_id,
                        state,
                        exc,
                    )
                    return
                time.sleep(wait)

    def _finish(self, job_id: str, state: str, generation: int, error: str) -> None:
        with self._store.write() as session:
            session.execute(
                update(ReindexJobRow)
                .where(ReindexJobRow.id == job_id)
                .values(state=state, generation=generation, error=error, finished_at=utcnow())
            )


def prune_generations(store: Store, snapshot_dir: Path, info: NamespaceInfo) -> list[Path]:
    """Delete `info`'s snapshots older than the one before its newest published generation;
    returns the folders deleted.

    Which to keep is read from the store's rows, not from the folders: a folder newer than
    the newest row is a save not yet published (or never to be: its number is saved again by
    the next reindex) and is kept; the newest row's generation, the one every server loads,
    and the one before it, which a server that read the row before the last publish may be
    loading still, are kept. Old-layout snapshots (`<snapshot_dir>/<namespace>/gen-…`, see
    index/snapshot.py) that older rows name are deleted when they are provably this store's.
    """
    rows = published_generations(store, info.id)
    if len(rows) < 2:
        return []
    keep_from = rows[1].generation
    this_store = store_id(store)
    own = store_folder(snapshot_dir, this_store)
    deleted = prune_before(own, info.name, keep_from)
    for row in rows[2:]:
        path = Path(row.snapshot_path)
        if path.parent.parent == own.resolve() or not path.is_dir():
            continue  # in the store's folder (pruned above), or gone already
        if remove_published(path, row.expected(this_store)):
            deleted.append(path)
    return deleted


def _published_by(session: Session, namespace: str, generation: int) -> tuple[PublishedIndex, ...]:
    """What a one-namespace job published, read back from the store (another process may
    have run it): the kind and size of its generation."""
    row = session.execute(
        select(IndexGenerationRow.kind, IndexGenerationRow.examples)
        .join(NamespaceRow, NamespaceRow.id == IndexGenerationRow.namespace_id)
        .where(NamespaceRow.name == namespace, IndexGenerationRow.generation == generation)
    ).one_or_none()
    if row is None:
        return ()
    return (PublishedIndex(namespace, generation, row.kind, row.examples),)


def _running_jobs(session: Session) -> list[ReindexJobRow]:
    return list(session.scalars(select(ReindexJobRow).where(ReindexJobRow.state == "running")))


def _silent_since(job: ReindexJobRow, now: datetime) -> datetime | None:
    """When a running job last showed life, if that was too long ago for it to be alive; None
    while it is. Jobs from before heartbeats count from their start, at the default pace."""
    last = as_utc(job.heartbeat_at or job.started_at)
    interval = job.heartbeat_seconds or 5.0
    if now - last > timedelta(seconds=interval * ABANDON_AFTER_BEATS):
        return last
    return None
