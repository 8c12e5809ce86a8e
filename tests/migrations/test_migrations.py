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
