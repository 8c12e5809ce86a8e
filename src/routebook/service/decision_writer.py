"""Decision rows written behind, in batches, so Decide never waits on the store.

A decision is kept in memory until a background thread has committed it; RecordOutcome by
decision id looks in that buffer first, so it finds decisions not yet written. When the store
is down the buffer keeps them (up to `max_pending`, oldest dropped first with a warning) and
the writer retries; Decide goes on answering from the in-memory index meanwhile.

The query text is in the buffer for RecordOutcome; whether it also goes to the store is the
writer's `store_text` (off when `decision_text_hours` is 0: the text then lives only until
the row is written). Text written is cleared later by `service/retention.py`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields

from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError, OperationalError

from routebook.service.backoff import FailureStreak
from routebook.store.db import Store
from routebook.store.tables import DecisionRow

log = logging.getLogger("routebook.decisions")

#: While the buffer overflows, one warning per this many dropped decisions (and the first).
DROP_WARNING_EVERY = 10_000


@dataclass(frozen=True, slots=True)
class PendingDecision:
    id: str
    namespace_id: int
    query_hash: str
    query_text: str
    tenant: str | None
    strategy: str
    model: str
    estimated_cost_usd: float
    confidence: float | None = None
    shadow_model: str | None = None
    shadow_estimated_cost_usd: float | None = None
    shadow_confidence: float | None = None
    #: The models offered (model, fallbacks, cascade steps), space-separated.
    offered: str | None = None
    #: Decide's token estimate for the call: the whole conversation in, the answer out.
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: The request was marked `contains_pii`.
    contains_pii: bool = False


DECISION_COLUMNS = tuple(f.name for f in fields(PendingDecision))


class DecisionWriter:
    def __init__(
        self,
        store: Store,
        flush_interval: float = 0.05,
        max_batch: int = 500,
        max_pending: int = 100_000,
        store_text: bool = True,
    ) -> None:
        self._store = store
        self._store_text = store_text
        self._interval = flush_interval
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: OrderedDict[str, PendingDecision] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self.store_ok = True
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
        self._thread.start()

    def add(self, decision: PendingDecision) -> None:
        overflowed = 0
        with self._lock:
            self._pending[decision.id] = decision
            while len(self._pending) > self._max_pending:
                self._pending.popitem(last=False)
                overflowed += 1
            self.dropped += overflowed
            dropped = self.dropped
            full = len(self._pending) >= self._max_batch
        if overflowed and (dropped == overflowed or dropped % DROP_WARNING_EVERY < overflowed):
            log.warning(
                "decision buffer full (%d unwritten): the oldest decisions are dropped, "
                "%d so far; outcomes reported against them will get NOT_FOUND",
                self._max_pending,
                dropped,
            )
        if full:
            self._wake.set()

    def pending(self, decision_id: str) -> PendingDecision | None:
        with self._lock:
            return self._pending.get(decision_id)

    def flush(self) -> None:
        """Write everything pending now; raises OperationalError when the store is down."""
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = list(self._pending.values())[: self._max_batch]
                if not batch:
                    return
                self._write(batch)
                with self._lock:
                    for decision in batch:
                        self._pending.pop(decision.id, None)

    def _write(self, batch: list[PendingDecision]) -> None:
        # A Core insert of plain rows: the ORM's unit of work cost a third of the server's
        # Python time under load (py-spy, c=32), for rows that are only ever inserted.
        rows = [{name: getattr(d, name) for name in DECISION_COLUMNS} for d in batch]
        if not self._store_text:
            for row in rows:
                row["query_text"] = None
        try:
            with self._store.write() as session:
                session.execute(insert(DecisionRow), rows)
        except OperationalError:
            raise  # the store is down: keep the batch, retry later
        except DBAPIError:
            # One row the store refuses (or one written before) must not block the others
            # forever: write them one by one and drop, with a log line, what still fails.
            for row in rows:
                try:
                    with self._store.write() as session:
                        if session.get(DecisionRow, row["id"]) is None:
                            session.execute(insert(DecisionRow), [row])
                except OperationalError:
                    raise
                except DBAPIError as exc:
                    self.dropped += 1
                    log.error(
                        "decision %s dropped: the store refuses it: %s",
                        row["id"],
                        str(exc.orig).splitlines()[0] if str(exc.orig) else exc,
                    )

    def _run(self) -> None:
        # While the store is down, one line at the start and one at the end of the outage; any
        # other failure the way of service/backoff.py (a traceback with the first in a row or
        # a new kind, then one line a try). Either way the tries back off to a few seconds
        # (they were every 50 ms, a connection attempt each), and a full buffer still wakes it.
        streak = FailureStreak(log, "writing decisions", self._interval)
        while not self._stop.is_set():
            self._wake.wait(streak.wait())
            self._wake.clear()
            try:
                self.flush()
                if not self.store_ok:
                    log.warning("store is back: buffered decisions written")
                self.store_ok = True
                streak.succeeded()
            except OperationalError as exc:
                if self.store_ok:
                    log.warning("store unavailable, buffering decisions: %s", exc.orig)
                self.store_ok = False
                streak.counted()  # back off, without a line a try
            except Exception as exc:
                streak.failed(exc)

    def close(self) -> None:
        """Stop the thread after a last flush (best effort: the store may be down)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception as exc:  # shutting down: say what is lost, do not hang
            log.warning("%d decisions not written at shutdown: %s", len(self._pending), exc)
