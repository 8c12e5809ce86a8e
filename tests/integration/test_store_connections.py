"""PostgreSQL pool hygiene: a pooled connection that died while idle is replaced before a call
meets it, and one in steady use is not pinged on every checkout."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from routebook.store import db
from routebook.store.db import Store, make_engine

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
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
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
