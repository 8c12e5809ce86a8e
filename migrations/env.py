"""Alembic environment: migrations run on the connection routebook hands over in
`config.attributes["connection"]`, or on `sqlalchemy.url` when run by the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from routebook.store.tables import metadata

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///routebook.db"
    with create_engine(url).connect() as connection:
        run_on(connection)
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("routebook migrations run online only: use `routebook db upgrade`")
run_migrations_online()
