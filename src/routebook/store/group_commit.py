"""Group commit: concurrent writers share one transaction, so one commit serves many.

A commit is the expensive part of a small write: the WAL fsync and a round trip on PostgreSQL,
the write lock and SQLAlchemy's transaction overhead on SQLite. Callers hand their item to
`submit` and block. The caller that finds no batch in flight leads: it takes what is queued (its
own item first, up to `max_batch`), writes it in one transaction, wakes every caller with its
own result, and hands the lead to the next caller waiting, if any. So the batch grows by itself
while a commit runs, a lone caller waits for nobody (unless `max_wait` asks it to gather
company), and no caller returns before the commit that holds its row succeeds.

One bad row must not fail its neighbours: when a batch fails, each item is written again in a
transaction of its own and gets its own result or error. An `OperationalError` (or a pool with
no free connection) is the store being unavailable, not a row's fault: it fails the whole batch
at once, with no per-row retries that would each wait out a timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from routebook.store.db import STORE_UNAVAILABLE

T = TypeVar("T")
R = TypeVar("R")


class _Ticket(Generic[T, R]):
    """One caller's item, its result or error, and the event that wakes it."""

    __slots__ = ("done", "error", "item", "result", "settled")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Event()  # set with a result, or to hand this caller the lead
        self.settled = False
        self.result: R | None = None
        self.error: BaseException | None = None

    def settle(self, result: R | None, error: BaseException | None) -> None:
        self.result, self.error, self.settled = result, error, True


class GroupCommit(Generic[T, R]):
    """Writes concurrent callers' items in shared transactions.

    `write(items)` must write all the items in one transaction and return one result per item,
    in order, only after the commit; on any error it must leave nothing written (roll back).
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], list[R]],
        max_batch: int = 64,
        max_wait: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._write = write
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._queue: deque[_Ticket[T, R]] = deque()
        self._leading = False
        self.batches = 0
        self.largest_batch = 0

    @property
    def queued(self) -> int:
        """Callers waiting for a batch to take them (not those in a batch being written)."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> R:
        """Write `item` in a shared transaction; return its result once that has committed."""
        ticket: _Ticket[T, R] = _Ticket(item)
        with self._lock:
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._queue.append(ticket)
        if not lead:
            ticket.done.wait()
        if not ticket.settled:  # nobody was writing, or handed the lead by the last leader
            self._lead(ticket)
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]  # settled without error: a result

    def _lead(self, own: _Ticket[T, R]) -> None:
        """Write `own` with whatever is queued, then wake them all and pass the lead on."""
        batch = [own]
        try:
            if self._max_wait > 0:
                time.sleep(self._max_wait)  # let company arrive: fewer, larger commits
            with self._lock:
                while self._queue and len(batch) < self._max_batch:
                    batch.append(self._queue.popleft())
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            self._write_batch(batch)
        finally:
            # Whatever happened, every caller taken is woken with an answer and the lead moves
            # on: a leader that stopped half-way must not leave the others waiting forever.
            for ticket in batch:
                if not ticket.settled:
                    ticket.settle(None, RuntimeError("the group commit stopped before this write"))
                if ticket is not own:
                    ticket.done.set()
            with self._lock:
                following = self._queue.popleft() if self._queue else None
                if following is None:
                    self._leading = False
            if following is not None:
                following.done.set()  # unsettled: it leads the next batch

    def _write_batch(self, batch: list[_Ticket[T, R]]) -> None:
        try:
            results = self._write([t.item for t in batch])
        except STORE_UNAVAILABLE as exc:  # unreachable or no free connection: no row's fault
            for ticket in batch:
                ticket.settle(None, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].settle(None, exc)
                return
            self._write_one_by_one(batch)
            return
        for ticket, result in zip(batch, results, strict=True):
            ticket.settle(result, None)

    def _write_one_by_one(self, batch: list[_Ticket[T, R]]) -> None:
        """After a failed batch: each item alone, so only the guilty row fails."""
        for position, ticket in enumerate(batch):
            try:
                ticket.settle(self._write([ticket.item])[0], None)
            except STORE_UNAVAILABLE as exc:  # the store went away: the rest would fail too
                for rest in batch[position:]:
                    rest.settle(None, exc)
                return
            except Exception as exc:
                ticket.settle(None, exc)
