"""Replicas on one PostgreSQL, reindex killed half-way, and restart from a snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import func, select

from routebook.embed.protocol import EmbedderInFront
from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.service.examples import ExampleInput
from routebook.store.tables import IndexGenerationRow, ReindexJobRow
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc, router_pb2_grpc
from routebook.v1 import router_pb2 as pb
from routebook.wiring import App
from tests.conftest import TEST_ROUTES, Served
from tests.processes import server_process

TOKEN = "replica-token"
ADMIN = [("authorization", f"Bearer {TOKEN}")]
UNSEEN = "translate this Latin inscription from a Roman tombstone into modern Welsh"
PARAPHRASE = "turn the Latin text on an old Roman gravestone into present-day Welsh"


def decide(channel: grpc.Channel, text: str) -> pb.DecideResponse:
    router = router_pb2_grpc.RouterStub(channel)
    response: pb.DecideResponse = router.Decide(
        pb.DecideRequest(messages=[pb.Message(role="user", content=text)]), timeout=10
    )
    return response


def seconds_until(condition: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise AssertionError(f"not within {limit}s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_two_server_processes_share_outcomes_and_deletions(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = {
        "admin_token": TOKEN,
        "follow_interval_seconds": "0.2",
        "snapshot_dir": str(tmp_path / "snapshots"),
    }
    with (
        server_process(postgres_url, tmp_path, TEST_ROUTES, **settings) as (_a, port_a),
        server_process(postgres_url, tmp_path, TEST_ROUTES, **settings) as (_b, port_b),
        grpc.insecure_channel(f"127.0.0.1:{port_a}") as a,
        grpc.insecure_channel(f"127.0.0.1:{port_b}") as b,
    ):
        assert decide(b, PARAPHRASE).strategy == pb.STRATEGY_CASCADE
        recorded = router_pb2_grpc.RouterStub(a).RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome_id="replica-1",
                messages=[pb.Message(role="user", content=UNSEEN)],
                model="small",
                quality=1.0,
            ),
            timeout=10,
        )

        def b_sees_it() -> bool:
            return recorded.example_id in [n.example_id for n in decide(b, PARAPHRASE).neighbours]

        seconds_until(b_sees_it, limit=30)  # the follower polls every 0.2 s
        assert decide(b, PARAPHRASE).model == "small"

        admin_b = admin_pb2_grpc.AdminStub(b)  # type: ignore[no-untyped-call]
        deleted = admin_b.DeleteExamples(
            admin_pb.DeleteExamplesRequest(namespace="default", example_ids=[recorded.example_id]),
            metadata=ADMIN,
            timeout=10,
        )
        assert deleted.deleted == 1

        def a_forgot_it() -> bool:
            ids = [n.example_id for n in decide(a, PARAPHRASE).neighbours]
            return recorded.example_id not in ids

        seconds_until(a_forgot_it, limit=30)


def test_reindex_killed_half_way_leaves_serving_untouched_and_can_run_again(
    postgres_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    snapshots = tmp_path / "snapshots"
    served = serve(postgres_url, snapshot_dir=snapshots, follow_interval_seconds=0.2)
    texts = [
        f"where is order number {n} that I placed on {day}"
        for n in range(500)
        for day in ("monday", "friday", "sunday", "tuesday")
    ]
    served.app.examples.upsert("default", [ExampleInput(t, "orders", "small") for t in texts])
    before = decide(served.channel, "where is my parcel?")
    assert before.index_generation == 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBOOK_")}
    env["ROUTEBOOK_REINDEX_HEARTBEAT_SECONDS"] = "0.25"  # abandoned 3 s after it dies
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "routebook",
            "reindex",
            "--db",
            postgres_url,
            "--snapshot-dir",
            str(snapshots),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def half_way() -> bool:
            with served.app.store.read() as session:
                done = session.scalar(select(func.max(ReindexJobRow.done))) or 0
            return 0 < done < len(texts)

        seconds_until(half_way, limit=120)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()

    with served.app.store.read() as session:
        assert session.scalar(select(func.count()).select_from(IndexGenerationRow)) == 0
        killed = session.scalars(select(ReindexJobRow)).one()
        assert killed.state == "running"  # died, never finished
    reindexer = served.app.reindexer
    # Once 12 beats are missed, it reads failed (abandoned) and no longer blocks a new start.
    seconds_until(lambda: reindexer.status(killed.id).state == "failed", limit=30)
    assert reindexer.status(killed.id).error.startswith("abandoned: no heartbeat since")
    after_kill = decide(served.channel, "where is my parcel?")
    assert (after_kill.index_generation, after_kill.model) == (0, before.model)

    status = reindexer.run(reindexer.start(None, None), None, None)
    assert (status.state, status.done) == ("succeeded", len(texts) + 14)
    assert [(p.namespace, p.generation) for p in status.published] == [("default", 1)]
    seconds_until(lambda: decide(served.channel, "where is my parcel?").index_generation == 1, 30)


class CountingEmbedder(EmbedderInFront):
    """The real model, counting the texts it embeds."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        super().__init__(inner)
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded += len(texts)
        return self.inner.embed(texts)


