"""Engines and transactions. SQLite gets WAL, a busy timeout and one writer at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from routebook.errors import ConfigError, RoutebookError, Unavailable

T = TypeVar("T")


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {url!r} is not a URL: use sqlite:///FILE or "
            "postgresql+psycopg://user@host:5432/db"
        ) from None


def shown_url(url: str | URL) -> str:
    """The URL for a message: its password hidden."""
    return (url if isinstance(url, URL) else parse_url(url)).render_as_string(hide_password=True)


def open_store(url: str, *, statement_timeout_seconds: float = 30.0) -> Store:
    """A Store on `url` that has connected once. A wrong or unreachable store (PostgreSQL
    down, a database that does not exist, a SQLite path in a missing folder or on a file that
    is not a database) is the commonest start-up mistake: it is said here, naming the store,
    instead of as a driver traceback from whichever query came first."""
    store = Store(make_engine(url, statement_timeout_seconds=statement_timeout_seconds))
    try:
        with store.engine.connect():
            pass
    except DBAPIError as exc:
        store.dispose()
        raise unreachable(parse_url(url), exc) from None
    return store


def unreachable(url: URL, exc: DBAPIError) -> RoutebookError:
    """The error for a store that cannot be opened, with what to check."""
    lines = str(exc.orig).strip().splitlines()
    reason = lines[0] if lines else type(exc.orig).__name__
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if path.is_dir():
            reason = "it is a folder"
        elif not path.parent.is_dir():
            reason = f"folder {path.parent} does not exist"
        return ConfigError(
            f"cannot open the SQLite store at {str(path)!r}: {reason}; check the "
            "database_url setting (--db)"
        )
    return Unavailable(
        f"cannot open the store at {shown_url(url)}: {reason}; check that the database "
        "exists and its server is running, and the database_url setting (--db)"
    )


def make_engine(url: str, *, statement_timeout_seconds: float = 30.0) -> Engine:
    """`statement_timeout_seconds` bounds every PostgreSQL statement (0: no bound): a store
    that hangs, or a lock held elsewhere, fails a call as unavailable instead of holding it
    and its pooled connection indefinitely."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        parsed = _with_statement_timeout(parsed, statement_timeout_seconds)
        # A store that stops answering must fail a call within seconds, not hang it: a bound
        # on connecting, and TCP keepalives so a store that vanished without closing its
        # connections (a dead host, a dropped route) is noticed in about 25 s.
        engine = create_engine(
            parsed,
            pool_size=10,
            max_overflow=10,
            pool_timeout=10,
            connect_args={
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
        )
        _ping_when_idle(engine)
        event.listen(engine, "handle_error", _unavailable_as_operational, retval=True)
        return engine
    raise ConfigError(f"database URL {url!r}: only sqlite and postgresql are supported")


def _with_statement_timeout(url: URL, seconds: float) -> URL:
    """The URL with `-c statement_timeout=…` in its libpq options, ahead of any options the
    URL already has (so a statement_timeout set there still wins)."""
    if seconds <= 0:
        return url
    given = url.query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    ours = f"-c statement_timeout={max(1, round(seconds * 1000))}"
    return url.update_query_dict({"options": f"{ours} {given}".strip()})


#: Most values bound in one `IN (...)`: SQLite allows 32,766 parameters per statement and
#: psycopg 65,535, and a list of ids built from the data (outcomes since a snapshot, decisions
#: in a stats window) can be longer than either.
IN_CHUNK = 5000


def in_chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` in slices short enough for one `IN (...)` each."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


#: A pooled connection unused for longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping, but only a connection that sat idle in the pool.

    A connection idle in the pool may have died with a store restart, so it is pinged and, if
    dead, replaced before a call sees it (what `pool_pre_ping` does). Pinging on every checkout
    cost a round trip per read under load, when connections go back and forth every few
    milliseconds; one that just came back from a successful call is handed out as it is (if the
    store died in that instant, the call fails like any call that meets an outage).
    """

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("checked_in")
        if last is not None and time.monotonic() - last < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool discards it and tries a fresh connection
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


#: Errors after which the store is unavailable to this call, whatever it asked: the store is
#: down or read-only (OperationalError), or every pooled connection stayed busy past the
#: pool's timeout (PoolTimeout). Callers keep or fall back rather than blame the request.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, PoolTimeout)

#: SQLSTATE classes that mean the store cannot do the work now, whatever the values: connection
#: exceptions, invalid transaction state (25006: a read-only standby after a failover),
#: transaction rollback (serialization failures, deadlocks), insufficient resources, operator
#: intervention (shutdown, a cancelled statement) and system errors.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "25", "40", "53", "57", "58"})


def _unavailable_as_operational(context: ExceptionContext) -> BaseException | None:
    """Raise such errors as OperationalError, which every caller treats as "the store is
    unavailable: keep the write and retry", instead of the class psycopg gives them
    (a read-only standby's refusal is an InternalError, which would otherwise read as
    "the store refuses these values" and drop buffered decisions)."""
    error = context.sqlalchemy_exception
    if error is None or isinstance(error, OperationalError):
        return None
    sqlstate = getattr(context.original_exception, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES:
        return OperationalError(
            context.statement,
            context.parameters,
            context.original_exception,
            connection_invalidated=error.connection_invalidated,
        )
    return None


def is_unique_violation(exc: IntegrityError) -> bool:
    """A duplicate key (PostgreSQL SQLSTATE 23505, SQLite "UNIQUE constraint failed"), as
    opposed to a row the store refuses for its values: another writer got there first."""
    if getattr(exc.orig, "sqlstate", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(exc.orig)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Store:
    """Hands out sessions; `write()` serialises writers on SQLite, which allows only one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_lock: threading.Lock | None = (
            threading.Lock() if engine.dialect.name == "sqlite" else None
        )
        # PostgreSQL reads in autocommit skip BEGIN and ROLLBACK, two round trips of three for
        # a one-query read; a statement still sees one snapshot. pysqlite needs no BEGIN for a
        # read, and switching its mode per checkout costs more than it saves.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A bare connection for one-query reads on a hot path: no ORM session to set up and
        tear down, and on PostgreSQL no transaction around the query."""
        with self._reader.connect() as connection:
            yield connection

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        if self._write_lock is None:
            with self._sessions.begin() as session:
                yield session
            return
        with self._write_lock, self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
