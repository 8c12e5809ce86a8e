"""Decisions written behind: what the writer acknowledges in memory reaches the store, and one
row the store refuses does not hold back the rest of its batch. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from routebook.service.decision_writer import DecisionWriter, PendingDecision
from routebook.store.db import Store, make_engine
from routebook.store.migrate import upgrade
from routebook.store.namespaces import ensure_namespace
from routebook.store.tables import DecisionRow


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield Store(engine)
    engine.dispose()


def pending(namespace_id: int, **overrides: object) -> PendingDecision:
    values: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "namespace_id": namespace_id,
        "query_hash": "h" * 64,
        "query_text": "where is my parcel?",
        "tenant": "acme",
        "strategy": "SEMANTIC",
        "model": "gpt-4.1-nano",
        "estimated_cost_usd": 0.0002,
        "confidence": 0.91,
    }
    values.update(overrides)
    return PendingDecision(**values)  # type: ignore[arg-type]


def stored(store: Store) -> dict[str, DecisionRow]:
    with store.read() as session:
        return {row.id: row for row in session.scalars(select(DecisionRow))}


def test_every_field_of_a_pending_decision_is_written(store: Store) -> None:
    with store.write() as session:
        namespace_id = ensure_namespace(session, "writer").id
    writer = DecisionWriter(store, flush_interval=60)
    try:
        shadowed = pending(
            namespace_id,
            tenant=None,
            shadow_model="gpt-4.1",
            shadow_estimated_cost_usd=0.01,
            shadow_confidence=0.5,
        )
        plain = pending(namespace_id, strategy="CASCADE", confidence=None, contains_pii=True)
        writer.add(shadowed)
        writer.add(plain)
        assert writer.pending(plain.id) == plain  # found before it is written
        writer.flush()
        assert writer.pending(plain.id) is None
        rows = stored(store)
        for decision in (shadowed, plain):
            row = rows[decision.id]
            assert {name: getattr(row, name) for name in PendingDecision.__slots__} == {
                name: getattr(decision, name) for name in PendingDecision.__slots__
            }
            assert row.created_at is not None
    finally:
        writer.close()


def test_a_writer_told_not_to_store_text_keeps_it_in_memory_only(store: Store) -> None:
    """decision_text_hours = 0: RecordOutcome finds the text while the decision is buffered;
    the row written has its hash and no text."""
    with store.write() as session:
        namespace_id = ensure_namespace(session, "writer").id
    writer = DecisionWriter(store, flush_interval=60, store_text=False)
    try:
        decision = pending(namespace_id, contains_pii=True)
        writer.add(decision)
        assert writer.pending(decision.id) == decision  # the text, for an outcome meanwhile
        writer.flush()
        row = stored(store)[decision.id]
        assert row.query_text is None
        assert (row.query_hash, row.contains_pii, row.model) == ("h" * 64, True, decision.model)
    finally:
        writer.close()


def test_a_refused_row_does_not_hold_back_its_batch(store: Store) -> None:
    with store.write() as session:
        namespace_id = ensure_namespace(session, "writer").id
    writer = DecisionWriter(store, flush_interval=60)
    try:
        first = pending(namespace_id)
        writer.add(first)
        writer.flush()
        # The same id again (a row written before) and a namespace the store does not have.
        again = pending(namespace_id, id=first.id, model="other")
        orphan = pending(namespace_id + 1000)
        good = [pending(namespace_id) for _ in range(3)]
        for decision in (good[0], again, good[1], orphan, good[2]):
            writer.add(decision)
        writer.flush()
        rows = stored(store)
        assert {d.id for d in good} <= set(rows)
        assert rows[first.id].model == first.model  # never overwritten
        assert orphan.id not in rows
        assert writer.dropped == 1
        assert writer.pending(orphan.id) is None
    finally:
        writer.close()


def test_a_full_buffer_drops_the_oldest_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with store.write() as session:
        namespace_id = ensure_namespace(session, "writer").id
    writer = DecisionWriter(store, flush_interval=60, max_pending=3)
    try:
        decisions = [pending(namespace_id) for _ in range(5)]
        with caplog.at_level("WARNING", logger="routebook.decisions"):
            for decision in decisions:
                writer.add(decision)
        assert writer.dropped == 2
        assert [writer.pending(d.id) is not None for d in decisions] == [False, False] + [True] * 3
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1  # the first drop, not every one
        assert "decision buffer full (3 unwritten)" in warnings[0] and "1 so far" in warnings[0]
    finally:
        writer.close()