@pytest.mark.parametrize("kind", ["flat"])
def test_restart_from_a_snapshot_of_20000_examples_embeds_nothing(
    sqlite_url: str,
    make_app: Callable[..., App],
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    kind: str,
) -> None:
    from routebook.domain import Message
    from routebook.server.convert import decide_response
    from routebook.service.requests import DecideQuery

    snapshots = tmp_path / "snapshots"
    first = make_app(sqlite_url, snapshot_dir=snapshots)
    subjects = [
        "invoice",
        "parcel",
        "password",
        "refund",
        "subscription",
        "warranty",
        "delivery",
        "account",
        "coupon",
        "receipt",
    ]
    texts = [
        f"question {n} about my {subjects[n % 10]} from {n // 10 % 50} days ago"
        for n in range(20_000)
    ]
    for start in range(0, len(texts), 10_000):
        first.examples.upsert(
            "default", [ExampleInput(t, "bulk", "small") for t in texts[start : start + 10_000]]
        )
    reindexer = first.reindexer
    status = reindexer.run(reindexer.start("default", kind), "default", kind, reembed=False)
    assert status.state == "succeeded"

    def answer(app: App) -> pb.DecideResponse:
        decision = app.routing.decide(
            DecideQuery(messages=(Message("user", "a question about my refund"),))
        )
        return decide_response(decision)

    before = answer(first)
    first.close()

    counting = CountingEmbedder(embedder)
    restarted = make_app(sqlite_url, snapshot_dir=snapshots, embedder=counting)
    index = restarted.registry.get("default")
    assert (len(index), index.generation) == (20_014, 1)
    assert counting.embedded == 0  # nothing re-embedded at start
    after = answer(restarted)
    assert counting.embedded == 1  # only the query
    assert (after.model, after.strategy) == (before.model, before.strategy)
    assert [n.example_id for n in after.neighbours] == [n.example_id for n in before.neighbours]


