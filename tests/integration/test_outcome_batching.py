"""RecordOutcome's group commit over real gRPC, on a real SQLite file and a real PostgreSQL.

Concurrent outcomes share transactions; each must still be acknowledged only once stored,
stored exactly once, idempotent on its outcome_id even when its repeats share a batch, and
visible to the next Decide at once. One row the store refuses fails alone.

To make a batch for certain, a test holds the store's write lock from outside the server
(`BEGIN IMMEDIATE` on SQLite, `LOCK TABLE outcomes` on PostgreSQL): the first outcome's
commit then waits inside its transaction and the others queue behind it, to be written
together once the lock is let go.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import grpc
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from routebook.store.tables import ExampleRow, OutcomeRow
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served


def user(content: str) -> list[pb.Message]:
    return [pb.Message(role="user", content=content)]


def by_messages(outcome_id: str, content: str, quality: float = 1.0) -> pb.RecordOutcomeRequest:
    return pb.RecordOutcomeRequest(
        outcome_id=outcome_id, messages=user(content), model="small", quality=quality
    )


def stored_outcomes(served: Served) -> dict[str, tuple[int, float]]:
    """outcome_id → (example id, quality) for every stored outcome."""
    with served.app.store.read() as session:
        rows = session.execute(
            select(OutcomeRow.outcome_id, OutcomeRow.example_id, OutcomeRow.quality)
        ).all()
    assert len(rows) == len({r.outcome_id for r in rows})
    return {r.outcome_id: (r.example_id, r.quality) for r in rows}


def history_examples(served: Served) -> int:
    with served.app.store.read() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(ExampleRow).where(ExampleRow.source == "history")
            )
            or 0
        )


def wait_until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.01)


@contextmanager
def store_write_lock(db_url: str) -> Iterator[None]:
    """Hold the store's write lock from another connection for the duration."""
    if db_url.startswith("sqlite"):
        lite = sqlite3.connect(str(make_url(db_url).database), isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lite.execute("ROLLBACK")
            lite.close()
        return
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE outcomes IN SHARE ROW EXCLUSIVE MODE"))
            try:
                yield
            finally:
                connection.rollback()
    finally:
        engine.dispose()


def record_in_one_batch(
    served: Served, db_url: str, requests: list[pb.RecordOutcomeRequest]
) -> list[pb.RecordOutcomeResponse | grpc.RpcError]:
    """Record requests[0] alone, then requests[1:] together in one batch; the answers in order
    (a response, or the error the call raised)."""
    commits = served.app.outcomes.commits

    def call(request: pb.RecordOutcomeRequest) -> pb.RecordOutcomeResponse | grpc.RpcError:
        try:
            response: pb.RecordOutcomeResponse = served.router.RecordOutcome(request, timeout=60)
            return response
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        futures: list[Future[pb.RecordOutcomeResponse | grpc.RpcError]] = []
        with store_write_lock(db_url):
            batches = commits.batches
            futures.append(pool.submit(call, requests[0]))
            wait_until(lambda: commits.batches == batches + 1)  # its commit is waiting
            futures += [pool.submit(call, r) for r in requests[1:]]
            wait_until(lambda: commits.queued == len(requests) - 1)
        answers = [f.result(timeout=60) for f in futures]
    assert commits.largest_batch >= len(requests) - 1
    return answers


def test_200_concurrent_outcomes_are_acknowledged_and_stored_exactly_once(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    texts = [f"order {n}: my parcel {n * 7919} has not arrived yet" for n in range(200)]
    with ThreadPoolExecutor(16) as pool:
        decisions = list(
            pool.map(lambda t: served.router.Decide(pb.DecideRequest(messages=user(t))), texts)
        )

    def record(n: int) -> pb.RecordOutcomeResponse:
        request = pb.RecordOutcomeRequest(
            outcome_id=f"batch-{n}",
            decision_id=decisions[n].decision_id,
            model="mid",
            quality=0.9,
        )
        response: pb.RecordOutcomeResponse = served.router.RecordOutcome(request, timeout=60)
        return response

    with ThreadPoolExecutor(16) as pool:
        first = list(pool.map(record, range(200)))
    assert not any(r.duplicate for r in first)
    stored = stored_outcomes(served)
    assert {f"batch-{n}": (r.example_id, 0.9) for n, r in enumerate(first)} == stored
    assert len({r.example_id for r in first}) == 200 == history_examples(served)
    # (That concurrent outcomes share commits is shown without depending on scheduling by the
    # tests that use `record_in_one_batch`.)

    # Every retry, all at once: acknowledged as duplicates with the first result, none written.
    with ThreadPoolExecutor(16) as pool:
        again = list(pool.map(record, range(200)))
    assert all(r.duplicate for r in again)
    assert [r.example_id for r in again] == [r.example_id for r in first]
    assert stored_outcomes(served) == stored

    # The index learned each one at once.
    for n in (0, 77, 199):
        decided = served.router.Decide(pb.DecideRequest(messages=user(texts[n])))
        top = decided.neighbours[0]
        assert top.example_id == first[n].example_id and top.similarity > 0.99
        assert [(o.model, o.count) for o in top.outcomes] == [("mid", 1)]


def test_repeats_of_an_outcome_id_in_one_batch_are_written_once(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    shared_text = "can I change the colour of the sofa I ordered yesterday"
    requests = [
        by_messages("lead", "where is my order?"),
        *[by_messages("same", shared_text, quality=q) for q in (0.1, 0.2, 0.3, 0.4)],
        by_messages("other-1", shared_text, quality=1.0),
        by_messages("other-2", "do you deliver to the Orkney islands"),
    ]
    answers = record_in_one_batch(served, db_url, requests)
    assert all(isinstance(a, pb.RecordOutcomeResponse) for a in answers), answers
    responses = [a for a in answers if isinstance(a, pb.RecordOutcomeResponse)]
    same = responses[1:5]
    assert sum(not r.duplicate for r in same) == 1
    winner = next(r for r in same if not r.duplicate)
    assert {(r.example_id, r.quality) for r in same} == {(winner.example_id, winner.quality)}
    assert responses[5].example_id == winner.example_id  # one example for the shared text

    stored = stored_outcomes(served)
    assert sorted(stored) == ["lead", "other-1", "other-2", "same"]
    assert stored["same"] == (winner.example_id, winner.quality)
    facts = served.app.registry.get("default").facts(winner.example_id)
    assert [(o.model, o.count) for o in facts.outcomes] == [("small", 2)]

    # A retry after the batch gets the same first result.
    again = served.router.RecordOutcome(by_messages("same", shared_text, 0.9), timeout=30)
    assert again.duplicate and (again.example_id, again.quality) == (
        winner.example_id,
        winner.quality,
    )


def refuse_marked_outcomes(db_url: str) -> None:
    """Make the store itself refuse any outcome whose id starts with 'refused'."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            if db_url.startswith("sqlite"):
                connection.execute(
                    text(
                        "CREATE TRIGGER refuse_marked BEFORE INSERT ON outcomes "
                        "WHEN NEW.outcome_id LIKE 'refused%' "
                        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                    )
                )
                return
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF NEW.outcome_id LIKE 'refused%' THEN "
                    "RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; "
                    "END IF; RETURN NEW; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_marked BEFORE INSERT ON outcomes "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_marked()"
                )
            )
    finally:
        engine.dispose()


def test_a_row_the_store_refuses_fails_alone_and_its_batch_is_written(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    refuse_marked_outcomes(db_url)
    texts = [f"question {n} about returning a damaged lamp" for n in range(8)]
    requests = [by_messages(f"good-{n}", t) for n, t in enumerate(texts)]
    requests.insert(4, by_messages("refused-1", "a question the store will not take"))
    answers = record_in_one_batch(served, db_url, requests)

    refused = answers.pop(4)
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "store refused this outcome" in str(refused.details())
    assert "refused by the test" in str(refused.details())
    assert all(isinstance(a, pb.RecordOutcomeResponse) and not a.duplicate for a in answers)
    stored = stored_outcomes(served)
    assert sorted(stored) == sorted(f"good-{n}" for n in range(8))
    # Each acknowledged outcome is in the index too.
    index = served.app.registry.get("default")
    for answer in answers:
        assert isinstance(answer, pb.RecordOutcomeResponse)
        assert answer.example_id in index


def test_the_next_decide_sees_each_outcome_at_once(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    query = "my invoice shows the wrong billing address after I moved house"
    decision = served.router.Decide(pb.DecideRequest(messages=user(query)))

    def record(outcome_id: str, model: str, quality: float) -> pb.RecordOutcomeResponse:
        request = pb.RecordOutcomeRequest(
            outcome_id=outcome_id, decision_id=decision.decision_id, model=model, quality=quality
        )
        response: pb.RecordOutcomeResponse = served.router.RecordOutcome(request, timeout=30)
        return response

    def evidence() -> list[tuple[str, float, int]]:
        top = served.router.Decide(pb.DecideRequest(messages=user(query))).neighbours[0]
        assert top.example_id == recorded.example_id and top.similarity > 0.99
        return [(o.model, round(o.mean_quality, 3), o.count) for o in top.outcomes]

    recorded = record("first", "mid", 1.0)
    assert evidence() == [("mid", 1.0, 1)]  # a new example, indexed before the answer
    again = record("second", "small", 0.0)
    assert again.example_id == recorded.example_id
    assert evidence() == [("mid", 1.0, 1), ("small", 0.0, 1)]  # an existing one, updated
    # Concurrent outcomes on the one example: the index ends with all of them.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: record(f"more-{n}", "small", 1.0), range(8)))
    assert evidence() == [("mid", 1.0, 1), ("small", round(8 / 9, 3), 9)]


def test_outcomes_queued_during_a_store_lock_are_acknowledged_after_it(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """No caller is answered while the commit holding its row is still waiting."""
    served = serve(sqlite_url)
    answered = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        with store_write_lock(sqlite_url):
            future = pool.submit(
                served.router.RecordOutcome, by_messages("held", "is my refund on its way"), 30
            )
            future.add_done_callback(lambda _f: answered.set())
            assert not answered.wait(1.0), "answered before the commit could happen"
            assert stored_outcomes(served) == {}
        assert not future.result(timeout=30).duplicate
    assert list(stored_outcomes(served)) == ["held"]
