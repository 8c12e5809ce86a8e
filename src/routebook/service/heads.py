"""Each namespace's learned head, trained in the background from its index and swapped in whole.

Why background: training takes seconds to a minute, and Decide must not wait for it. Why from
the index: the index already holds every example's vector and facts (labels, outcomes), so the
head sees exactly what the neighbours see. A head is retrained when its index changed enough
since the last training: a new generation (reindex, snapshot), or `retrain_after` examples and
outcomes added, removed or updated. Between trainings the neighbours carry every fresh outcome
into the next decision at once; the head only moves the prior.

Training competes with Decide for the same cores, so a namespace's head is not retrained
before `DUTY` times its last training's duration has passed (a head trained in 20 s waits
200 s): during a bulk load of 100k examples, heads take at most a tenth of the CPU instead
of retraining back to back. With `head_features = "layers"` a training also embeds the texts
new to its sample (`service/head_layers.py`, paced itself), and that work counts too, but not
the pauses between its chunks: they are pacing, the cores were Decide's meanwhile, and they
are about half a first embedding's wall time, so counting them made the next training wait
about twice too long. A namespace's first training with a model embeds the whole sample, and
the next one waits ten times that work. (The pools are kept on disk, so a restart is not a first
training.) A failed try's wait counts its work the same way.

The fit itself leaves Decide a core too. scikit-learn's L-BFGS (`decide/head.py`) spends its
time in numpy's matrix-vector products and scipy's solver, both on OpenBLAS, which runs as
many threads as cores (its loss runs on one OpenMP thread); so a background training fits
with BLAS limited to `FIT_THREADS` = 1. On 2 shared cores that is also faster: a layers fit
on 2,969 examples took 0.2-0.45 s on one thread against 1.4-1.5 s on two (wall and CPU
alike; docs/evaluation.md item 12 has Decide's latency). The limit is process-wide for the
fit's duration, FAISS's own OpenBLAS included: Decide's BLAS work is one query's, which
OpenBLAS runs on one thread anyway, and only a reindex building meanwhile would run its
FAISS training on one BLAS thread for those seconds. `full_speed` lifts it, and the
embedding's pauses, for a caller that waits for the head itself (the one-shot `routebook
decide`); `calibrate` and `eval` fit outside this book, at full speed. scikit-learn itself
is imported at `start`, before the server serves: its import holds the GIL for one to two
seconds, and was 1.8 s of a restarted server's 2.4 s first fit (one instrumented run).

A training that fails (an exception in training, or in reading what it trains on) keeps the old
head and backs off: the namespace is not tried again for `BACKOFF_FIRST_SECONDS`, doubled at
each failure in a row up to `BACKOFF_MAX_SECONDS`, unless its data changes as much as would
retrain a head (a new generation or catalog, `retrain_after` changes since the failed try),
and even then not before `DUTY` times the failed try's work (its pauses left out). Without
it a head that cannot train was tried at every check, each try as costly as a training and
logged with a traceback.
Each try is logged once (the traceback with the first failure in a row, or a new error) and
counted in `routebook_head_training_failures_total`; `routebook_head_failures_in_a_row` is
0 again once a head trains.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from routebook.catalog import Catalog, ModelSpec
from routebook.decide.head import Head, import_trainer, train_head
from routebook.index import IndexRegistry, NamespaceIndex
from routebook.service.head_layers import TrainingLayers, TrainingStopped

log = logging.getLogger(__name__)

#: Wall time between two trainings of one head, as a multiple of the last one's duration.
DUTY = 10.0
#: After a failed training, the wait before the next try of that head, doubled at each failure
#: in a row up to the most; new data ends the wait sooner (the module's docstring says when).
BACKOFF_FIRST_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 3600.0
#: BLAS threads of a background training's fit (the module docstring says why one).
FIT_THREADS = 1


@dataclass(frozen=True, slots=True)
class HeadSettings:
    enabled: bool = True
    #: Index changes (examples and outcomes) that make a head stale enough to retrain.
    retrain_after: int = 200
    #: How often the background thread looks for stale heads.
    check_seconds: float = 30.0
    #: Most examples a head trains on (a seeded sample beyond it), bounding training time.
    max_examples: int = 50_000


@dataclass(frozen=True, slots=True)
class _Trained:
    head: Head | None
    generation: int
    version: int
    finished: float = 0.0  # time.monotonic() when it was trained
    took: float = 0.0  # seconds its training worked (its pauses left out)
    #: The catalog it was trained for: a reprice can reorder the models, and a reference
    #: example's label ("at least this model") means other models then.
    models: tuple[ModelSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class _Failed:
    """A namespace's failures in a row since its last training, and what the last one tried."""

    generation: int
    version: int
    models: tuple[ModelSpec, ...]  # () when the catalog itself could not be read
    in_a_row: int
    finished: float  # time.monotonic() when the last try failed
    took: float  # seconds the last try worked (its pauses left out)
    retry_at: float  # time.monotonic() from which it is tried again, new data or not
    error: str  # the last try's exception, type and message