def test_a_corrupted_snapshot_falls_back_to_the_store(
    sqlite_url: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    snapshots = tmp_path / "snapshots"
    first = make_app(sqlite_url, snapshot_dir=snapshots)
    status = first.reindexer.run(first.reindexer.start(None, None), None, None)
    assert [(p.namespace, p.generation) for p in status.published] == [("default", 1)]
    first.close()
    index_files = list(snapshots.rglob("index.faiss"))
    assert len(index_files) == 1
    index_files[0].write_bytes(index_files[0].read_bytes()[:100])  # truncate it

    restarted = make_app(sqlite_url, snapshot_dir=snapshots)
    index = restarted.registry.get("default")
    assert (len(index), index.generation) == (14, 1)  # rebuilt from the store, same generation


def test_one_failing_namespace_does_not_stop_the_others_following(
    sqlite_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policy_routes = Path(__file__).parents[1] / "data" / "policy_routes"
    writer = make_app(sqlite_url, routes_dir=policy_routes)
    follower_app = make_app(sqlite_url, routes_dir=policy_routes, snapshot_dir=tmp_path / "b")
    follower = follower_app.follower
    real_catch_up = follower.catch_up
    failed: list[str] = []

    def catch_up_failing_but_strict(info: object) -> None:
        name = info.name  # type: ignore[attr-defined]
        if name != "strict":
            failed.append(name)
            raise RuntimeError(f"{name}: a fault injected for this test")
        real_catch_up(info)  # type: ignore[arg-type]

    monkeypatch.setattr(follower, "catch_up", catch_up_failing_but_strict)
    text = "review this lock-free ring buffer for ABA problems"
    writer.examples.upsert("strict", [ExampleInput(text, None, "frontier")])
    assert text not in {f.text for f in follower_app.registry.get("strict").all_facts()}
    follower.tick()  # logs the other namespaces' failures, does not raise
    assert sorted(failed) == ["default", "guarded", "ruled"]
    assert text in {f.text for f in follower_app.registry.get("strict").all_facts()}


def test_a_committed_upsert_is_acknowledged_when_the_index_catch_up_fails(
    sqlite_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store answers the commit, then goes away before this server's index catches up: the
    write is committed, so the call says so, and the follower's next tick indexes it."""
    from sqlalchemy.exc import OperationalError

    app = make_app(sqlite_url)
    follower = app.follower
    real_catch_up = follower.catch_up

    def store_gone(_info: object) -> None:
        raise OperationalError("SELECT ...", {}, Exception("the store went away"))

    monkeypatch.setattr(follower, "catch_up", store_gone)
    text = "an example committed just before the store went away"
    result = app.examples.upsert("default", [ExampleInput(text, None, "small")])
    assert result.added == 1 and len(result.example_ids) == 1
    index = app.registry.get("default")
    assert text not in {f.text for f in index.all_facts()}
    monkeypatch.setattr(follower, "catch_up", real_catch_up)
    follower.tick()
    assert text in {f.text for f in index.all_facts()}


def test_a_committed_namespace_change_is_acknowledged_when_serving_it_fails(
    sqlite_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CreateNamespace and UpdateCatalog commit, then the store goes away before this server
    serves the change: the answer is what was committed, and the next follower tick serves it."""
    from sqlalchemy.exc import OperationalError

    from routebook.catalog import Catalog, ModelSpec

    app = make_app(sqlite_url)
    directory = app.directory
    real_refresh = directory.refresh

    def store_gone() -> object:
        raise OperationalError("SELECT ...", {}, Exception("the store went away"))

    models = [ModelSpec("cheap", "t", 0.1, 0.4, 300, 128_000)]
    monkeypatch.setattr(directory, "refresh", store_gone)
    created = app.namespaces.create("support", "help desk", Catalog(models))
    assert (created.name, created.catalog.names) == ("support", ("cheap",))
    more = Catalog([*models, ModelSpec("strong", "t", 3.0, 15.0, 1500, 200_000)])
    updated = app.namespaces.update_catalog("support", created.catalog_version, more)
    assert updated.catalog_version == created.catalog_version + 1
    monkeypatch.setattr(directory, "refresh", real_refresh)
    app.follower.tick()
    assert app.directory.resolve("support").catalog.names == ("cheap", "strong")
    assert app.namespaces.get("support").catalog_version == updated.catalog_version


def hold_the_read_of(
    thread_name: str, app: App, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Hold a directory refresh made by the thread so named between its store read and its
    install: (read, go): `read` is set once it has read, and it installs once `go` is set."""
    directory = app.directory
    real_read = directory._read
    read, go = threading.Event(), threading.Event()

    def held() -> object:
        infos = real_read()
        if threading.current_thread().name == thread_name:
            read.set()
            assert go.wait(30), "the held refresh was never let go"
        return infos

    monkeypatch.setattr(directory, "_read", held)
    return read, go


def test_a_follower_tick_that_read_before_an_admin_write_does_not_undo_it(
    db_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower tick reads the namespaces, CreateNamespace and then UpdateCatalog commit and
    serve their change, and only then does the tick install what it read: the older view must
    not replace the newer one (it did: the new namespace read as unknown, then the catalog as
    the old one, until the next tick)."""
    from routebook.catalog import Catalog, ModelSpec

    app = make_app(db_url)
    models = [ModelSpec("cheap", "t", 0.1, 0.4, 300, 128_000)]

    read, go = hold_the_read_of("follower-tick", app, monkeypatch)
    tick = threading.Thread(target=app.follower.tick, name="follower-tick")
    tick.start()
    assert read.wait(30)
    created = app.namespaces.create("support", "help desk", Catalog(models))
    assert app.directory.resolve("support").catalog.names == ("cheap",)
    go.set()
    tick.join(30)
    assert not tick.is_alive()
    assert app.directory.resolve("support").catalog.names == ("cheap",)
    assert app.follower.is_loaded("support")

    more = Catalog([*models, ModelSpec("strong", "t", 3.0, 15.0, 1500, 200_000)])
    read, go = hold_the_read_of("follower-tick-2", app, monkeypatch)
    tick = threading.Thread(target=app.follower.tick, name="follower-tick-2")
    tick.start()
    assert read.wait(30)
    app.namespaces.update_catalog("support", created.catalog_version, more)
    go.set()
    tick.join(30)
    assert not tick.is_alive()
    assert app.directory.resolve("support").catalog.names == ("cheap", "strong")
    # A refresh that starts later still installs what it reads.
    app.follower.tick()
    assert app.directory.resolve("support").catalog.names == ("cheap", "strong")
