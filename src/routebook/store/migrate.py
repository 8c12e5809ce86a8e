"""Schema changes go through Alembic only: upgrade, downgrade and current, run in-process on a
shared connection (the migrations/ env.py takes it from `config.attributes`).

`db upgrade` and `db downgrade` go through `upgrade_to` and `downgrade_to`, which name the
revision asked for before Alembic sees it: Alembic's own answer to a mistyped one was a
traceback, and an upgrade to a revision the store is already past did nothing without a word.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text

from routebook.errors import ConfigError, FailedPrecondition, InvalidArgument


def migrations_dir() -> Path:
    """migrations/ of the source tree, or the copy a wheel install carries."""
    package_root = Path(__file__).resolve().parents[1]
    for candidate in (package_root / "_migrations", package_root.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("cannot find the Alembic migrations folder (migrations/env.py)")


def _config(engine: Engine, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


#: The PostgreSQL advisory lock that serialises schema changes: replicas starting together on
#: an older database would otherwise all run the same DDL, and all but one fail.
MIGRATION_LOCK = 0x726F7574  # "rout"


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _migrating(engine) as connection:
        command.upgrade(_config(engine, connection), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _migrating(engine) as connection:
        command.downgrade(_config(engine, connection), revision)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction, one migrator at a time, with no statement bound.

    SQLite alters a table by copying it and dropping the old one, and with foreign keys on
    that drop deletes every row referencing it (`ON DELETE CASCADE`). So on SQLite migrations
    run with foreign keys off, as Alembic advises for batch mode, must leave no reference
    dangling, and the connection gets them back before it returns to the pool. The pragma
    only takes effect outside a transaction, hence its place around `begin()`.

    SQLite's schema changes are transactional, but Python's driver opens a transaction only
    before a data change: every ALTER before a migration's first UPDATE committed on its own,
    so a process killed mid-upgrade left the schema half-changed under the old revision, and
    every later start failed re-running it. On SQLite the driver is therefore put in autocommit
    mode and the migration runs inside an explicit `BEGIN IMMEDIATE`: all of it, or none.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        driver: Any = connection.connection.dbapi_connection if sqlite else None
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
            isolation = driver.isolation_level
            driver.isolation_level = None  # no implicit BEGIN: ours below spans the DDL too
        try:
            with connection.begin():
                if sqlite:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                _no_statement_timeout(connection)
                _one_migrator_at_a_time(connection)
                yield connection
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise ConfigError("the migration would leave rows referencing missing ones")
        finally:
            if sqlite:
                driver.isolation_level = isolation
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _no_statement_timeout(connection: Connection) -> None:
    """A schema change on a large table may rightly take longer than a call's bound."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL statement_timeout = 0"))


def _one_migrator_at_a_time(connection: Connection) -> None:
    """Wait for any other process's migration; held until this transaction ends, after which
    Alembic finds the schema already at the revision and does nothing. (SQLite serialises
    writers itself.)"""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str | None:
    return ScriptDirectory(str(migrations_dir())).get_current_head()


def knows(revision: str) -> bool:
    """Whether `revision` is one of this routebook's migrations (a store migrated by a newer
    routebook is at one it does not know, and `db upgrade` cannot help)."""
    try:
        return ScriptDirectory(str(migrations_dir())).get_revision(revision) is not None
    except CommandError:
        return False


def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(migrations_dir()))


def resolve(revision: str) -> str | None:
    """The migration `revision` names: `head`, `base` (None: no schema at all), a revision id
    or a unique start of one. InvalidArgument naming it when this routebook has none such."""
    if revision == "base":
        return None
    scripts = _scripts()
    try:
        found = scripts.get_revision(revision)
    except CommandError as exc:  # "Multiple revisions start with …" says more than ours
        found, why = None, "" if str(exc).startswith("Can't locate") else str(exc)
    else:
        why = ""
    if found is None:
        raise InvalidArgument(
            f"revision {revision!r} is not one of this routebook's migrations"
            f"{f' ({why})' if why else ''}: give head, base or a revision id (the newest is "
            f"{scripts.get_current_head()})"
        )
    return str(found.revision)


def _lineage(revision: str | None) -> list[str]:
    """`revision` and every revision before it, newest first (empty for base)."""
    if revision is None:
        return []
    return [str(s.revision) for s in _scripts().walk_revisions(base="base", head=revision)]


def _known_current(engine: Engine) -> str | None:
    at = current(engine)
    if at is not None and not knows(at):
        raise FailedPrecondition(
            f"the store is at schema revision {at}, which this routebook does not know (a "
            "newer routebook migrated it): use that routebook, whose `db downgrade` can roll "
            "it back"
        )
    return at


@dataclass(frozen=True, slots=True)
class Moved:
    """What `upgrade_to` or `downgrade_to` did: the store's revision before and after (None:
    no schema), and whether the one asked for was on the other side of the store's."""

    before: str | None
    after: str | None
    asked: str | None
    #: The revision asked for is behind the store (an upgrade) or ahead of it (a downgrade):
    #: nothing was done.
    wrong_way: bool = False


def upgrade_to(engine: Engine, revision: str) -> Moved:
    """Upgrade to `revision`; nothing when the store is at it or past it (`wrong_way`)."""
    target = resolve(revision)
    before = _known_current(engine)
    if before is not None and (target is None or target in _lineage(before)):
        return Moved(before, before, target, wrong_way=target != before)
    upgrade(engine, revision if target is None else target)
    return Moved(before, current(engine), target)


def downgrade_to(engine: Engine, revision: str) -> Moved:
    """Downgrade to `revision`, running each newer migration's downgrade; FailedPrecondition
    when the store has no schema, and nothing (`wrong_way`) when it is behind `revision`."""
    target = resolve(revision)
    before = _known_current(engine)
    if before is None:
        raise FailedPrecondition("the store has no routebook schema: there is nothing to roll back")
    if target is not None and target not in _lineage(before):
        return Moved(before, before, target, wrong_way=True)
    if target != before:
        downgrade(engine, "base" if target is None else target)
    return Moved(before, current(engine), target)
