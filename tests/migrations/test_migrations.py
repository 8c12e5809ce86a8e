"""The schema is made by migrations only: empty → head → base on both databases, and the
models equal what the migrations build."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from routebook.store import migrate
from routebook.store.db import make_engine
from routebook.store.tables import metadata

TABLES = {"namespaces", "catalog_models", "examples", "outcomes", "decisions", "drift_references"}


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


def test_upgrading_a_store_with_data_keeps_it_and_never_reuses_ids(db_url: str) -> None:
    """The migration that rebuilds SQLite's followed tables must not cascade the old table's
    drop to its outcomes, must give each outcome its namespace, and must leave foreign keys
    on for the connections after it."""
    from sqlalchemy import text

    engine = make_engine(db_url)
    now = "CURRENT_TIMESTAMP"
    try:
        migrate.upgrade(engine, "c5d2e8f1a7b3")  # the revision before the rebuild
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO namespaces (id, name, description, catalog_version, created_at)"
                    f" VALUES (1, 'n', '', 1, {now})"
                )
            )
            for i in (1, 2, 3):
                connection.execute(
                    text(
                        "INSERT INTO examples (id, namespace_id, text, text_hash, source, "
                        f"created_at) VALUES (:i, 1, :t, :h, 'reference', {now})"
                    ),
                    {"i": i, "t": f"text {i}", "h": f"hash {i}"},
                )
                connection.execute(
                    text(
                        "INSERT INTO outcomes (outcome_id, example_id, model, quality, "
                        "input_tokens, output_tokens, cost_usd, created_at) "
                        f"VALUES (:o, :i, 'm', 1, 0, 0, 0, {now})"
                    ),
                    {"i": i, "o": f"outcome {i}"},
                )
            # Example 7 was deleted before the upgrade: its id must never come back (its
            # tombstone would remove the new row from every index that replays it).
            connection.execute(
                text(
                    "INSERT INTO example_tombstones (namespace_id, example_id, deleted_at) "
                    f"VALUES (1, 7, {now})"
                )
            )
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT setval('examples_id_seq', 7)"))

        migrate.upgrade(engine)

        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM outcomes")).scalar() == 3
            # Every outcome has its namespace, taken from its example.
            namespaces = connection.execute(text("SELECT namespace_id FROM outcomes")).all()
            assert [n for (n,) in namespaces] == [1, 1, 1]
            connection.execute(text("DELETE FROM examples WHERE id = 3"))  # the newest
            # Foreign keys are on again: the delete detached the example's outcome, which
            # stays as a record of what was spent.
            detached = connection.execute(
                text("SELECT outcome_id, namespace_id FROM outcomes WHERE example_id IS NULL")
            ).all()
            assert [tuple(row) for row in detached] == [("outcome 3", 1)]
            connection.execute(
                text(
                    "INSERT INTO examples (namespace_id, text, text_hash, source, created_at) "
                    f"VALUES (1, 'new', 'new', 'reference', {now})"
                )
            )
            new_id = connection.execute(text("SELECT id FROM examples WHERE text = 'new'")).scalar()
            assert new_id == 8
    finally:
        engine.dispose()


def test_an_upgrade_that_fails_part_way_changes_nothing_on_sqlite(sqlite_url: str) -> None:
    """Python's SQLite driver committed each ALTER before a migration's first data change on its
    own: an upgrade killed there left the schema half-changed under the old revision, and
    every later start failed ("duplicate column name"). A failure stands in for the kill: in
    both cases nothing may be committed."""
    from sqlalchemy import event

    engine = make_engine(sqlite_url)
    try:
        migrate.upgrade(engine, "c5d2e8f1a7b3")

        def die(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.startswith("UPDATE outcomes SET namespace_id"):
                raise KeyboardInterrupt("killed")  # after the migration's first ALTER

        event.listen(engine, "before_cursor_execute", die)
        try:
            migrate.upgrade(engine)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the upgrade was not interrupted")
        event.remove(engine, "before_cursor_execute", die)
        assert migrate.current(engine) == "c5d2e8f1a7b3"
        columns = [c["name"] for c in inspect(engine).get_columns("outcomes")]
        assert "namespace_id" not in columns
        migrate.upgrade(engine)  # the next start completes it
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_every_store_gets_an_identity_of_its_own(db_url: str, tmp_path: Path) -> None:
    """Snapshots record it (index/snapshot.py): made once by the migration, stable after."""
    from sqlalchemy import delete

    from routebook.store.db import Store
    from routebook.store.identity import store_id
    from routebook.store.tables import StoreIdentityRow

    engines = [make_engine(db_url), make_engine(f"sqlite:///{tmp_path}/another.db")]
    try:
        for engine in engines:
            migrate.upgrade(engine)
        stores = [Store(engine) for engine in engines]
        first = store_id(stores[0])
        assert len(first) == 32 and store_id(stores[0]) == first
        assert store_id(stores[1]) != first
        with stores[0].write() as session:  # a lost row is made again, once
            session.execute(delete(StoreIdentityRow))
        remade = store_id(stores[0])
        assert remade != first and store_id(stores[0]) == remade
    finally:
        for engine in engines:
            engine.dispose()


def test_drift_references_come_with_their_revision_and_go_with_their_namespace(
    db_url: str,
) -> None:
    """Revision 698393495bcd adds the table and its downgrade removes only it; a reference is
    deleted with its namespace (a namespace made again under the name starts afresh)."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from routebook.store import drift as drift_store
    from routebook.store.db import Store

    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "e8b2c4d6f1a3")
        assert "drift_references" not in inspect(engine).get_table_names()
        migrate.upgrade(engine)
        assert "drift_references" in inspect(engine).get_table_names()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO namespaces (id, name, description, catalog_version, created_at)"
                    " VALUES (1, 'n', '', 1, CURRENT_TIMESTAMP)"
                )
            )
        store = Store(engine)
        since = datetime(2026, 11, 25, 9, 12, tzinfo=UTC)
        reference = drift_store.StoredReference(
            "t1", 3, since, True, (0.71, 0.5), (False, True), {"small": (True, False)}
        )
        assert drift_store.save(store, 1, "model-a", reference, replacing=None)
        assert drift_store.load(store, 1, "model-a") == reference
        assert drift_store.load(store, 1, "model-b") is None
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM namespaces WHERE id = 1"))
        assert drift_store.tokens(store, "model-a") == {}

        migrate.downgrade(engine, "e8b2c4d6f1a3")
        names = set(inspect(engine).get_table_names())
        assert "drift_references" not in names and names >= TABLES - {"drift_references"}
    finally:
        engine.dispose()


