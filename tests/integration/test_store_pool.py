"""The hot path's store caches: with every pooled connection busy they fall back to what they
knew (never an unmapped pool timeout; real PostgreSQL, a deliberately tiny pool), and they stay
bounded however many tenant names clients send."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from routebook.service.cooldowns import CooldownBook, CooldownRules
from routebook.service.spend import SpendLedger
from routebook.store.db import Store, make_engine
from routebook.store.migrate import upgrade


@pytest.mark.postgres
def test_an_exhausted_pool_falls_back_to_the_last_known_figures(postgres_url: str) -> None:
    migrated = make_engine(postgres_url)
    upgrade(migrated)
    migrated.dispose()
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    store = Store(engine)
    spend = SpendLedger(store, ttl_seconds=0.0)
    cooldowns = CooldownBook(store, CooldownRules(), refresh_seconds=0.0)
    assert spend.spent(1, "acme", 24.0) == 0.0  # read once while the pool is free
    assert cooldowns.active(1) == {}
    with engine.connect() as held:  # the pool's one connection, taken
        held.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeout), engine.connect():
            pass  # the pool really is exhausted
        started = time.monotonic()
        assert spend.spent(1, "acme", 24.0) == 0.0  # the last known spend, not an error
        assert spend.spent(1, "never-seen", 24.0) == 0.0
        assert cooldowns.active(1) == {}
        assert time.monotonic() - started < 5
    engine.dispose()


def test_the_spend_cache_stays_bounded(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from routebook.service import spend as spend_module

    monkeypatch.setattr(spend_module, "MAX_CACHED_TENANTS", 5)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    ledger = SpendLedger(Store(engine), ttl_seconds=60.0)
    for n in range(20):  # twenty tenant names, all read within the ttl
        assert ledger.spent(1, f"tenant-{n}", 24.0) == 0.0
    assert len(ledger._cache) == 5
    assert (1, "tenant-19", 24.0) in ledger._cache  # the newest stay
    engine.dispose()


def test_a_read_racing_an_outcome_does_not_cache_the_old_spend(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Decide that read the spend just before an outcome was recorded stored its figure after
    the outcome's invalidation: the next Decide saw the old spend for the cache's lifetime."""
    import threading

    from routebook.service import spend as spend_module

    engine = make_engine(sqlite_url)
    upgrade(engine)
    ledger = SpendLedger(Store(engine), ttl_seconds=60.0)
    real = spend_module.spend_store.tenant_spend
    read_done, invalidated = threading.Event(), threading.Event()
    spend_now = [0.0]

    def read_then_stall(*args: object, **kwargs: object) -> float:
        real(*args, **kwargs)  # type: ignore[arg-type]
        amount = spend_now[0]  # what the store held when it answered
        read_done.set()
        assert invalidated.wait(10)  # the outcome lands before this read is cached
        return amount

    monkeypatch.setattr(spend_module.spend_store, "tenant_spend", read_then_stall)
    reader = threading.Thread(target=ledger.spent, args=(1, "acme", 24.0))
    reader.start()
    assert read_done.wait(10)
    spend_now[0] = 50.0  # the outcome is committed...
    ledger.invalidate(1, "acme")  # ...and invalidates acme's spend
    invalidated.set()
    reader.join(10)
    monkeypatch.setattr(spend_module.spend_store, "tenant_spend", lambda *_a, **_k: spend_now[0])
    assert ledger.spent(1, "acme", 24.0) == 50.0
    engine.dispose()


def test_one_caller_at_a_time_refreshes_the_cooldowns(sqlite_url: str) -> None:
    import threading

    from sqlalchemy import event

    engine = make_engine(sqlite_url)
    upgrade(engine)
    book = CooldownBook(Store(engine), CooldownRules(), refresh_seconds=0.0)  # always stale
    assert book.active(1) == {} and book.reads == 1
    statements: list[str] = []
    answers: list[dict[str, object]] = []

    def slow_store(*_args: object) -> None:
        # The first read is held until every other caller has answered: they must not wait
        # for it, nor start reads of their own. (A bounded wait, so a broken book fails the
        # assertions below instead of hanging.)
        statements.append("query")
        if len(statements) == 1:
            deadline = time.monotonic() + 30
            while len(answers) < 15 and time.monotonic() < deadline:
                time.sleep(0.01)

    event.listen(engine, "before_cursor_execute", slow_store)
    start = threading.Barrier(16)

    def decide() -> None:
        start.wait()
        answers.append(dict(book.active(1)))

    threads = [threading.Thread(target=decide) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [{}] * 16
    # The 16 concurrent callers shared one read, and 15 of them did not wait for it.
    assert book.reads - 1 == len(statements) == 1
    engine.dispose()
