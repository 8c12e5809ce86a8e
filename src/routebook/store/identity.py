"""The store's identity: a random id made once per database (by the migrations).

Snapshots record it, so a server can tell its own store's snapshots from another store's
that happen to sit at the same path.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from routebook.store.db import Store
from routebook.store.tables import StoreIdentityRow


def store_id(store: Store) -> str:
    """This store's id; made now if its row is missing (the migration makes it)."""
    with store.read() as session:
        found = session.scalar(select(StoreIdentityRow.store_id).where(StoreIdentityRow.id == 1))
    if found is not None:
        return found
    try:
        with store.write() as session:
            session.add(StoreIdentityRow(id=1, store_id=uuid.uuid4().hex))
    except IntegrityError:
        pass  # another server made it first: read theirs
    with store.read() as session:
        made = session.scalar(select(StoreIdentityRow.store_id).where(StoreIdentityRow.id == 1))
    assert made is not None
    return made
