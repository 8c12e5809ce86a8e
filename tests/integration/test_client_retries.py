"""The Python client retries a Router call that comes back UNAVAILABLE (a server restarting
behind a proxy, a store outage), and a retried RecordOutcome is recorded once, even when the
first attempt was recorded and only its answer was lost."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from routebook.client import RouterClient, open_channel
from routebook.store.tables import OutcomeRow
from tests.conftest import Served
from tests.integration.test_router import count


class FlakyProxy:
    """A gRPC proxy in front of a real server that answers UNAVAILABLE to its first calls:
    `before` of them never reach the server, `after` of them do, and lose their answer."""

    def __init__(self, upstream: str, *, before: int = 0, after: int = 0) -> None:
        self.before, self.after = before, after
        self.seen: list[bytes] = []
        self._lock = threading.Lock()
        self._upstream = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((self,))  # type: ignore[arg-type]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method  # type: ignore[attr-defined]

        def forward(request: bytes, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.seen.append(request)
                drop_before = self.before > 0
                drop_after = not drop_before and self.after > 0
                self.before -= drop_before
                self.after -= drop_after
            if drop_before:
                context.abort(grpc.StatusCode.UNAVAILABLE, "upstream restarting")
            answer = self._upstream.unary_unary(method)(request, timeout=30)
            if drop_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection to upstream lost")
            return answer

        return grpc.unary_unary_rpc_method_handler(forward)

    def stop(self) -> None:
        self._server.stop(0).wait()
        self._upstream.close()


@pytest.fixture
def served(sqlite_url: str, serve: Callable[..., Served]) -> Served:
    return serve(sqlite_url)


@pytest.fixture
def proxy(served: Served) -> Iterator[Callable[..., FlakyProxy]]:
    proxies: list[FlakyProxy] = []

    def _proxy(**drops: int) -> FlakyProxy:
        proxies.append(FlakyProxy(served.target, **drops))
        return proxies[-1]

    yield _proxy
    for made in proxies:
        made.stop()


def test_a_decide_answered_unavailable_twice_succeeds_on_the_third_attempt(
    proxy: Callable[..., FlakyProxy],
) -> None:
    flaky = proxy(before=2)
    with RouterClient(f"127.0.0.1:{flaky.port}", timeout=30) as client:
        decision = client.decide("where is my parcel, it hasn't arrived")
    assert decision.decision_id
    assert len(flaky.seen) == 3


def test_a_retried_outcome_whose_answer_was_lost_is_recorded_once(
    proxy: Callable[..., FlakyProxy], served: Served
) -> None:
    flaky = proxy()
    with RouterClient(f"127.0.0.1:{flaky.port}", timeout=30) as client:
        decision = client.decide("where is my parcel, it hasn't arrived")
        flaky.after = 1  # the outcome is recorded, and its answer lost on the way back
        recorded = client.record_outcome(
            decision_id=decision.decision_id, model=decision.model, quality=0.9
        )
    assert recorded.duplicate  # the retry found the first attempt's row
    assert flaky.seen[-1] == flaky.seen[-2]  # the same bytes, so the same outcome_id
    assert count(served, OutcomeRow) == 1


def test_one_attempt_surfaces_unavailable(proxy: Callable[..., FlakyProxy]) -> None:
    flaky = proxy(before=1)
    target = f"127.0.0.1:{flaky.port}"
    with (
        RouterClient(target, timeout=30, attempts=1) as client,
        pytest.raises(grpc.RpcError) as caught,
    ):
        client.decide("where is my parcel, it hasn't arrived")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(flaky.seen) == 1


def test_attempts_beyond_grpcs_limit_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 5"):
        open_channel("127.0.0.1:9", attempts=6)
    with pytest.raises(ValueError, match="at least 1"):
        open_channel("127.0.0.1:9", attempts=0)
