"""PostgreSQL pool hygiene: a pooled connection that died while idle is replaced before a call
meets it, one in steady use is not pinged on every checkout, and no statement waits longer
than the configured bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from routebook.store import db
from routebook.store.db import Store, make_engine
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served

pytestmark = pytest.mark.postgres


def backend_pid(store: Store) -> int:
    with store.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_killed_while_idle_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.05)
    store = Store(make_engine(postgres_url))
    admin = create_engine(postgres_url)
    try:
        first = backend_pid(store)
        with admin.begin() as connection:
            # The timeout makes it wait (up to 30 s) until the backend has exited.
            connection.execute(text("SELECT pg_terminate_backend(:pid, 30000)"), {"pid": first})
        time.sleep(0.1)
        assert backend_pid(store) != first  # no error: the dead one was pinged and replaced
    finally:
        store.dispose()
        admin.dispose()


def test_a_busy_connection_is_not_pinged_on_every_checkout(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 30.0)  # no stall on a loaded machine counts
    store = Store(make_engine(postgres_url))
    ping = store.engine.dialect.do_ping
    pings: list[Any] = []

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(store.engine.dialect, "do_ping", counting_ping)
    try:
        pids = {backend_pid(store) for _ in range(20)}
    finally:
        store.dispose()
    assert len(pids) == 1
    assert len(pings) == 1  # the new connection's first checkout only


def test_the_statement_timeout_joins_the_urls_own_options(postgres_url: str) -> None:
    schema = postgres_url.rsplit("search_path%3D", 1)[1]
    for seconds, shown in ((1.5, "1500ms"), (0, "0")):
        store = Store(make_engine(postgres_url, statement_timeout_seconds=seconds))
        try:
            with store.connect() as connection:
                assert connection.execute(text("SHOW statement_timeout")).scalar_one() == shown
                # The URL's own options (the test schema) are kept.
                assert connection.execute(text("SHOW search_path")).scalar_one() == schema
        finally:
            store.dispose()


def test_a_lock_held_elsewhere_fails_calls_as_unavailable_and_decide_still_answers(
    postgres_url: str, serve: Callable[..., Served]
) -> None:
    """Another session holds the tables (a migration, a stuck job): writes get UNAVAILABLE after
    the statement timeout instead of hanging, and Decide answers from the index, its cooldown
    read timing out to the last known set."""
    served = serve(postgres_url, admin_token="t", store_statement_timeout_seconds=1)
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    request = pb.DecideRequest(messages=[pb.Message(role="user", content="where is my order?")])
    assert served.router.Decide(request, timeout=30).model == "small"
    holder = create_engine(postgres_url)
    try:
        with holder.begin() as connection:
            connection.execute(text("LOCK TABLE examples, cooldowns IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                admin.UpsertExamples(
                    admin_pb.UpsertExamplesRequest(
                        namespace="default",
                        examples=[admin_pb.ExampleInput(text="a locked table", best_model="mid")],
                    ),
                    metadata=[("authorization", "Bearer t")],
                    timeout=60,
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            assert time.monotonic() - started < 30  # the 1 s bound, not the client's 60 s
            assert served.router.Decide(request, timeout=60).model == "small"
        # The lock is gone: the same write goes through.
        added = admin.UpsertExamples(
            admin_pb.UpsertExamplesRequest(
                namespace="default",
                examples=[admin_pb.ExampleInput(text="a locked table", best_model="mid")],
            ),
            metadata=[("authorization", "Bearer t")],
            timeout=60,
        )
        assert added.added == 1
    finally:
        holder.dispose()
