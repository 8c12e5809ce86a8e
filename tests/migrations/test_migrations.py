"""The schema is made by migrations only: empty → head → base on both databases, and the
models equal what the migrations build."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from routebook.store import migrate
from routebook.store.db import make_engine
from routebook.store.tables import metadata

TABLES = {"namespaces", "catalog_models", "examples", "outcomes", "decisions"}


def test_upgrade_to_head_then_downgrade_to_base(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate.current(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())

        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        assert set(inspect(engine).get_table_names()) >= TABLES

        migrate.upgrade(engine)  # idempotent: a second upgrade is a no-op
        assert migrate.current(engine) == migrate.head()

        migrate.downgrade(engine, "base")
        assert migrate.current(engine) is None
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_equal_migrations(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_sqlite_store_uses_wal(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_replicas_migrating_at_once_all_succeed(postgres_url: str) -> None:
    """Servers starting together on an empty PostgreSQL each run `upgrade`: one migrates, the
    others wait for it and find nothing to do (without the lock, they raced the same DDL)."""
    import threading

    engines = [make_engine(postgres_url) for _ in range(4)]
    gate = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(engine: object) -> None:
        gate.wait()
        try:
            migrate.upgrade(engine)  # type: ignore[arg-type]
        except BaseException as exc:  # the test reports every failure below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,), daemon=True) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)  # without the lock the DDL could also wait on itself forever
        assert not any(t.is_alive() for t in threads), "a migration never finished"
        assert errors == []
        assert migrate.current(engines[0]) == migrate.head()
    finally:
        for engine in engines:
            engine.dispose()
