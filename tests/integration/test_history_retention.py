"""History examples are kept for `history_days` after their newest outcome, then deleted.

Every reported outcome made a history example (the query's text, vector and outcome means)
that was kept for ever: the index grew with traffic without bound and the query texts,
personal data included, were never deleted. Real gRPC servers, real model, SQLite and
PostgreSQL; time is moved by writing older `created_at`s, never by mocking a clock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, update

from routebook.domain import Source
from routebook.embed import Embedder
from routebook.service.namespaces import NamespaceDirectory
from routebook.service.retention import HistorySweeper
from routebook.service.stats import routing_stats
from routebook.service.telemetry import DecisionLog, Telemetry
from routebook.store import outcomes as outcome_store
from routebook.store.db import Store, make_engine
from routebook.store.migrate import upgrade
from routebook.store.namespaces import ensure_namespace
from routebook.store.spend import tenant_spend
from routebook.store.tables import ExampleRow, OutcomeRow, TombstoneRow
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served

OLD = "do you gift wrap orders that go to another country"
KEPT = "can I pay for my order with a voucher and a card together"
EXPIRED_METRIC = "routebook_history_examples_expired_total"


def report(served: Served, outcome_id: str, text: str, **fields: Any) -> pb.RecordOutcomeResponse:
    fields.setdefault("quality", 1.0)
    fields.setdefault("model", "small")
    response: pb.RecordOutcomeResponse = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id=outcome_id,
            messages=[pb.Message(role="user", content=text)],
            **fields,
        ),
        timeout=10,
    )
    return response


def age_everything(store: Store, days: float) -> None:
    """Make every outcome and history example `days` older than it is."""
    then = datetime.now(UTC) - timedelta(days=days)
    with store.write() as session:
        session.execute(update(OutcomeRow).values(created_at=then))
        session.execute(
            update(ExampleRow)
            .where(ExampleRow.source == Source.HISTORY.value)
            .values(created_at=then)
        )


def test_a_history_example_past_the_window_leaves_every_index_and_its_outcomes_stay(
    db_url: str, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    """An example whose newest outcome is older than history_days is deleted; one with a
    recent outcome, and every reference example, stays. Both replicas' indexes drop it, and
    so does a server that loads a snapshot taken before; its outcomes stay as spend."""
    a = serve(db_url, history_days=1)
    b = serve(db_url, history_days=1)
    old = report(a, "old-1", OLD, tenant="acme", cost_usd=0.25)
    kept = report(a, "kept-1", KEPT, tenant="acme", cost_usd=0.5)
    age_everything(a.app.store, 3)
    again = report(a, "kept-2", KEPT, tenant="acme", cost_usd=1.0)  # KEPT is seen today
    assert again.example_id == kept.example_id
    job = a.app.reindexer.start("default", None)
    assert a.app.reindexer.run(job, "default", None).generation == 1  # holds OLD
    b.app.follower.tick()
    assert old.example_id in b.app.registry.get("default")
    with a.app.store.read() as session:
        references = session.scalar(
            select(func.count()).where(ExampleRow.source == Source.REFERENCE.value)
        )
        namespace_id = session.scalars(select(ExampleRow.namespace_id)).first()
        assert namespace_id is not None
        spent = tenant_spend(session, namespace_id, "acme", 24 * 7)
    assert references and spent == pytest.approx(1.75)

    with caplog.at_level(logging.INFO, logger="routebook.retention"):
        assert a.app.history_sweeper.sweep() == 1
    assert "deleted 1 history examples" in caplog.text and "default: 1" in caplog.text
    assert a.app.history_sweeper.sweep() == 0  # nothing else is past the window

    with a.app.store.read() as session:
        assert session.get(ExampleRow, old.example_id) is None
        assert session.get(ExampleRow, kept.example_id) is not None
        assert not session.scalars(select(ExampleRow).where(ExampleRow.text == OLD)).all()
        assert references == session.scalar(
            select(func.count()).where(ExampleRow.source == Source.REFERENCE.value)
        )
        outcomes = {o.outcome_id: o for o in session.scalars(select(OutcomeRow))}
        # Detached, not deleted: still the record of what was spent.
        assert outcomes["old-1"].example_id is None and outcomes["old-1"].tenant == "acme"
        assert {outcomes["kept-1"].example_id, outcomes["kept-2"].example_id} == {kept.example_id}
        assert tenant_spend(session, namespace_id, "acme", 24 * 7) == pytest.approx(spent)
        tombstones = session.scalars(select(TombstoneRow.example_id)).all()
        assert tombstones == [old.example_id]
    (acme,) = routing_stats(a.app.store, 24 * 7, "default").by_tenant
    assert (acme.key, acme.outcomes) == ("acme", 3)

    for server in (a, b):
        server.app.follower.tick()
        index = server.app.registry.get("default")
        assert old.example_id not in index and kept.example_id in index
    # A server started now loads the snapshot that still holds OLD: its tombstone removes it.
    c = serve(db_url)
    assert c.app.registry.get("default").generation == 1
    assert old.example_id not in c.app.registry.get("default")

    registry_a, registry_b = a.app.telemetry.registry, b.app.telemetry.registry
    assert registry_a.get_sample_value(EXPIRED_METRIC, {"namespace": "default"}) == 1
    assert registry_b.get_sample_value(EXPIRED_METRIC, {"namespace": "default"}) is None

    # The same query reported again is learned again, as a new example.
    back = report(b, "old-2", OLD, tenant="acme")
    assert back.example_id not in (0, old.example_id) and not back.duplicate
    assert back.example_id in b.app.registry.get("default")


def test_by_default_history_is_kept_for_ever(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url)
    old = report(served, "old-1", OLD)
    age_everything(served.app.store, 3650)
    sweeper = served.app.history_sweeper
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(days=3650)) == 0
    assert sweeper._thread is None  # never started
    with served.app.store.read() as session:
        assert session.get(ExampleRow, old.example_id) is not None


def test_an_example_deleted_between_recordoutcomes_look_and_its_write_is_made_again(
    db_url: str, serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep (here another process's: its own store) deletes the example after
    RecordOutcome found it and before its outcome is inserted. The outcome is not lost: the
    insert fails on the foreign key, and RecordOutcome makes the example again with it."""
    served = serve(db_url, history_days=1)
    old = report(served, "old-1", OLD)
    age_everything(served.app.store, 3)
    other = Store(make_engine(db_url))
    sweeper = HistorySweeper(
        other, 1, NamespaceDirectory(other, "default"), Telemetry(DecisionLog(None))
    )
    found = outcome_store._history_examples
    swept: list[int] = []

    def sweep_after_the_look(*args: Any) -> Any:
        result = found(*args)
        if not swept:
            swept.append(sweeper.sweep())  # the example is gone once this returns
        return result

    monkeypatch.setattr(outcome_store, "_history_examples", sweep_after_the_look)
    try:
        again = report(served, "old-2", OLD)
    finally:
        other.dispose()
    assert swept == [1]
    assert again.example_id not in (0, old.example_id) and not again.duplicate
    with served.app.store.read() as session:
        assert session.get(ExampleRow, old.example_id) is None
        stored = session.scalars(select(OutcomeRow).where(OutcomeRow.outcome_id == "old-2")).one()
        assert stored.example_id == again.example_id
    served.app.follower.tick()
    index = served.app.registry.get("default")
    assert again.example_id in index and old.example_id not in index


