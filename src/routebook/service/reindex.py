"""Batch reindex: re-embed every example, build a new generation off to the side, write a
snapshot, then publish it in the store; every server (this one and the replicas) swaps to it
when its follower sees the published row.

Publishing is the last step and a single insert, so a reindex killed half-way leaves the
serving generation untouched, and running it again simply starts over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from routebook.embed import Embedder
from routebook.errors import FailedPrecondition, InvalidArgument, NotFound
from routebook.index.snapshot import SnapshotMeta, save_snapshot
from routebook.service.indexing import IndexBuilder
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.store.db import Store
from routebook.store.tables import IndexGenerationRow, ReindexJobRow, utcnow

#: Waits between attempts to mark a failed job failed while the store is down (about a minute).
FINISH_RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)

log = logging.getLogger("routebook.reindex")

INDEX_KINDS = ("flat", "hnsw", "ivf")


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    state: str
    namespace: str
    total: int
    done: int
    generation: int
    error: str


class Reindexer:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        directory: NamespaceDirectory,
        snapshot_dir: Path,
        approximate_above: int,
        approximate_kind: str = "ivf",
    ) -> None:
        self._store = store
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
        """Create the job row; `run` does the work (here or in a thread)."""
        if kind and kind not in INDEX_KINDS:
            raise InvalidArgument(f"index kind {kind!r}: use one of {', '.join(INDEX_KINDS)}")
        targets = self.targets(namespace)
        total = sum(self._builder.count(info.id) for info in targets)
        job_id = uuid.uuid4().hex
        with self._store.write() as session:
            session.add(
                ReindexJobRow(
                    id=job_id, namespace=namespace or "", state="running", total=total, done=0
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
                    update(ReindexJobRow).where(ReindexJobRow.id == job_id).values(done=done)
                )
            if progress is not None:
                progress(n)

        try:
            for info in self.targets(namespace):
                generation = self._reindex_one(info, kind, advance, reembed)
            self._finish(job_id, "succeeded", generation, "")
        except Exception as exc:
            log.exception("reindex job %s failed", job_id)
            self._record_failure(job_id, str(exc) or type(exc).__name__)
            raise
        return self.status(job_id)

    def run_in_background(self, namespace: str | None, kind: str | None) -> str:
        job_id = self.start(namespace, kind)

        def work() -> None:
            # A failure is recorded on the job row; there is no caller to raise to.
            with contextlib.suppress(Exception):
                self.run(job_id, namespace, kind)

        threading.Thread(target=work, name=f"reindex-{job_id[:8]}", daemon=True).start()
        return job_id

    def status(self, job_id: str) -> JobStatus:
        with self._store.read() as session:
            row = session.get(ReindexJobRow, job_id)
            if row is None:
                raise NotFound(f"reindex job {job_id!r} does not exist")
            return JobStatus(
                row.id, row.state, row.namespace, row.total, row.done, row.generation, row.error
            )

    def _reindex_one(
        self,
        info: NamespaceInfo,
        kind: str | None,
        advance: Callable[[int], None],
        reembed: bool,
    ) -> int:
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
        )
        path = save_snapshot(built.index, self._snapshot_dir, meta)
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
        return generation

    def _record_failure(self, job_id: str, error: str) -> None:
        """Mark the job failed, retrying while the store is down: a job whose failure was never
        written would read "running" forever."""
        for wait in (*FINISH_RETRY_WAITS, None):
            try:
                self._finish(job_id, "failed", 0, error)
                return
            except OperationalError as exc:
                if wait is None:
                    log.error(
                        "reindex job %s stays marked running: the store is down: %s",
                        job_id,
                        exc.orig,
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
