"""Indexes stay equal to the store when ids are freed, reused, or committed out of order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, insert

from routebook.routefiles import text_hash
from routebook.service.examples import ExampleInput
from routebook.service.namespaces import NamespaceInfo
from routebook.store.tables import ExampleRow, utcnow
from routebook.wiring import App

NEW = "can I pay for my order with a gift card"
OTHER = "do you deliver to the Faroe Islands on weekends"


def indexed_model(app: App, example_id: int) -> str | None:
    index = app.registry.get("default")
    return index.facts(example_id).best_model if example_id in index else None


def test_relabelling_the_newest_example_keeps_it_indexed(
    db_url: str, make_app: Callable[..., App]
) -> None:
    """A relabel keeps the example's id and leaves a tombstone of it for replicas: the
    tombstone must make the follower read the example again, not remove it from the index,
    also when a pass reads the tombstone again. (A relabel used to be a delete and an
    insert, and SQLite handed the new row the deleted newest id unless told not to.)"""
    app = make_app(db_url)
    first = app.examples.upsert("default", [ExampleInput(NEW, "payment", "small")])
    relabelled = app.examples.upsert("default", [ExampleInput(NEW, "payment", "frontier")])
    (old_id,), (new_id,) = first.example_ids, relabelled.example_ids

    assert new_id == old_id
    assert indexed_model(app, new_id) == "frontier"
    app.follower.catch_up(app.directory.resolve("default"))  # tombstones read again
    assert indexed_model(app, new_id) == "frontier"


def test_a_replica_sees_an_example_added_after_the_newest_was_deleted(
    db_url: str, make_app: Callable[..., App]
) -> None:
    writer, replica = make_app(db_url), make_app(db_url)
    (deleted,) = writer.examples.upsert("default", [ExampleInput(NEW, None, "small")]).example_ids
    replica.follower.catch_up(replica.directory.resolve("default"))
    assert indexed_model(replica, deleted) == "small"

    writer.examples.delete("default", [deleted])
    (added,) = writer.examples.upsert("default", [ExampleInput(OTHER, None, "mid")]).example_ids
    replica.follower.catch_up(replica.directory.resolve("default"))

    index = replica.registry.get("default")
    assert deleted not in index
    assert index.facts(added).text == OTHER
    assert index.facts(added).best_model == "mid"


def test_a_row_committed_below_the_marks_still_reaches_the_index(
    postgres_url: str, make_app: Callable[..., App]
) -> None:
    """PostgreSQL hands out ids at insert, not at commit: a transaction that stays open (or a
    writer whose clock is behind) commits a row whose id is below rows the follower has seen
    already. It must still be applied."""
    app = make_app(postgres_url)
    info = app.directory.resolve("default")
    hour_ago = utcnow() - timedelta(hours=1)  # looks long settled by any clock

    def row(text: str) -> dict[str, object]:
        return {
            "namespace_id": info.id,
            "text": text,
            "text_hash": text_hash(text),
            "source": "reference",
            "best_model": "mid",
            "created_at": hour_ago,
        }

    other_writer = create_engine(postgres_url)
    try:
        with other_writer.connect() as held:
            late_id = held.execute(insert(ExampleRow).values(row(NEW)).returning(ExampleRow.id))
            late = int(late_id.scalar_one())
            with other_writer.begin() as quick:  # commits at once, with a higher id
                early = insert(ExampleRow).values(row(OTHER)).returning(ExampleRow.id)
                early_id = int(quick.execute(early).scalar_one())
            assert early_id > late
            app.follower.catch_up(info)
            assert early_id in app.registry.get("default")
            assert late not in app.registry.get("default")  # not committed yet
            held.commit()
        app.follower.catch_up(info)
        assert indexed_model(app, late) == "mid"
        app.follower.catch_up(info)  # and the next pass leaves it be
        assert indexed_model(app, late) == "mid"
    finally:
        other_writer.dispose()


def test_a_namespace_failing_tick_after_tick_logs_one_traceback(
    sqlite_url: str,
    make_app: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One namespace that fails every tick (a bad snapshot file, a bug) logged a full
    traceback every tick (0.5 s), apart from the store-outage back-off; now the first in a
    row, one line a tick after, and one line when it works again."""
    app = make_app(sqlite_url)
    follow = app.follower._follow
    broken = True

    def follow_or_fail(info: NamespaceInfo) -> None:
        if broken and info.name == "default":
            raise ValueError("damaged snapshot file")
        follow(info)

    monkeypatch.setattr(app.follower, "_follow", follow_or_fail)
    with caplog.at_level(logging.INFO, logger="routebook"):
        for _ in range(5):
            app.follower.tick()
        broken = False
        app.follower.tick()
    mine = [r for r in caplog.records if "following namespace 'default'" in r.getMessage()]
    assert [r.exc_info is not None for r in mine] == [True, False, False, False, False, False]
    assert "works again after 5 failures" in mine[-1].getMessage()
