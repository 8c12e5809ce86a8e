"""Graceful stop and overload: SIGTERM on a real `routebook serve` process while calls are in
flight, a server with one worker under a burst of calls, and calls whose deadline passes."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc, router_pb2_grpc
from routebook.v1 import router_pb2 as pb
from tests.conftest import TEST_ROUTES, Served, wait_until
from tests.processes import server_process

TOKEN = "graceful-admin-token"
ADMIN = (("authorization", f"Bearer {TOKEN}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def decide_request(text: str = "where is my order?") -> pb.DecideRequest:
    return pb.DecideRequest(messages=[pb.Message(role="user", content=text)])


class HeldStream:
    """A client-streamed UpsertExamplesStream kept open until `release()`: an in-flight call
    that occupies one server thread for as long as the test wants."""

    def __init__(self, channel: grpc.Channel, texts: list[str]) -> None:
        self._batches: queue.Queue[admin_pb.UpsertExamplesRequest | None] = queue.Queue()
        self.texts = texts
        admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        self._batches.put(self._batch(texts[: len(texts) // 2]))
        self.future = admin.UpsertExamplesStream.future(
            iter(self._batches.get, None), metadata=ADMIN, timeout=120
        )

    @staticmethod
    def _batch(texts: list[str]) -> admin_pb.UpsertExamplesRequest:
        return admin_pb.UpsertExamplesRequest(
            namespace="default",
            examples=[admin_pb.ExampleInput(text=t, best_model="mid") for t in texts],
        )

    def wait_in_flight(self, db_url: str) -> None:
        """Wait until the server has committed the first batch: the call is then in flight and
        holds its server thread until `release()` (a fixed sleep would race a slow start)."""
        engine = create_engine(db_url)
        first = self.texts[0]

        def committed() -> bool:
            with engine.connect() as connection:
                query = text("SELECT count(*) FROM examples WHERE text = :t")
                return bool(connection.execute(query, {"t": first}).scalar_one())

        try:
            wait_until(committed, 60, "the held stream's first batch to be committed")
        finally:
            engine.dispose()
        assert not self.future.done()

    def release(self) -> None:
        self._batches.put(self._batch(self.texts[len(self.texts) // 2 :]))
        self._batches.put(None)


def test_sigterm_turns_not_serving_finishes_in_flight_calls_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'graceful.db'}"
    texts = [f"graceful in-flight example number {i} about parcels" for i in range(6)]
    # A long grace: the test releases the held call itself, and must not race the grace period.
    with server_process(db, tmp_path, TEST_ROUTES, grace_seconds=60, admin_token=TOKEN) as (
        process,
        port,
    ):
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            statuses: list[int] = []
            watcher = threading.Thread(
                target=lambda: statuses.extend(r.status for r in _until_error(watch))
            )
            watcher.start()
            wait_until(lambda: statuses[:1] == [SERVING], 10, "the first health status")
            held = HeldStream(channel, texts)
            held.wait_in_flight(db)

            process.send_signal(signal.SIGTERM)
            wait_until(lambda: NOT_SERVING in statuses, 30, "health NOT_SERVING after SIGTERM")

            # New calls are refused while the in-flight stream is still open.
            refused: list[grpc.StatusCode] = []

            def new_call_refused() -> bool:
                with grpc.insecure_channel(target) as fresh:
                    try:
                        router_pb2_grpc.RouterStub(fresh).Decide(decide_request(), timeout=5)
                    except grpc.RpcError as exc:
                        refused.append(exc.code())
                        return exc.code() == grpc.StatusCode.UNAVAILABLE
                return False

            wait_until(new_call_refused, 30, "a new call to be refused")
            assert not held.future.done(), "the in-flight call ended before it was released"

            held.release()
            response = held.future.result(timeout=30)
            assert response.added == len(texts) and len(response.example_ids) == len(texts)
            watch.cancel()
            watcher.join(timeout=10)
        assert process.wait(timeout=30) == 0

    # The in-flight call's writes were committed before the process exited.
    engine = create_engine(db)
    with engine.connect() as connection:
        stored = {
            row[0]
            for row in connection.execute(
                text("SELECT text FROM examples WHERE source = 'reference'")
            )
        }
    engine.dispose()
    assert set(texts) <= stored


def _until_error(
    stream: Iterator[health_pb2.HealthCheckResponse],
) -> Iterator[health_pb2.HealthCheckResponse]:
    try:
        yield from stream
    except grpc.RpcError:
        return


def test_overload_is_refused_with_resource_exhausted_not_queued(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """workers=1 → maximum_concurrent_rpcs = 16: with the one worker busy, a burst of 40 calls
    gets 15 queued (16 with the busy one) and the rest refused at once."""
    served = serve(sqlite_url, workers=1, admin_token=TOKEN)
    held = HeldStream(served.channel, [f"overload hold {i}" for i in range(2)])
    held.wait_in_flight(sqlite_url)
    burst = 40
    calls = [served.router.Decide.future(decide_request(), timeout=60) for _ in range(burst)]
    # Refusals are immediate; the accepted calls wait for the one busy worker.
    wait_until(lambda: sum(c.done() for c in calls) >= burst - 15, 30, "the refusals")
    time.sleep(1)
    done = [c for c in calls if c.done()]
    refused = [c for c in done if c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused, "no call of the burst was refused: everything queued behind one worker"
    assert len(done) == len(refused), [c.code() for c in done]
    assert len(refused) == burst - 15, f"{len(refused)} of {burst} refused"
    assert all(c.details() for c in refused)
    held.release()
    assert held.future.result(timeout=60).added == 2
    # The queued calls were not dropped: each is answered once the worker is free.
    answered = [c.result() for c in calls if c.exception(timeout=60) is None]
    assert len(answered) == 15 and all(r.model == "small" for r in answered)
    assert served.router.Decide(decide_request(), timeout=10).model == "small"


def test_a_call_whose_deadline_passes_in_the_queue_gets_deadline_exceeded_and_does_nothing(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, workers=1, admin_token=TOKEN)
    engine = create_engine(sqlite_url)

    def decisions() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM decisions")).scalar_one())

    before = decisions()
    held = HeldStream(served.channel, [f"deadline hold {i}" for i in range(2)])
    held.wait_in_flight(sqlite_url)
    started = time.monotonic()
    try:
        served.router.Decide(decide_request(), timeout=0.5)
    except grpc.RpcError as exc:
        code = exc.code()
    else:
        code = grpc.StatusCode.OK
    waited = time.monotonic() - started
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited < 10
    held.release()
    assert held.future.result(timeout=60).added == 2
    time.sleep(1.5)  # the server has caught up with its queue (and any write-behind)
    assert decisions() == before, "a call whose deadline had passed still wrote a decision"
    assert served.router.Decide(decide_request(), timeout=10).model == "small"
    wait_until(lambda: decisions() == before + 1, 10, "the valid decision to be stored")
    # A tiny deadline on an idle server: DEADLINE_EXCEEDED (the server checks the deadline
    # only when a call starts, and grpc may rarely still deliver an answer in time: OK is
    # tolerated, anything else is not).
    codes = []
    for i in range(20):  # new texts: a cached query vector can answer within 0.1 ms
        try:
            served.router.Decide(decide_request(f"where is order number {i}?"), timeout=0.0001)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK}, codes
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) >= 18, codes
    assert served.router.Decide(decide_request(), timeout=10).model == "small"
    engine.dispose()


def test_the_configured_bound_sheds_the_excess(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """max_concurrent_calls = 2 with one call held in flight: of a burst of 20, exactly one more
    is taken (it waits for the worker) and 19 are refused at once."""
    served = serve(sqlite_url, workers=1, max_concurrent_calls=2, admin_token=TOKEN)
    held = HeldStream(served.channel, [f"bound hold {i}" for i in range(2)])
    held.wait_in_flight(sqlite_url)
    burst = 20
    calls = [served.router.Decide.future(decide_request(), timeout=60) for _ in range(burst)]
    wait_until(lambda: sum(c.done() for c in calls) >= burst - 1, 30, "the refusals")
    time.sleep(0.5)
    done = [c for c in calls if c.done()]
    assert len(done) == burst - 1, f"{len(done)} of {burst} answered while the worker was held"
    assert {c.code() for c in done} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    held.release()
    assert held.future.result(timeout=60).added == 2
    (taken,) = [c for c in calls if c not in done]
    assert taken.result(timeout=60).model == "small"
