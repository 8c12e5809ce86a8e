"""Reindex jobs stay honest about their state: one whose process died reads failed
(abandoned) instead of running forever, and two reindexes of one namespace never run at once
(they would build the same generation into the same snapshot folder)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from routebook.catalog import Catalog, ModelSpec
from routebook.embed import Embedder
from routebook.embed.protocol import EmbedderInFront
from routebook.errors import FailedPrecondition
from routebook.index.snapshot import store_folder
from routebook.service.examples import ExampleInput
from routebook.store.examples import ExampleFilter
from routebook.store.identity import store_id
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.wiring import App
from tests.conftest import Served, wait_until

TOKEN = "reindex-jobs-token"
ADMIN = [("authorization", f"Bearer {TOKEN}")]


def add_namespace(app: App, name: str) -> None:
    app.namespaces.create(name, "", Catalog([ModelSpec("cheap", "t", 0.1, 0.4, 300, 128_000)]))


def test_a_second_reindex_of_a_namespace_is_refused_while_the_first_is_alive(
    db_url: str, make_app: Callable[..., App]
) -> None:
    app = make_app(db_url)
    add_namespace(app, "support")
    reindexer = app.reindexer
    first = reindexer.start("default", None)  # started, not yet run: alive, heartbeat fresh

    with pytest.raises(FailedPrecondition) as refused:
        reindexer.start("default", None)
    assert f"reindex job {first} of 'default' is running" in str(refused.value)
    with pytest.raises(FailedPrecondition, match="of 'default' is running"):
        reindexer.start(None, None)  # every namespace includes default
    other = reindexer.start("support", None)  # another namespace is no conflict
    assert reindexer.status(other).state == "running"

    assert reindexer.run(first, "default", None).state == "succeeded"
    with pytest.raises(FailedPrecondition, match="of 'support' is running"):
        reindexer.start(None, None)
    assert reindexer.run(other, "support", None).state == "succeeded"
    everything = reindexer.start(None, None)  # nothing running now
    with pytest.raises(FailedPrecondition, match="of every namespace is running"):
        reindexer.start("support", None)
    assert reindexer.run(everything, None, None).state == "succeeded"


def test_concurrent_starts_of_one_namespace_let_exactly_one_through(
    db_url: str, make_app: Callable[..., App]
) -> None:
    reindexer = make_app(db_url).reindexer
    callers = 6
    gate = threading.Barrier(callers)
    started: list[str] = []
    refused: list[str] = []

    def start() -> None:
        gate.wait()
        try:
            started.append(reindexer.start("default", None))
        except FailedPrecondition as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=start) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1 and len(refused) == callers - 1
    assert all(f"reindex job {started[0]} of 'default' is running" in r for r in refused)


def test_a_job_whose_heartbeat_stopped_reads_failed_and_blocks_nothing(
    db_url: str, make_app: Callable[..., App]
) -> None:
    # 0.05 s beats: abandoned after 12 missed ones, 0.6 s. The job is started but never run,
    # as if its process had been killed right after.
    reindexer = make_app(db_url, reindex_heartbeat_seconds=0.05).reindexer
    dead = reindexer.start("default", None)
    assert reindexer.status(dead).state == "running"
    wait_until(lambda: reindexer.status(dead).state == "failed", 30, "the job to read failed")
    status = reindexer.status(dead)
    assert status.error.startswith("abandoned: no heartbeat since ")
    assert "start the reindex again" in status.error
    again = reindexer.start("default", None)  # the dead job does not block
    assert reindexer.run(again, "default", None).state == "succeeded"
    assert reindexer.status(dead).state == "failed"


def test_a_running_job_keeps_its_heartbeat_through_a_long_silent_step(
    db_url: str, make_app: Callable[..., App]
) -> None:
    """A step that reports no progress for 20 heartbeats (as building a large IVF index does)
    must not get a live job declared abandoned."""
    reindexer = make_app(db_url, reindex_heartbeat_seconds=0.05).reindexer
    job = reindexer.start("default", None)
    seen: list[str] = []

    def slow_progress(_n: int) -> None:
        time.sleep(1.0)  # 20 beats of silence from the job's own work
        seen.append(reindexer.status(job).state)

    assert reindexer.run(job, "default", None, slow_progress).state == "succeeded"
    assert seen and set(seen) == {"running"}


def test_admin_reindex_refuses_a_second_job_with_failed_precondition(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, admin_token=TOKEN)
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    held = served.app.reindexer.start("default", None)  # alive, not yet run
    with pytest.raises(grpc.RpcError) as caught:
        admin.Reindex(admin_pb.ReindexRequest(namespace="default"), metadata=ADMIN, timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"reindex job {held} of 'default' is running" in (caught.value.details() or "")
    assert "GetReindexJob" in (caught.value.details() or "")


def test_a_damaged_snapshot_in_one_namespace_does_not_block_anothers_generation(
    sqlite_url: str, make_app: Callable[..., App]
) -> None:
    import shutil
    from pathlib import Path

    from sqlalchemy import select

    from routebook.store.tables import IndexGenerationRow

    app = make_app(sqlite_url)
    add_namespace(app, "support")
    reindexer = app.reindexer
    assert reindexer.run(reindexer.start(None, None), None, None).state == "succeeded"
    default_id = app.directory.resolve("default").id
    with app.store.read() as session:
        path = session.scalars(
            select(IndexGenerationRow.snapshot_path).where(
                IndexGenerationRow.namespace_id == default_id
            )
        ).one()
    shutil.rmtree(Path(path))  # default's generation 1 is gone from disk
    app.follower.tick()
    assert app.registry.get("default").generation == 0  # refused, still serving
    assert app.registry.get("support").generation == 1  # its own generation 1 is fine


DELETED = "track my package please"


class RelabelWhileEmbedding(EmbedderInFront):
    """The real model, with an admin relabelling one example and deleting another while the
    reindex embeds its first batch: the deleted example's row is gone by the write-back."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.app: App | None = None

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        app, self.app = self.app, None  # once
        if app is not None and len(texts) > 1:
            app.examples.upsert("default", [ExampleInput("where is my order?", None, "mid")])
            rows, _means, _token = app.examples.list("default", ExampleFilter(), 100, "")
            app.examples.delete("default", [r.id for r in rows if r.text == DELETED])
        return self.inner.embed(texts)


