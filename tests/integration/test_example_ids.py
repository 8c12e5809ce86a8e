"""An example keeps its id when an upsert relabels it: the id a client got from the first
upsert deletes it, on the server that wrote it, on a replica and after a restart from a
snapshot. A relabel used to be a delete plus an insert under a new id, so deleting by the
first id found nothing and the example stayed served."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from routebook.routefiles import text_hash
from routebook.service.examples import ExampleInput
from routebook.store import examples as ex_store
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.v1 import router_pb2 as pb
from routebook.wiring import App
from tests.conftest import Served, wait_until

TOKEN = "example-ids-token"
ADMIN = [("authorization", f"Bearer {TOKEN}")]
TEXT = "please export my whole purchase history to a spreadsheet"


def upsert(served: Served, best_model: str) -> admin_pb.UpsertExamplesResponse:
    response: admin_pb.UpsertExamplesResponse = admin_pb2_grpc.AdminStub(
        served.channel
    ).UpsertExamples(
        admin_pb.UpsertExamplesRequest(
            namespace="default",
            examples=[admin_pb.ExampleInput(text=TEXT, route="exports", best_model=best_model)],
        ),
        metadata=ADMIN,
        timeout=30,
    )
    return response


def delete(served: Served, example_id: int) -> admin_pb.DeleteExamplesResponse:
    response: admin_pb.DeleteExamplesResponse = admin_pb2_grpc.AdminStub(
        served.channel
    ).DeleteExamples(
        admin_pb.DeleteExamplesRequest(namespace="default", example_ids=[example_id]),
        metadata=ADMIN,
        timeout=30,
    )
    return response


def served_as(served: Served) -> list[tuple[int, str]]:
    """(id, best model) of the neighbours with TEXT that Decide shows for TEXT."""
    decision = served.router.Decide(
        pb.DecideRequest(messages=[pb.Message(role="user", content=TEXT)]),
        metadata=ADMIN,  # full evidence
        timeout=10,
    )
    return [(n.example_id, n.best_model) for n in decision.neighbours if n.text_snippet == TEXT]


def test_an_updated_example_keeps_its_id_on_the_writer_and_a_replica(
    db_url: str, serve: Callable[..., Served]
) -> None:
    writer = serve(db_url, admin_token=TOKEN, follow_interval_seconds=0.1)
    replica = serve(db_url, admin_token=TOKEN, follow_interval_seconds=0.1)
    first = upsert(writer, "small")
    assert (first.added, len(first.example_ids)) == (1, 1)
    (example_id,) = first.example_ids
    wait_until(lambda: served_as(replica) == [(example_id, "small")], 10, "the replica")

    relabelled = upsert(writer, "mid")
    assert (relabelled.updated, list(relabelled.example_ids)) == (1, [example_id])
    assert served_as(writer) == [(example_id, "mid")]
    wait_until(lambda: served_as(replica) == [(example_id, "mid")], 10, "the relabel")

    deleted = delete(writer, example_id)
    assert (deleted.deleted, list(deleted.missing_ids)) == (1, [])
    assert served_as(writer) == []
    wait_until(lambda: served_as(replica) == [], 10, "the delete on the replica")


def test_an_updated_example_keeps_its_id_after_a_restart_from_a_snapshot(
    db_url: str, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot holds the first label; the relabel after it reaches a restarted server
    through the tombstones it catches up on, and so does the delete."""
    first = serve(db_url, admin_token=TOKEN)
    (example_id,) = upsert(first, "small").example_ids
    admin = admin_pb2_grpc.AdminStub(first.channel)
    job = admin.Reindex(admin_pb.ReindexRequest(namespace="default"), metadata=ADMIN)
    while job.state == admin_pb.JOB_STATE_RUNNING:
        time.sleep(0.1)
        job = admin.GetReindexJob(admin_pb.GetReindexJobRequest(job_id=job.job_id), metadata=ADMIN)
    assert (job.state, job.generation) == (admin_pb.JOB_STATE_SUCCEEDED, 1)
    assert list(upsert(first, "mid").example_ids) == [example_id]

    with caplog.at_level(logging.WARNING, logger="routebook.follower"):
        restarted = serve(db_url, admin_token=TOKEN)
        assert served_as(restarted) == [(example_id, "mid")]
        assert (delete(restarted, example_id).deleted, served_as(restarted)) == (1, [])
        again = serve(db_url, admin_token=TOKEN)  # the snapshot, a relabel and a delete after
        assert served_as(again) == []
    assert [r.getMessage() for r in caplog.records] == []  # both loaded the snapshot
    assert restarted.app.registry.get("default").generation == 1


def test_a_relabel_of_an_example_deleted_meanwhile_adds_it_again(
    postgres_url: str, make_app: Callable[..., App]
) -> None:
    """On PostgreSQL writers do not wait for each other: a delete can commit between the
    upsert's read of the example and its relabel. The relabel then finds no row, and must
    not answer with the deleted id (the acknowledged label would be lost)."""
    app = make_app(postgres_url)
    info = app.directory.resolve("default")
    (deleted,) = app.examples.upsert("default", [ExampleInput(TEXT, None, "small")]).example_ids
    with app.store.write() as session:
        present = ex_store.reference_examples_by_hash(session, info.id, [text_hash(TEXT)])
        assert app.examples.delete("default", [deleted])[0] == [deleted]  # another writer
        row = ex_store.relabel_reference(session, present[text_hash(TEXT)], None, "mid", "admin")
        session.flush()
        relabelled = row.id
    assert relabelled != deleted
    app.follower.catch_up(info)
    index = app.registry.get("default")
    assert deleted not in index
    assert (index.facts(relabelled).text, index.facts(relabelled).best_model) == (TEXT, "mid")
    rows, _means, _token = app.examples.list("default", ex_store.ExampleFilter(), 1000, "")
    assert [(r.id, r.best_model) for r in rows if r.text == TEXT] == [(relabelled, "mid")]
