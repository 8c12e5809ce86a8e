"""The drift reference is kept in the store: real servers restarted on the same SQLite file and
PostgreSQL schema, replicas on one store, a rebaseline, a reindex and another embedding model.

Reference traffic is the shop's own utterances (every decision warm); drifted traffic is
questions the shop never saw (every decision a cold start)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from sqlalchemy import select

from routebook.embed.onnx import OnnxEmbedder
from routebook.store.tables import DriftReferenceRow
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.v1 import router_pb2 as pb
from routebook.wiring import App
from tests.conftest import TEST_ROUTES, Served, wait_until

TOKEN = "drift-token"
SIZE = 20  # decisions in each window (drift_reference_size and drift_window)
DRIFT = {"admin_token": TOKEN, "drift_reference_size": SIZE, "drift_window": SIZE}

_shop = yaml.safe_load((TEST_ROUTES / "shop.yaml").read_text())
_utterances = [u for route in _shop["routes"] for u in route["utterances"]]
WARM = (_utterances * 2)[:SIZE]
COLD = [
    f"what is the capital city of {country}"
    for country in (
        "France", "Peru", "Kenya", "Japan", "Norway", "Chile", "Egypt", "Canada", "Nepal",
        "Ghana", "Spain", "Laos", "Mali", "Cuba", "Iran", "Fiji", "Oman", "Chad", "Togo", "Iraq",
    )
]  # fmt: skip


def feed(served: Served, texts: list[str]) -> list[pb.DecideResponse]:
    return [
        served.router.Decide(
            pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=30
        )
        for text in texts
    ]


def drift(served: Served, *, rebaseline: bool = False) -> admin_pb.NamespaceDrift:
    stub = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    response = stub.GetDrift(
        admin_pb.GetDriftRequest(namespace="default", rebaseline=rebaseline),
        metadata=[("authorization", f"Bearer {TOKEN}")],
        timeout=10,
    )
    return response.namespaces[0]


def stored(served: Served) -> list[tuple[str, int, bool, int, str]]:
    """(model, generation, frozen, decisions, token) of every stored reference."""
    with served.app.store.read() as session:
        rows = session.scalars(select(DriftReferenceRow).order_by(DriftReferenceRow.token))
        return [
            (r.embedding_model, r.generation, r.frozen_at is not None, len(r.cold), r.token)
            for r in rows
        ]


def test_the_traffic_is_warm_then_cold(db_url: str, serve: Callable[..., Served]) -> None:
    """The premise of the tests below: the two kinds of traffic differ in cold starts."""
    served = serve(db_url)
    assert {d.strategy for d in feed(served, WARM)} == {pb.STRATEGY_SEMANTIC}
    assert {d.strategy for d in feed(served, COLD)} == {pb.STRATEGY_CASCADE}


def test_a_restarted_server_reports_drift_against_the_stored_reference(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """A deploy on drifted traffic used to freeze that traffic as the new reference and report
    "no drift"; the reference frozen before the restart is kept and compared with."""
    first = serve(db_url, **DRIFT)
    feed(first, WARM[: SIZE // 2])
    assert drift(first).reference.decisions == SIZE // 2
    assert stored(first) == []  # a reference still filling is not stored, and reading wrote nothing
    feed(first, WARM[SIZE // 2 :])
    before = drift(first)
    assert (before.reference.decisions, before.reference.cold_start_rate) == (SIZE, 0.0)
    first.stop()

    second = serve(db_url, **DRIFT)
    after = drift(second)
    assert after.reference == before.reference
    assert after.reference_since == before.reference_since
    assert after.current.decisions == 0 and not after.drifted
    feed(second, COLD)
    moved = drift(second)
    assert moved.drifted and moved.reference == before.reference
    assert "cold-start rate 0% → 100%" in list(moved.moved)
    rows = stored(second)
    assert [row[:4] for row in rows] == [(second.app.embedder.model_id, 0, True, SIZE)]
    drift(second)
    assert stored(second) == rows  # reading the figures (no rebaseline) wrote nothing


def test_a_rebaseline_replaces_the_stored_reference_for_good(
    db_url: str, serve: Callable[..., Served]
) -> None:
    first = serve(db_url, **DRIFT)
    feed(first, WARM)
    feed(first, COLD)
    assert drift(first, rebaseline=True).drifted  # the report is of before the rebaseline
    first.stop()

    # Durable at once: a restart before the next reference is full does not bring back the old.
    second = serve(db_url, **DRIFT)
    assert drift(second).reference.decisions == 0
    assert [row[2:4] for row in stored(second)] == [(False, 0)]  # the rebaseline's marker
    feed(second, COLD)  # the new normal, accepted by the operator
    accepted = drift(second)
    assert (accepted.reference.decisions, accepted.reference.cold_start_rate) == (SIZE, 1.0)
    second.stop()

    third = serve(db_url, **DRIFT)
    kept = drift(third)
    assert kept.reference == accepted.reference
    assert kept.reference_since == accepted.reference_since
    feed(third, COLD)
    assert not drift(third).drifted


def test_replicas_share_one_reference_and_a_rebaseline_reaches_them_all(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """Each replica used to freeze its own reference from its own first decisions. The first
    frozen is stored; the others adopt it (at their next sync, or at start), even over one
    they froze themselves, and a rebaseline on one server reaches the others."""
    a = serve(db_url, drift_sync_seconds=0.1, **DRIFT)
    b = serve(db_url, drift_sync_seconds=0.1, **DRIFT)
    feed(a, WARM)
    reference = drift(a)
    wait_until(lambda: drift(b).reference_since != "", 30, "b to adopt a's reference")
    assert (drift(b).reference, drift(b).reference_since) == (
        reference.reference,
        reference.reference_since,
    )
    feed(b, COLD)
    assert drift(b).drifted

    # Both fill a reference at once (after a rebaseline), from different traffic: both end on
    # the one stored first.
    drift(a, rebaseline=True)
    wait_until(lambda: drift(b).reference.decisions == 0, 30, "b to start again")
    for i in range(SIZE):
        feed(a, [WARM[i]])
        feed(b, [WARM[i] if i % 2 else COLD[i]])

    def same() -> bool:
        rows = stored(a)
        return bool(rows and rows[0][2]) and drift(a).reference == drift(b).reference

    wait_until(same, 30, "a and b to hold the reference stored first")
    [(_, _, _, decisions, _)] = stored(a)
    assert decisions == SIZE
    assert drift(a).reference.cold_start_rate in (0.0, 0.5)  # a's, or b's
    assert drift(a).reference_since == drift(b).reference_since

    c = serve(db_url, **DRIFT)  # a server that starts now has it before its first decision
    assert (drift(c).reference, drift(c).reference_since) == (
        drift(a).reference,
        drift(a).reference_since,
    )


def test_a_reference_frozen_before_a_rebaseline_elsewhere_is_not_stored_over_it(
    db_url: str, make_app: Callable[..., App]
) -> None:
    """Two servers on one store, synced by hand: a reference frozen from traffic before a
    rebaseline on the other server must not become the stored one after it (a rebaseline
    that deleted the row let it), and of two references frozen at once the first written
    is the one both compare with."""
    a, b = (make_app(db_url, drift_reference_size=10, drift_window=10) for _ in range(2))
    for _ in range(10):
        b.drift.observe("default", 0.9, False)  # frozen on b, not yet written
    a.drift_keeper.rebaseline(["default"])
    b.drift_keeper.sync()
    assert b.drift.report("default").reference.decisions == 0  # b starts again too
    with a.store.read() as session:
        [row] = session.scalars(select(DriftReferenceRow))
        assert (row.frozen_at, row.cold) == (None, [])  # still the rebaseline's marker

    for i in range(10):
        a.drift.observe("default", 0.9, False)
        b.drift.observe("default", 0.2, i % 2 == 0)
    a.drift_keeper.sync()  # a writes first
    b.drift_keeper.sync()  # b finds a's and drops its own
    assert b.drift.report("default").reference == a.drift.report("default").reference
    assert b.drift.report("default").reference.cold_start_rate == 0.0
    b.drift.observe("default", 0.2, True)  # b's next decisions are current ones
    assert b.drift.report("default").current.decisions == 1


@pytest.fixture(scope="module")
def int8_embedder() -> OnnxEmbedder:
    return OnnxEmbedder(precision="int8")


def test_a_reference_of_another_embedding_model_or_generation_is_not_adopted(
    sqlite_url: str, serve: Callable[..., Served], int8_embedder: OnnxEmbedder
) -> None:
    """Similarities are those of one embedding model and one index generation: a reference of
    another one is not compared with. Another model keeps a reference of its own beside it;
    the first reference of a new generation replaces the old one."""
    first = serve(sqlite_url, **DRIFT)
    feed(first, WARM)
    first.stop()
    model = first.app.embedder.model_id
    [(_, _, _, _, first_token)] = stored(first)

    other = serve(sqlite_url, embedder=int8_embedder, **DRIFT)
    assert other.app.embedder.model_id != model
    assert drift(other).reference.decisions == 0
    feed(other, COLD)
    other.stop()
    rows = {row[0]: row for row in stored(other)}
    assert rows[model] == (model, 0, True, SIZE, first_token)  # left as it was
    assert rows[int8_embedder.model_id][1:4] == (0, True, SIZE)

    job = first.app.reindexer.start("default", None)
    assert first.app.reindexer.run(job, "default", None).generation == 1
    second = serve(sqlite_url, **DRIFT)
    assert feed(second, WARM[:1])[0].index_generation == 1
    assert drift(second).reference.decisions == 1  # a new reference, not generation 0's
    feed(second, WARM[1:])
    second_reference = drift(second)
    second.stop()
    rows = {row[0]: row for row in stored(second)}
    assert rows[model][1:3] == (1, True) and rows[model][4] != first_token
    assert rows[int8_embedder.model_id][1] == 0  # another model's: not this server's to touch

    third = serve(sqlite_url, **DRIFT)
    assert (drift(third).reference, drift(third).reference_since) == (
        second_reference.reference,
        second_reference.reference_since,
    )