def test_a_reindex_survives_an_example_relabelled_while_it_embeds(
    db_url: str, make_app: Callable[..., App], embedder: Embedder
) -> None:
    relabelling = RelabelWhileEmbedding(embedder)
    app = make_app(db_url, embedder=relabelling)
    relabelling.app = app
    job = app.reindexer.start("default", None)
    assert app.reindexer.run(job, "default", None).state == "succeeded"
    assert relabelling.app is None  # the relabel did happen, during the reindex
    # The relabelled example serves with its new label.
    index = app.registry.get("default")
    labels = [f.best_model for f in index.all_facts() if f.text == "where is my order?"]
    assert labels == ["mid"]
    assert [f for f in index.all_facts() if f.text == DELETED] == []


# Refuses to mark a reindex job succeeded twice, as a store going away at that moment would:
# SQLSTATE 08006 is a connection failure, which psycopg raises as an OperationalError.
FAIL_FINISH_TWICE = """
CREATE SEQUENCE finish_attempts;
CREATE FUNCTION fail_finish() RETURNS trigger AS $$
BEGIN
  IF NEW.state = 'succeeded' AND nextval('finish_attempts') <= 2 THEN
    RAISE EXCEPTION 'connection to the store lost' USING ERRCODE = '08006';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER fail_finish BEFORE UPDATE ON reindex_jobs
  FOR EACH ROW EXECUTE FUNCTION fail_finish();
"""


def test_a_store_outage_after_publishing_does_not_mark_the_job_failed(
    postgres_url: str, make_app: Callable[..., App]
) -> None:
    """The generation is published and served: a job then marked "failed" would have someone
    re-embed everything for nothing. The end is written once the store answers again."""
    from sqlalchemy import create_engine, text

    reindexer = make_app(postgres_url).reindexer
    job = reindexer.start("default", None)
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(FAIL_FINISH_TWICE)
        status = reindexer.run(job, "default", None)
        with engine.connect() as connection:
            attempts = connection.execute(text("SELECT last_value FROM finish_attempts")).scalar()
    finally:
        engine.dispose()
    assert (status.state, status.generation, status.error) == ("succeeded", 1, "")
    assert attempts == 3  # two refused, the third written


def test_a_job_over_every_namespace_reports_no_single_generation(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """A Reindex of every namespace reported the last namespace's generation as its own
    (ReindexJob.generation); it is 0, and GetStats has each namespace's."""
    served = serve(sqlite_url, admin_token=TOKEN)
    add_namespace(served.app, "support")
    reindexer = served.app.reindexer
    assert reindexer.run(reindexer.start("default", None), "default", None).generation == 1
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    job = admin.Reindex(admin_pb.ReindexRequest(), metadata=ADMIN, timeout=10)
    wait_until(
        lambda: reindexer.status(job.job_id).state != "running", 60, "the reindex of everything"
    )
    job = admin.GetReindexJob(admin_pb.GetReindexJobRequest(job_id=job.job_id), metadata=ADMIN)
    assert job.state == admin_pb.JOB_STATE_SUCCEEDED, job.error
    assert (job.namespace, job.generation, job.index_kind) == ("", 0, "")

    def served_generations() -> dict[str, int]:
        stats = admin.GetStats(admin_pb.GetStatsRequest(), metadata=ADMIN, timeout=10)
        return {entry.namespace: entry.index_generation for entry in stats.namespaces}

    wait_until(lambda: served_generations() == {"default": 2, "support": 1}, 30, "the swap")


def test_a_background_job_that_fails_is_logged_once(
    sqlite_url: str, make_app: Callable[..., App], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reindex started through the Admin API has no caller to tell: its failure is on the
    job row and in the server's log (the log moved there from the job itself, which also
    logged the failures `routebook reindex` prints)."""
    app = make_app(sqlite_url)
    folder = store_folder(app.settings.snapshot_dir, store_id(app.store))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "default").write_text("")  # where the namespace's snapshots go: fails the job
    with caplog.at_level(logging.ERROR, logger="routebook"):
        job = app.reindexer.run_in_background("default", None)
        wait_until(lambda: app.reindexer.status(job).state == "failed", 60, "the job to fail")
        wait_until(lambda: bool(caplog.records), 10, "the failure to be logged")
    status = app.reindexer.status(job)
    assert "cannot hold snapshots: File exists" in status.error
    assert [r.getMessage() for r in caplog.records] == [f"reindex job {job} failed: {status.error}"]