def backoff_seconds(in_a_row: int) -> float:
    """The wait after the `in_a_row`-th failure in a row: the first, then doubled, capped."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** min(in_a_row - 1, 62))


class HeadBook:
    def __init__(
        self,
        registry: IndexRegistry,
        catalog_of: Callable[[str], Catalog],
        settings: HeadSettings,
        layers: TrainingLayers | None = None,
    ) -> None:
        """`layers`: where the layer pools of training texts come from, when heads read them
        (`head_features = "layers"`); None: heads read the index's vectors."""
        self._registry = registry
        self._layers = layers
        self._catalog_of = catalog_of
        self._settings = settings
        self._trained: dict[str, _Trained] = {}
        self._failed: dict[str, _Failed] = {}
        self._failures: dict[str, int] = {}  # failed trainings ever, per namespace
        self._lock = threading.Lock()
        self._train_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fit_threads: int | None = FIT_THREADS
        self.trainings = 0  # heads trained, for tests and metrics

    def full_speed(self) -> None:
        """Train without pacing, no pauses and every BLAS thread: for a caller that waits for
        the head itself (a one-shot `routebook decide`) while nothing else wants the cores."""
        self._fit_threads = None
        if self._layers is not None:
            self._layers.pause = 0.0

    @property
    def layers(self) -> TrainingLayers | None:
        """Where training texts' layer pools are kept (None: heads read the vectors)."""
        return self._layers

    def get(self, namespace: str) -> Head | None:
        """The namespace's current head; None until one is trained (or when disabled)."""
        with self._lock:
            trained = self._trained.get(namespace)
        return trained.head if trained is not None else None

    def stale(self, namespace: str, index: NamespaceIndex) -> bool:
        with self._lock:
            trained = self._trained.get(namespace)
        if trained is None:
            return True
        if trained.models != self._catalog_of(namespace).models:
            return True  # an UpdateCatalog moves neither the generation nor the version
        if time.monotonic() - trained.finished < DUTY * trained.took:
            return False  # trained moments ago: let Decide have the cores
        if trained.generation != index.generation:
            return True
        return index.version - trained.version >= self._settings.retrain_after

    def backing_off(self, namespace: str, index: NamespaceIndex) -> bool:
        """True while the namespace's head failed to train and is not to be tried yet."""
        with self._lock:
            failed = self._failed.get(namespace)
        if failed is None:
            return False
        now = time.monotonic()
        if now >= failed.retry_at:
            return False
        if now - failed.finished < DUTY * failed.took:
            return True  # even new data waits as long as after a training
        return not self._changed_since(failed, namespace, index)

    def _changed_since(self, failed: _Failed, namespace: str, index: NamespaceIndex) -> bool:
        """Has the namespace's data changed since the failed try as much as retrains a head?"""
        if index.generation != failed.generation:
            return True
        if index.version - failed.version >= self._settings.retrain_after:
            return True
        try:
            models = self._catalog_of(namespace).models
        except Exception:  # still unreadable: not a change
            return False
        return models != failed.models  # () when it could not be read: readable now

    def failures(self) -> dict[str, tuple[int, int]]:
        """Per namespace that ever failed to train: (failed trainings ever, failures in a row
        now, 0 once its head trained again)."""
        with self._lock:
            return {
                namespace: (
                    total,
                    self._failed[namespace].in_a_row if namespace in self._failed else 0,
                )
                for namespace, total in self._failures.items()
            }

    def refresh(self, namespace: str, *, force: bool = False) -> Head | None:
        """Train the namespace's head now if it is stale (or `force`) and not backing off after
        a failure (`force` does not wait for that either); returns the current one."""
        if not self._settings.enabled:
            return None
        with self._train_lock:  # one training at a time: they compete for the same cores
            index = self._registry.get(namespace)
            if not force and self.backing_off(namespace, index):
                return self.get(namespace)
            generation, version = index.generation, index.version
            started, paused = time.monotonic(), self._paused()
            models: tuple[ModelSpec, ...] = ()
            try:
                if not force and not self.stale(namespace, index):
                    return self.get(namespace)
                catalog = self._catalog_of(namespace)
                models = catalog.models
                vectors, facts = index.training_data(self._settings.max_examples)
                layers = None
                if self._layers is not None:  # an empty index keeps no pools either
                    layers = self._layers.of(namespace, [f.text for f in facts])
                head = None
                if len(facts):
                    with threadpool_limits(self._fit_threads, user_api="blas"):  # None: as is
                        head = train_head(
                            vectors, facts, catalog, layers=layers, generation=generation
                        )
            except TrainingStopped:  # the server is stopping: not a failure of the head
                return self.get(namespace)
            except Exception as exc:  # a head is an optimisation: it must not stop the service
                took = self._work_since(started, paused)
                self._record_failure(namespace, generation, version, models, took, exc)
                return self.get(namespace)
            took = self._work_since(started, paused)
            with self._lock:
                self._trained[namespace] = _Trained(
                    head, generation, version, time.monotonic(), took, catalog.models
                )
                recovered = self._failed.pop(namespace, None)
            self.trainings += 1
            if recovered is not None:
                log.info(
                    "namespace %s: head trains again after %d failures in a row",
                    namespace,
                    recovered.in_a_row,
                )
            log.info(
                "namespace %s: head trained on %d examples (generation %d)%s",
                namespace,
                len(facts),
                generation,
                "" if head is not None else ": too few labels, no head",
            )
            return head

    def _paused(self) -> float:
        """Seconds this thread has paused so far while embedding pools (0 without layers)."""
        return self._layers.paused() if self._layers is not None else 0.0

    def _work_since(self, started: float, paused: float) -> float:
        """Seconds of a training (or try) that began at `started` with `_paused()` at `paused`:
        its wall time less its pauses, which are pacing, not work."""
        return time.monotonic() - started - (self._paused() - paused)

    def _record_failure(
        self,
        namespace: str,
        generation: int,
        version: int,
        models: tuple[ModelSpec, ...],
        took: float,
        exc: Exception,
    ) -> None:
        """Back off from the namespace and say so once: the traceback with the first failure in
        a row (or when the error changed), one line after that. `took`: the try's work."""
        finished = time.monotonic()
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            before = self._failed.get(namespace)
            in_a_row = before.in_a_row + 1 if before is not None else 1
            wait = max(backoff_seconds(in_a_row), DUTY * took)
            self._failed[namespace] = _Failed(
                generation,
                version,
                models,
                in_a_row,
                finished,
                took,
                finished + wait,
                error,
            )
            self._failures[namespace] = self._failures.get(namespace, 0) + 1
        log.error(
            "head of namespace %s: training failed (%d in a row), old one kept; next try in "
            "%.0f s, or sooner when its data changes: %s",
            namespace,
            in_a_row,
            wait,
            error,
            exc_info=exc if before is None or before.error != error else None,
        )

    def refresh_all(self) -> None:
        for namespace in self._registry.namespaces():
            if self._stop.is_set():
                return
            try:
                self.refresh(namespace)
            except Exception:  # one namespace's failure must not starve the others of heads
                log.exception("training the head of namespace %r failed", namespace)

    def start(self) -> None:
        if not self._settings.enabled or self._thread is not None:
            return
        import_trainer()  # before the server serves (`decide.head.import_trainer` says why)
        self._thread = threading.Thread(target=self._run, name="head-trainer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_all()
            except Exception:
                log.exception("head refresh failed")
            self._stop.wait(self._settings.check_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._layers is not None:
            self._layers.stop()  # an embedding under way ends at its next chunk
        if self._thread is not None:
            self._thread.join(timeout=5)
