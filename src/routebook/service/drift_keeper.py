"""Keeps each namespace's drift reference in the store, so it outlives a restart.

Held in memory only, the reference was frozen again by every process from its first
decisions: a team that deploys daily compared each day with the day before, never with the
traffic the router was tuned on, and a server restarted on drifted traffic took that traffic
as its reference and reported "no drift".

One row per namespace and embedding model (a reference's similarities are that model's), with
the index generation it was observed on. Who writes, with several servers on one store:

- the first server to freeze a reference for a generation writes it; the others find the row
  at their next sync (every `interval`, and at start before serving) and adopt it, dropping
  their own, so every replica compares with the same reference;
- a row of an older generation is replaced by the first reference frozen on the new one; a
  server still serving the older generation leaves a newer row alone;
- a rebaseline turns the namespace's rows into markers at once (durable: a restart does not
  bring the old reference back); servers that see a new marker start their reference again,
  and the first to freeze one writes it over the marker.

Every write names the row it replaces (its token), so of two racing writers one wins and the
other adopts the winner's. Reading the figures (GetDrift, a metrics scrape) writes nothing.
"""

from __future__ import annotations

import logging
import threading

from routebook.index import IndexRegistry
from routebook.service.backoff import FailureStreak, message_line
from routebook.service.drift import DriftWatch
from routebook.service.namespaces import NamespaceDirectory
from routebook.store import drift as drift_store
from routebook.store.db import STORE_UNAVAILABLE, Store

log = logging.getLogger("routebook.drift")


class DriftKeeper:
    def __init__(
        self,
        store: Store,
        watch: DriftWatch,
        registry: IndexRegistry,
        directory: NamespaceDirectory,
        embedding_model: str,
        interval: float,
    ) -> None:
        self._store = store
        self._watch = watch
        self._registry = registry
        self._directory = directory
        self._model = embedding_model
        self._interval = interval
        self._streak = FailureStreak(log, "keeping the drift references in the store", interval)
        self._sync_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def sync(self) -> None:
        """Adopt, drop or write each served namespace's reference to match the store."""
        with self._sync_lock:
            stored = drift_store.tokens(self._store, self._model)
            ids = self._ids()
            for namespace in self._registry.namespaces():
                namespace_id = ids.get(namespace)
                if namespace_id is None:
                    continue  # deleted since: its rows went with it
                token = stored.get(namespace_id)
                if token is not None and token == self._watch.held(namespace):
                    continue  # the reference it holds is the stored one
                row = (
                    drift_store.load(self._store, namespace_id, self._model)
                    if token is not None
                    else None
                )
                generation = self._registry.get(namespace).generation
                pending = self._watch.reconcile(namespace, row, generation)
                if pending is None:
                    continue
                replacing = row.token if row is not None else None
                if drift_store.save(
                    self._store, namespace_id, self._model, pending, replacing=replacing
                ):
                    self._watch.saved(namespace, pending.token)
                    log.info(
                        "namespace %s: drift reference of %d decisions (generation %d) stored",
                        namespace,
                        len(pending.top_similarity),
                        generation,
                    )
                # else another server wrote first: the next sync adopts its reference

    def rebaseline(self, namespaces: list[str]) -> None:
        """Start the namespaces' references again, durably: the store's rows become markers
        before this server forgets its own (a store that cannot be written changes nothing)."""
        ids = self._ids()
        with self._sync_lock:
            marker = drift_store.reset(
                self._store, [ids[name] for name in namespaces if name in ids], self._model
            )
            for name in namespaces:
                self._watch.rebaseline(name, marker=marker)

    def _ids(self) -> dict[str, int]:
        return {info.name: info.id for info in self._directory.all()}

    def start(self) -> None:
        """Sync once before the server takes calls (a restarted server compares with the
        stored reference from its first decision), then keep in step in the background."""
        if self._thread is not None:
            return
        self._sync_logged()
        self._watch.on_freeze = self._wake.set
        self._thread = threading.Thread(target=self._run, name="drift-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, after writing a reference frozen since the last sync (only then: a stop
        during a store outage must not wait on the store)."""
        if self._thread is None or self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        if self._watch.unsaved():
            self._sync_logged()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._streak.wait())
            self._wake.clear()
            if self._stopping:
                return
            self._sync_logged()

    def _sync_logged(self) -> None:
        try:
            self.sync()
        except STORE_UNAVAILABLE as exc:  # the next sync retries; the figures are in memory
            why = message_line(exc, 200)
            log.warning("drift references not synced: the store is unavailable (%s)", why)
        except Exception as exc:  # a traceback with the first in a row only (service/backoff)
            self._streak.failed(exc)
        else:
            self._streak.succeeded()
