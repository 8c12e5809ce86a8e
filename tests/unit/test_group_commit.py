"""GroupCommit on its own: batching, per-caller results, a bad item failing alone, an outage
failing a batch at once, and the lead always moving on. The write functions here are plain
Python standing in for a transaction; the real store is exercised in
tests/integration/test_outcome_batching.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from routebook.store import group_commit
from routebook.store.group_commit import GroupCommit


class Recorder:
    """A write function that records each call's batch, can hold the first call until
    released, and refuses the items `refuse` says are bad."""

    def __init__(self, refuse: Callable[[int], bool] = lambda _item: False) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.holding = threading.Event()
        self._refuse = refuse

    def write(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.holding.set()
            assert self.release.wait(10)
        if any(self._refuse(i) for i in items):
            raise ValueError(f"refused in {list(items)}")
        return [i * 10 for i in items]


def queue_up(commits: GroupCommit[int, int], recorder: Recorder, items: list[int]) -> list[object]:
    """Submit items[0] (it leads and is held), queue the rest behind it, then release; the
    answers in item order (a result, or the exception raised)."""

    def submit(item: int) -> object:
        try:
            return commits.submit(item)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(items)) as pool:
        first = pool.submit(submit, items[0])
        assert recorder.holding.wait(10)
        rest = [pool.submit(submit, item) for item in items[1:]]
        wait_until(lambda: commits.queued == len(items) - 1)
        recorder.release.set()
        return [first.result(10)] + [f.result(10) for f in rest]


def wait_until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_callers_queued_behind_a_commit_share_the_next_one() -> None:
    recorder = Recorder()
    commits: GroupCommit[int, int] = GroupCommit(recorder.write)
    answers = queue_up(commits, recorder, list(range(1, 10)))
    assert answers == [i * 10 for i in range(1, 10)]
    assert recorder.calls[0] == [1]
    assert sorted(recorder.calls[1]) == list(range(2, 10))
    assert commits.batches == 2 and commits.largest_batch == 8


def test_a_lone_caller_waits_for_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []
    sleeps: list[float] = []

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        return list(items)

    # Only this module's view of `time` is replaced: other threads keep the real sleep.
    monkeypatch.setattr(group_commit, "time", SimpleNamespace(sleep=sleeps.append))
    commits: GroupCommit[int, int] = GroupCommit(write)
    assert [commits.submit(i) for i in range(5)] == list(range(5))
    assert calls == [[0], [1], [2], [3], [4]]
    assert sleeps == []  # by default no leader waits for company


def test_max_batch_splits_a_long_queue() -> None:
    recorder = Recorder()
    commits: GroupCommit[int, int] = GroupCommit(recorder.write, max_batch=3)
    answers = queue_up(commits, recorder, list(range(1, 9)))
    assert answers == [i * 10 for i in range(1, 9)]
    assert [len(c) for c in recorder.calls] == [1, 3, 3, 1]


def test_a_bad_item_fails_alone_and_its_neighbours_are_written() -> None:
    recorder = Recorder(refuse=lambda item: item == 5)
    commits: GroupCommit[int, int] = GroupCommit(recorder.write)
    answers = queue_up(commits, recorder, list(range(1, 9)))
    assert isinstance(answers[4], ValueError)
    assert [a for i, a in enumerate(answers) if i != 4] == [10, 20, 30, 40, 60, 70, 80]
    # The batch of 2..8 failed as a whole, then each item went alone.
    assert sorted(recorder.calls[1]) == list(range(2, 9))
    assert sorted(c[0] for c in recorder.calls[2:]) == list(range(2, 9))
    assert all(len(c) == 1 for c in recorder.calls[2:])


@pytest.mark.parametrize(
    "down",
    [
        OperationalError("INSERT", {}, Exception("connection refused")),
        # every connection of the pool in use: each retry alone would wait the pool's timeout
        # again (64 outcomes: 11 minutes before anyone was answered)
        PoolTimeout("QueuePool limit of size 5 overflow 0 reached"),
    ],
    ids=["unreachable", "pool full"],
)
def test_an_outage_fails_the_whole_batch_at_once(down: Exception) -> None:
    calls: list[list[int]] = []
    release = threading.Event()

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(10)
            return [0]
        raise down

    commits: GroupCommit[int, int] = GroupCommit(write)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(commits.submit, 0)
        wait_until(lambda: len(calls) == 1)
        rest = [pool.submit(commits.submit, i) for i in range(1, 6)]
        wait_until(lambda: commits.queued == 5)
        release.set()
        assert first.result(10) == 0
        for future in rest:
            with pytest.raises(type(down)):
                future.result(10)
    assert len(calls) == 2, "no per-item retries against a store that is down"


def test_the_lead_moves_on_when_a_leader_dies_half_way() -> None:
    """Even an error the batch handlers do not catch wakes every caller taken, and the next
    caller still gets written."""
    calls: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise KeyboardInterrupt  # not an Exception: past the per-row fallback
        return list(items)

    commits: GroupCommit[int, int] = GroupCommit(write)
    with pytest.raises(KeyboardInterrupt):
        commits.submit(1)
    assert commits.submit(2) == 2


def test_many_threads_each_get_their_own_result() -> None:
    def write(items: Sequence[int]) -> list[int]:
        time.sleep(0.002)  # a commit takes a moment: callers pile up behind it
        return [-i for i in items]

    commits: GroupCommit[int, int] = GroupCommit(write)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(commits.submit, range(400)))
    assert answers == [-i for i in range(400)]
    assert commits.batches <= 400 and commits.largest_batch <= 16  # one ticket per thread at most
