"""Drift references in the store: one row per namespace and embedding model.

Writes are optimistic: a server replaces the row only if it is still the one it last read (by
its token), so two replicas freezing a reference at once, or a freeze racing a rebaseline on
another server, leave exactly one winner, which the others then adopt (service/drift_keeper.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from routebook.store.db import Store, is_unique_violation
from routebook.store.tables import DriftReferenceRow, as_utc, utcnow


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A reference window as the store keeps it; `frozen` False is a rebaseline's marker."""

    token: str
    generation: int
    since: datetime
    frozen: bool
    top_similarity: tuple[float, ...] = ()
    cold: tuple[bool, ...] = ()
    outcomes: Mapping[str, tuple[bool, ...]] = field(default_factory=dict)


def new_token() -> str:
    return uuid.uuid4().hex


def tokens(store: Store, embedding_model: str) -> dict[int, str]:
    """Namespace id → token of its row for this model: what a sync compares first, without
    reading the windows."""
    with store.read() as session:
        rows = session.execute(
            select(DriftReferenceRow.namespace_id, DriftReferenceRow.token).where(
                DriftReferenceRow.embedding_model == embedding_model
            )
        ).all()
    return {namespace_id: token for namespace_id, token in rows}


def load(store: Store, namespace_id: int, embedding_model: str) -> StoredReference | None:
    with store.read() as session:
        row = session.get(DriftReferenceRow, (namespace_id, embedding_model))
        if row is None:
            return None
        return StoredReference(
            token=row.token,
            generation=row.generation,
            since=as_utc(row.since),
            frozen=row.frozen_at is not None,
            top_similarity=tuple(float(x) for x in row.top_similarity),
            cold=tuple(bool(x) for x in row.cold),
            outcomes={m: tuple(bool(x) for x in v) for m, v in sorted(row.outcomes.items())},
        )


def _values(reference: StoredReference) -> dict[str, object]:
    return {
        "token": reference.token,
        "generation": reference.generation,
        "since": reference.since,
        "frozen_at": utcnow() if reference.frozen else None,
        "top_similarity": list(reference.top_similarity),
        "cold": list(reference.cold),
        "outcomes": {m: list(v) for m, v in reference.outcomes.items()},
    }


def save(
    store: Store,
    namespace_id: int,
    embedding_model: str,
    reference: StoredReference,
    *,
    replacing: str | None,
) -> bool:
    """Write `reference` in place of the row whose token is `replacing` (None: there is no
    row). False, writing nothing, when another server changed the row first."""
    values = _values(reference)
    try:
        with store.write() as session:
            if replacing is None:
                session.execute(
                    insert(DriftReferenceRow).values(
                        namespace_id=namespace_id, embedding_model=embedding_model, **values
                    )
                )
                return True
            changed = session.execute(
                update(DriftReferenceRow)
                .where(
                    DriftReferenceRow.namespace_id == namespace_id,
                    DriftReferenceRow.embedding_model == embedding_model,
                    DriftReferenceRow.token == replacing,
                )
                .values(**values)
            )
            return bool(changed.rowcount)  # type: ignore[attr-defined]
    except IntegrityError as exc:
        if is_unique_violation(exc):
            return False  # another server inserted the row first
        raise


def reset(store: Store, namespace_ids: Iterable[int], embedding_model: str) -> str:
    """Turn the namespaces' references (of every embedding model) into rebaseline markers, in
    one transaction, and make sure this model has one; returns the markers' token. A reference
    frozen elsewhere before this moment can then no longer be written over the marker."""
    ids = sorted(set(namespace_ids))
    try:
        return _reset(store, ids, embedding_model)
    except IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        # Another server made this model's row between our look and our insert: a second
        # attempt finds it and turns it into a marker too.
        return _reset(store, ids, embedding_model)


def _reset(store: Store, ids: list[int], embedding_model: str) -> str:
    token = new_token()
    if not ids:
        return token
    marker = _values(StoredReference(token, 0, utcnow(), frozen=False))
    del marker["generation"]  # a marker keeps the generation of the reference it replaces
    with store.write() as session:
        session.execute(
            update(DriftReferenceRow)
            .where(DriftReferenceRow.namespace_id.in_(ids))
            .values(**marker)
        )
        have = set(
            session.scalars(
                select(DriftReferenceRow.namespace_id).where(
                    DriftReferenceRow.namespace_id.in_(ids),
                    DriftReferenceRow.embedding_model == embedding_model,
                )
            )
        )
        for namespace_id in ids:
            if namespace_id not in have:
                session.execute(
                    insert(DriftReferenceRow).values(
                        namespace_id=namespace_id,
                        embedding_model=embedding_model,
                        generation=0,
                        **marker,
                    )
                )
    return token
