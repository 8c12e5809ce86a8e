"""Namespaces and their model catalogs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from routebook.catalog import Catalog, ModelSpec
from routebook.policyspec import Policy, policy_from_json, policy_to_json
from routebook.store.db import make_engine, parse_url
from routebook.store.tables import CatalogModelRow, NamespaceRow


def get_namespace(session: Session, name: str) -> NamespaceRow | None:
    return session.scalars(select(NamespaceRow).where(NamespaceRow.name == name)).one_or_none()


def list_namespaces(session: Session) -> list[NamespaceRow]:
    return list(session.scalars(select(NamespaceRow).order_by(NamespaceRow.name)))


def ensure_namespace(session: Session, name: str, description: str = "") -> NamespaceRow:
    row = get_namespace(session, name)
    if row is None:
        row = NamespaceRow(name=name, description=description)
        session.add(row)
        session.flush()
    elif description and row.description != description:
        row.description = description
    return row


def load_catalog(session: Session, namespace_id: int) -> Catalog:
    rows = session.scalars(
        select(CatalogModelRow).where(CatalogModelRow.namespace_id == namespace_id)
    )
    return Catalog(
        ModelSpec(
            name=r.name,
            provider=r.provider,
            input_usd_per_mtok=r.input_usd_per_mtok,
            output_usd_per_mtok=r.output_usd_per_mtok,
            latency_ms=r.latency_ms,
            context_window=r.context_window,
            tags=dict(r.tags or {}),
        )
        for r in rows
    )


def replace_catalog(session: Session, namespace_id: int, catalog: Catalog) -> bool:
    """Make the stored catalog equal `catalog`; True when anything changed."""
    if load_catalog(session, namespace_id).models == catalog.models:
        return False
    session.execute(delete(CatalogModelRow).where(CatalogModelRow.namespace_id == namespace_id))
    session.add_all(
        CatalogModelRow(
            namespace_id=namespace_id,
            name=m.name,
            provider=m.provider,
            input_usd_per_mtok=m.input_usd_per_mtok,
            output_usd_per_mtok=m.output_usd_per_mtok,
            latency_ms=m.latency_ms,
            context_window=m.context_window,
            tags=dict(m.tags),
        )
        for m in catalog.models
    )
    return True


def load_policy(row: NamespaceRow) -> Policy:
    return policy_from_json(row.policy)


def replace_policy(row: NamespaceRow, policy: Policy) -> bool:
    """Store `policy` on the namespace; True when it changed."""
    data = policy_to_json(policy)
    if row.policy == data:
        return False
    row.policy = data
    return True


def holds_namespaces(url: str) -> bool:
    """Whether the store at `url` already has namespaces, read without creating or migrating
    anything (a SQLite file that does not exist is not created); False when it cannot tell."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        name = parsed.database or ""
        if name in ("", ":memory:") or not Path(name).is_file():
            return False
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(NamespaceRow.__tablename__):
                return False
            return bool(connection.scalar(select(func.count()).select_from(NamespaceRow)))
    except DBAPIError:
        return False  # the store's own error is said when it is opened
    finally:
        engine.dispose()
