"""Swapping index generations: what a swap must keep, and which snapshots a server may trust."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from routebook.domain import Message, OutcomeReport
from routebook.service.requests import DecideQuery
from routebook.wiring import App

QUERY = "how do I migrate a postgres 12 cluster to 16 with zero downtime"


def outcome(outcome_id: str) -> OutcomeReport:
    return OutcomeReport(outcome_id, "frontier", 1.0, messages=(Message("user", QUERY),))


def test_a_delete_survives_a_generation_swap_before_an_outcome_indexes_its_example(
    db_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RecordOutcome commits, then indexes. If meanwhile its example is deleted and a
    generation built after the delete is swapped in, the new index never removed the example
    itself; it must still refuse it (it used to serve the deleted query until a restart)."""
    app = make_app(db_url, follow_interval_seconds=3600)  # the test ticks the follower itself
    example = app.outcomes.record_outcome(outcome("o-1")).example_id
    assert example in app.registry.get("default")
    committed, go_on = threading.Event(), threading.Event()
    index_example = app.outcomes._index_example

    def paused_after_the_commit(*args: Any, **kwargs: Any) -> None:
        committed.set()
        assert go_on.wait(60)
        index_example(*args, **kwargs)

    monkeypatch.setattr(app.outcomes, "_index_example", paused_after_the_commit)
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(app.outcomes.record_outcome, outcome("o-2"))
        assert committed.wait(60)
        assert app.examples.delete("default", [example])[0] == [example]
        job = app.reindexer.start("default", None)
        assert app.reindexer.run(job, "default", None).generation == 1
        app.follower.tick()
        assert app.registry.get("default").generation == 1  # swapped in, without the example
        go_on.set()
        assert second.result(60).example_id == example
    assert example not in app.registry.get("default")
    decided = app.routing.decide(DecideQuery(messages=(Message("user", QUERY),)))
    assert example not in [n.facts.example_id for n in decided.choice.neighbours]