def test_pii_marks_and_clearable_texts_keep_the_rows_there_were(db_url: str) -> None:
    """Revision b7d3e9a1c4f2: examples and decisions gain an unmarked `contains_pii`, and a
    decision's text may be cleared. Rows are kept both ways; on SQLite the examples table is
    altered in place on the way up (no copy), and a downgrade's copy keeps AUTOINCREMENT."""
    from sqlalchemy import text

    engine = make_engine(db_url)
    now = "CURRENT_TIMESTAMP"
    try:
        migrate.upgrade(engine, "a4e7c2b9d1f6")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO namespaces (id, name, description, catalog_version, created_at)"
                    f" VALUES (1, 'n', '', 1, {now})"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO examples (namespace_id, text, text_hash, source, created_at) "
                    f"VALUES (1, 'my card 4111', 'h1', 'history', {now})"
                )
            )
            for i in (1, 2):
                connection.execute(
                    text(
                        "INSERT INTO decisions (id, namespace_id, query_hash, query_text, "
                        "strategy, model, estimated_cost_usd, created_at) "
                        f"VALUES (:i, 1, 'h1', 'my card 4111', 'semantic', 'm', 0, {now})"
                    ),
                    {"i": f"d{i}"},
                )

        migrate.upgrade(engine)
        with engine.begin() as connection:
            examples = connection.execute(text("SELECT text, contains_pii FROM examples")).all()
            assert [(t, bool(p)) for t, p in examples] == [("my card 4111", False)]
            decisions = connection.execute(
                text("SELECT id, query_text, contains_pii FROM decisions ORDER BY id")
            ).all()
            assert [(i, t, bool(p)) for i, t, p in decisions] == [
                ("d1", "my card 4111", False),
                ("d2", "my card 4111", False),
            ]
            connection.execute(text("UPDATE decisions SET query_text = NULL WHERE id = 'd2'"))
            connection.execute(text("UPDATE examples SET contains_pii = true"))
            if engine.dialect.name == "sqlite":  # altered in place: a copy drops AUTOINCREMENT
                sql = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'examples'")
                ).scalar()
                assert "AUTOINCREMENT" in str(sql) and "contains_pii" in str(sql)

        migrate.downgrade(engine, "a4e7c2b9d1f6")
        with engine.begin() as connection:
            texts = connection.execute(text("SELECT id, query_text FROM decisions ORDER BY id"))
            assert [tuple(row) for row in texts] == [("d1", "my card 4111"), ("d2", "")]
            assert connection.execute(text("SELECT count(*) FROM examples")).scalar() == 1
            if engine.dialect.name == "sqlite":
                sql = connection.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'examples'")
                ).scalar()
                assert "AUTOINCREMENT" in str(sql)
        columns = {c["name"] for c in inspect(engine).get_columns("examples")}
        assert "contains_pii" not in columns
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        with engine.begin() as connection:  # the downgrade's empty text is cleared again
            texts = connection.execute(text("SELECT id, query_text FROM decisions ORDER BY id"))
            assert [tuple(row) for row in texts] == [("d1", "my card 4111"), ("d2", None)]
    finally:
        engine.dispose()
