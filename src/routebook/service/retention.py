"""Forgets decisions' query text once `decision_text_hours` have passed.

Why it is kept at all: RecordOutcome by decision_id makes the query's history example from
it, and an outcome comes seconds, sometimes hours, after its Decide. Why it is not kept for
ever: it is every query anyone sent, personal data included, and nothing reads it once the
decision's outcomes are in. So the text is kept for a bounded window, then cleared; the row
stays (its hash, models, estimates and tenant feed `routebook stats` and the shadow report).

An outcome reported by decision_id after its text was cleared still counts as spend, and
still updates the query's history example when one exists (the example holds the text); it
adds nothing to the index otherwise, and RecordOutcomeResponse.text_expired says so.

Each server sweeps with its own setting (replicas should agree; the shortest window wins),
in batches so that a first sweep over a large table never holds the store's one SQLite writer
for long. A store that is down is skipped until the next pass.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from routebook.store import decisions as decision_store
from routebook.store.db import STORE_UNAVAILABLE, Store

log = logging.getLogger("routebook.retention")

#: Decisions whose text one transaction clears.
SWEEP_BATCH = 1000
#: The longest wait between sweeps: text outlives its window by at most about this much.
MAX_SWEEP_SECONDS = 300.0


def sweep_interval(hours: float) -> float:
    """A tenth of the window, between one second and MAX_SWEEP_SECONDS."""
    return min(MAX_SWEEP_SECONDS, max(1.0, hours * 360.0))


class DecisionTextSweeper:
    def __init__(
        self,
        store: Store,
        hours: float,
        interval: float | None = None,
        batch: int = SWEEP_BATCH,
    ) -> None:
        self._store = store
        self._window = timedelta(hours=hours)
        self._interval = sweep_interval(hours) if interval is None else interval
        self._batch = batch
        #: Where the last complete pass ended: every older row's text is cleared.
        self._since: datetime | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, now: datetime | None = None) -> int:
        """Clear the text of every decision older than the window; returns how many."""
        before = (now or datetime.now(UTC)) - self._window
        cleared = 0
        with self._lock:
            since = self._since
            while True:
                with self._store.write() as session:
                    count, newest = decision_store.clear_texts(session, before, since, self._batch)
                cleared += count
                if count < self._batch:
                    break
                since = newest
            # Every row made before `before` is cleared: the next pass starts there. (A row
            # written later with an older time, by a replica whose clock is behind by more
            # than the window, is cleared by the next server start's first pass.)
            if self._since is None or before > self._since:
                self._since = before
        return cleared

    def start(self) -> None:
        """Sweep in the background: at once, then every interval."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="decision-text-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                cleared = self.sweep()
                if cleared:
                    log.info("cleared the query text of %d decisions past the window", cleared)
            except STORE_UNAVAILABLE as exc:  # kept until the next pass; nothing is lost
                why = str(exc).splitlines()[0][:200]
                log.warning("decision texts not swept: the store is unavailable (%s)", why)
            except Exception:
                log.exception("sweeping decision texts failed; retrying later")
            if self._stop.wait(self._interval):
                return
