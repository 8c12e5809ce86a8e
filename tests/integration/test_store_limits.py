"""Id lists built from the data can be longer than one statement may bind (SQLite: 32,766
parameters, psycopg: 65,535): a server starting from an old snapshot passes every example with
outcomes since, and `stats` every decision in its window. They are read in chunks."""

from __future__ import annotations

from collections.abc import Callable

from routebook.store import examples as ex_store
from routebook.store import follow
from routebook.store import stats as stats_store
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served

MANY = 70_000  # past both limits


def test_id_lists_past_the_bind_limit_are_read_in_chunks(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    recorded = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="limits-1",
            messages=[pb.Message(role="user", content="where is my parcel?")],
            model="small",
            quality=0.75,
        ),
        timeout=30,
    )
    real = recorded.example_id
    ids = [*range(10_000_000, 10_000_000 + MANY), real]  # the real one is in the last chunk
    with served.app.store.read() as session:
        assert ex_store.outcome_means(session, example_ids=ids) == {real: [("small", 0.75, 1)]}
        found = follow.examples_with_ids(session, ids)
        assert [e.id for e in found] == [real]
        decisions = [f"no-such-decision-{n}" for n in range(MANY)]
        assert stats_store.outcome_quality(session, decisions) == {}


def test_deleting_more_ids_than_one_statement_binds(
    db_url: str, serve: Callable[..., Served]
) -> None:
    """`routes sync --prune` of a large route passes every removed id at once: 70,000 ids used
    to fail on PostgreSQL ("number of parameters must be between 0 and 65535"), looking like
    an outage, every time."""
    served = serve(db_url)
    recorded = served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="limits-2",
            messages=[pb.Message(role="user", content="cancel my order please")],
            model="small",
            quality=1.0,
        ),
        timeout=30,
    )
    real = recorded.example_id
    namespace_id = served.app.directory.resolve("default").id
    ids = [*range(10_000_000, 10_000_000 + MANY), real]
    with served.app.store.write() as session:
        assert ex_store.delete_examples(session, namespace_id, ids) == [real]
    with served.app.store.read() as session:
        assert follow.examples_with_ids(session, [real]) == []
