"""Forgets what the store need not keep: decisions' query text once `decision_text_hours`
have passed (DecisionTextSweeper), and, with `history_days`, history examples whose newest
outcome is older than that (HistorySweeper).

## Decisions' query text

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

## History examples

A history example holds a reported query's text (personal data included), its vector and its
outcome means, and joins the index for as long as it exists: kept for ever, the index grows
with traffic without bound. With `history_days` > 0 an example whose newest outcome is older
than that is deleted (store/history.py says how, and why an outcome written meanwhile is never
lost); its tombstone makes every replica's index drop it. An outcome reported about the same
query later makes a new example, as for any new query. Reference examples are never deleted
by age. 0, the default, keeps history for ever: deleting what the router learned from is the
operator's choice.

A pass reads the outcomes that aged past the window since the pass before (the first pass of
a process reads them all), a batch per transaction. Each server sweeps with its own setting;
two sweeping at once skip each other's rows. Outcome times come from the clock of the server
that wrote them: one whose clock is behind by s makes its examples expire s early, and only
one behind by more than the whole window writes outcomes a pass has gone past already (read
by the next server start's first pass).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from routebook.service.backoff import FailureStreak, message_line
from routebook.service.namespaces import NamespaceDirectory
from routebook.service.telemetry import Telemetry
from routebook.store import decisions as decision_store
from routebook.store import history as history_store
from routebook.store.db import STORE_UNAVAILABLE, Store

log = logging.getLogger("routebook.retention")

#: Decisions whose text one transaction clears; outcomes whose examples one transaction
#: looks at.
SWEEP_BATCH = 1000
#: The longest wait between sweeps: text outlives its window by at most about this much.
MAX_SWEEP_SECONDS = 300.0


def sweep_interval(hours: float) -> float:
    """A tenth of the window, between one second and MAX_SWEEP_SECONDS."""
    return min(MAX_SWEEP_SECONDS, max(1.0, hours * 360.0))


class _Sweeping:
    """A sweep run in the background: at once, then every interval, until `stop`. A store
    that is down skips a pass (nothing is lost: the next pass does its work)."""

    #: What is swept, for the thread's name and the log ("decision texts").
    what = ""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self, now: datetime | None = None) -> int:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None:
            return
        name = self.what.replace(" ", "-") + "-sweeper"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        # Any other failure is logged the way of service/backoff.py: the traceback with the
        # first in a row or a new kind, one line a pass after (a bug here used to log a
        # traceback every pass, each second with a short window).
        streak = FailureStreak(log, f"sweeping {self.what}", self._interval)
        while True:
            try:
                self.sweep()
            except STORE_UNAVAILABLE as exc:  # kept until the next pass; nothing is lost
                why = message_line(exc, 200)
                log.warning("%s not swept: the store is unavailable (%s)", self.what, why)
            except Exception as exc:
                streak.failed(exc)
            else:
                streak.succeeded()
            if self._stop.wait(streak.wait()):
                return


class DecisionTextSweeper(_Sweeping):
    what = "decision texts"

    def __init__(
        self,
        store: Store,
        hours: float,
        interval: float | None = None,
        batch: int = SWEEP_BATCH,
    ) -> None:
        super().__init__(sweep_interval(hours) if interval is None else interval)
        self._store = store
        self._window = timedelta(hours=hours)
        self._batch = batch
        #: Where the last complete pass ended: every older row's text is cleared.
        self._since: datetime | None = None
        self._lock = threading.Lock()

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
        if cleared:
            log.info("cleared the query text of %d decisions past the window", cleared)
        return cleared


class HistorySweeper(_Sweeping):
    """Deletes history examples whose newest outcome is older than `days` (0: none, ever)."""

    what = "history examples"

    def __init__(
        self,
        store: Store,
        days: float,
        directory: NamespaceDirectory,
        telemetry: Telemetry,
        interval: float | None = None,
        batch: int = SWEEP_BATCH,
    ) -> None:
        super().__init__(sweep_interval(days * 24) if interval is None else interval)
        self._store = store
        self._days = days
        self._window = timedelta(days=days)
        self._directory = directory
        self._telemetry = telemetry
        self._batch = batch
        #: Where the last pass's reading of outcomes ended (None: read from the first).
        self._after: history_store.Cursor | None = None
        #: Examples a pass skipped because an outcome was being written about them.
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._days > 0:
            super().start()

    def sweep(self, now: datetime | None = None) -> int:
        """Delete every history example whose newest outcome is older than the window;
        returns how many. One transaction per batch of outcomes read."""
        if self._days <= 0:
            return 0
        before = (now or datetime.now(UTC)) - self._window
        expired: Counter[int] = Counter()
        with self._lock:
            while True:
                with self._store.write() as session:
                    ids, last = history_store.seen_before(session, before, self._after, self._batch)
                    result = history_store.expire(session, self._busy | set(ids), before)
                # Committed: this batch's progress stands whatever the next one meets.
                self._busy = result.busy
                expired.update(namespace_id for _, namespace_id in result.deleted)
                if last is None:
                    break
                self._after = last
        total = sum(expired.values())
        if total:
            names = {info.id: info.name for info in self._directory.all()}
            for namespace_id, count in sorted(expired.items()):
                name = names.get(namespace_id, str(namespace_id))
                self._telemetry.history_expired(name, count)
            log.info(
                "deleted %d history examples whose newest outcome was over %g days old (%s)",
                total,
                self._days,
                ", ".join(f"{names.get(n, n)}: {c}" for n, c in sorted(expired.items())),
            )
        return total
