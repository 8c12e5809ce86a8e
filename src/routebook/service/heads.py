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
of retraining back to back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from routebook.catalog import Catalog, ModelSpec
from routebook.decide.head import Head, train_head
from routebook.index import IndexRegistry, NamespaceIndex

log = logging.getLogger(__name__)

#: Wall time between two trainings of one head, as a multiple of the last one's duration.
DUTY = 10.0


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
    took: float = 0.0  # seconds its training took
    #: The catalog it was trained for: a reprice can reorder the models, and a reference
    #: example's label ("at least this model") means other models then.
    models: tuple[ModelSpec, ...] = ()


class HeadBook:
    def __init__(
        self,
        registry: IndexRegistry,
        catalog_of: Callable[[str], Catalog],
        settings: HeadSettings,
    ) -> None:
        self._registry = registry
        self._catalog_of = catalog_of
        self._settings = settings
        self._trained: dict[str, _Trained] = {}
        self._lock = threading.Lock()
        self._train_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trainings = 0  # heads trained, for tests and metrics

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

    def refresh(self, namespace: str, *, force: bool = False) -> Head | None:
        """Train the namespace's head now if it is stale (or `force`); returns the current one."""
        if not self._settings.enabled:
            return None
        with self._train_lock:  # one training at a time: they compete for the same cores
            index = self._registry.get(namespace)
            if not force and not self.stale(namespace, index):
                return self.get(namespace)
            generation, version = index.generation, index.version
            started = time.monotonic()
            vectors, facts = index.training_data(self._settings.max_examples)
            catalog = self._catalog_of(namespace)
            try:
                head = (
                    train_head(vectors, facts, catalog, generation=generation)
                    if len(facts)
                    else None
                )
            except Exception:  # a head is an optimisation: never let it take the service down
                log.exception("head of namespace %s: training failed, old one kept", namespace)
                return self.get(namespace)
            with self._lock:
                finished = time.monotonic()
                self._trained[namespace] = _Trained(
                    head, generation, version, finished, finished - started, catalog.models
                )
            self.trainings += 1
            log.info(
                "namespace %s: head trained on %d examples (generation %d)%s",
                namespace,
                len(facts),
                generation,
                "" if head is not None else ": too few labels, no head",
            )
            return head

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
        if self._thread is not None:
            self._thread.join(timeout=5)