def test_the_heads_kept_pools_drop_an_expired_text_at_its_next_training(
    sqlite_url: str, serve: Callable[..., Served], layers_embedder: Embedder, tmp_path: Path
) -> None:
    """The head trains on the index, so an expired example leaves its sample; its layer pools
    (kept by text hash, in memory and on disk) go with the next training, and nothing brings
    the example back."""
    served = serve(sqlite_url, history_days=1, head_features="layers", embedder=layers_embedder)
    report(served, "old-1", OLD)
    report(served, "kept-1", KEPT)
    heads = served.app.heads
    assert heads.layers is not None
    heads.refresh("default", force=True)

    def kept_on_disk() -> set[bytes]:
        (path,) = (tmp_path / "snapshots").glob("store-*/default/layers-*.npz")
        with np.load(path) as npz:
            return {bytes(row) for row in npz["digests"]}

    old, kept = (hashlib.sha256(t.encode()).digest() for t in (OLD, KEPT))
    assert {old, kept} <= kept_on_disk()
    before = heads.layers.kept("default")
    age_everything(served.app.store, 3)
    report(served, "kept-2", KEPT)
    assert served.app.history_sweeper.sweep() == 1
    served.app.follower.tick()
    heads.refresh("default", force=True)
    assert heads.layers.kept("default") == before - 1
    on_disk = kept_on_disk()
    assert kept in on_disk and old not in on_disk
    assert OLD not in {f.text for f in served.app.registry.get("default").training_data(100_000)[1]}


# -- the sweep, on the store alone ------------------------------------------------------------


def store_with_namespaces(db_url: str, *names: str) -> tuple[Store, dict[str, int]]:
    engine = make_engine(db_url)
    upgrade(engine)
    store = Store(engine)
    with store.write() as session:
        ids = {name: ensure_namespace(session, name).id for name in names}
    return store, ids


def add_example(
    store: Store, namespace_id: int, text: str, ages: list[float], source: Source = Source.HISTORY
) -> int:
    """An example made `max(ages)` days ago with an outcome `age` days old for each age."""
    now = datetime.now(UTC)
    with store.write() as session:
        row = ExampleRow(
            namespace_id=namespace_id,
            text=text,
            text_hash=text,
            source=source.value,
            created_at=now - timedelta(days=max(ages, default=0)),
        )
        session.add(row)
        session.flush()
        session.add_all(
            OutcomeRow(
                outcome_id=f"{text}-{n}",
                namespace_id=namespace_id,
                example_id=row.id,
                model="small",
                quality=1.0,
                created_at=now - timedelta(days=age),
            )
            for n, age in enumerate(ages)
        )
        return row.id


def sweeper_of(store: Store, days: float, batch: int = 1000) -> HistorySweeper:
    return HistorySweeper(
        store, days, NamespaceDirectory(store, "default"), Telemetry(DecisionLog(None)), batch=batch
    )


def test_the_sweep_goes_by_the_newest_outcome_in_batches_and_spares_references(
    db_url: str,
) -> None:
    store, ns = store_with_namespaces(db_url, "one", "two")
    try:
        expired, kept = set(), set()
        for n in range(12):
            namespace_id = ns["one"] if n % 2 else ns["two"]
            expired.add(add_example(store, namespace_id, f"expired {n}", [5, 3 - n / 100]))
            # Old, but seen yesterday: its newest outcome counts, not its first.
            kept.add(add_example(store, namespace_id, f"kept {n}", [5, 1]))
        reference = add_example(store, ns["one"], "reference", [9], Source.REFERENCE)
        sweeper = sweeper_of(store, 2, batch=4)  # 36 outcomes: nine batches and an empty one
        assert sweeper.sweep() == 12
        with store.read() as session:
            left = set(session.scalars(select(ExampleRow.id)))
            tombstones = session.execute(
                select(TombstoneRow.namespace_id, TombstoneRow.example_id)
            ).all()
            detached = session.scalar(select(func.count()).where(OutcomeRow.example_id.is_(None)))
            total = session.scalar(select(func.count()).select_from(OutcomeRow))
        assert left == kept | {reference}
        assert sorted(e for _, e in tombstones) == sorted(expired)
        assert {n for n, _ in tombstones} == {ns["one"], ns["two"]}
        assert (detached, total) == (24, 12 * 4 + 1)

        # A day on, the kept examples' newest outcomes are past the window too; the pass reads
        # on from where the last one stopped.
        assert sweeper.sweep(now=datetime.now(UTC) + timedelta(days=1, hours=1)) == 12
        with store.read() as session:
            assert set(session.scalars(select(ExampleRow.id))) == {reference}
    finally:
        store.dispose()


def test_an_outcome_written_while_the_sweep_deletes_its_example_stays_with_it(
    db_url: str,
) -> None:
    """Another server's transaction adds a fresh outcome to an expired example and has not
    committed when the sweep comes: the example is kept and the outcome stays attached to it
    (on PostgreSQL the sweep skips the row the outcome's foreign key check holds, and tries
    it again next pass; on SQLite it waits for the writer)."""
    store, ns = store_with_namespaces(db_url, "default")
    writer = make_engine(db_url)
    try:
        example = add_example(store, ns["default"], "busy", [3])
        sweeper = sweeper_of(store, 1)
        connection = writer.connect()
        transaction = connection.begin()
        connection.execute(
            OutcomeRow.__table__.insert().values(  # type: ignore[attr-defined]
                outcome_id="fresh",
                namespace_id=ns["default"],
                example_id=example,
                model="small",
                quality=1.0,
                input_tokens=0,
                output_tokens=0,
                cost_usd=0.0,
                created_at=datetime.now(UTC),
            )
        )
        swept: list[int] = []
        thread = threading.Thread(target=lambda: swept.append(sweeper.sweep()))
        thread.start()
        time.sleep(0.5)
        transaction.commit()
        connection.close()
        thread.join(timeout=60)
        assert swept == [0]
        with store.read() as session:
            assert session.get(ExampleRow, example) is not None
            attached = session.scalars(
                select(OutcomeRow.outcome_id).where(OutcomeRow.example_id == example)
            ).all()
        assert sorted(attached) == ["busy-0", "fresh"]
        assert sweeper.sweep() == 0  # tried again: seen today, so kept
        # Once the fresh outcome is past the window too, the example goes.
        assert sweeper.sweep(now=datetime.now(UTC) + timedelta(days=1, minutes=1)) == 1
    finally:
        writer.dispose()
        store.dispose()


def test_a_store_outage_skips_a_pass_and_the_sweeper_stops_with_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens on port 1: every pass meets an unavailable store, is logged as such
    (not as a failure with a traceback), and the thread keeps going until stopped."""
    store = Store(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"))
    sweeper = HistorySweeper(
        store,
        1,
        NamespaceDirectory(store, "default"),
        Telemetry(DecisionLog(None)),
        interval=0.05,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="routebook.retention"):
            sweeper.start()
            deadline = time.monotonic() + 10
            while caplog.text.count("history examples not swept") < 2:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.02)
            sweeper.stop()
        assert sweeper._thread is not None and not sweeper._thread.is_alive()
        assert "the store is unavailable" in caplog.text and "Traceback" not in caplog.text
    finally:
        sweeper.stop()
        store.dispose()
