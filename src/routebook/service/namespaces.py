"""Namespace name → (store id, catalog), cached in memory so Decide reads no table."""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass

from routebook.catalog import Catalog
from routebook.errors import InvalidArgument, NotFound
from routebook.policyspec import Policy
from routebook.store import namespaces as ns_store
from routebook.store.db import Store

MAX_NAMESPACE_CHARS = 128


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    id: int
    name: str
    catalog: Catalog
    policy: Policy


class NamespaceDirectory:
    def __init__(self, store: Store, default_namespace: str) -> None:
        self._store = store
        self.default_namespace = default_namespace
        self._by_name: dict[str, NamespaceInfo] = {}
        self._lock = threading.Lock()
        #: Refreshes started, and the one whose read is installed: a read started later saw
        #: every commit an earlier one saw, and more.
        self._started = 0
        self._installed = 0

    def refresh(self) -> list[NamespaceInfo]:
        """Read every namespace and its catalog from the store and serve them; returns what is
        served then.

        Refreshes run at once (the follower's tick, an admin write, an upsert, a reindex): one
        that read the store before a write committed must not install its view after the
        writer's refresh installed the newer one (the new namespace or catalog read as the old
        one until the next tick). Each refresh takes a number before it reads, and a view is
        installed only over an older one's; a refresh that lost answers with the newer view."""
        with self._lock:
            self._started += 1
            ticket = self._started
        infos = self._read()
        with self._lock:
            if ticket > self._installed:
                self._by_name = {info.name: info for info in infos}
                self._installed = ticket
                return infos
            return list(self._by_name.values())

    def _read(self) -> list[NamespaceInfo]:
        with self._store.read() as session:
            return [
                NamespaceInfo(
                    row.id,
                    row.name,
                    ns_store.load_catalog(session, row.id),
                    ns_store.load_policy(row),
                )
                for row in ns_store.list_namespaces(session)
            ]

    def resolve(self, name: str | None) -> NamespaceInfo:
        """The namespace a request means; empty means the default one."""
        name = (name or "").strip() or self.default_namespace
        if len(name) > MAX_NAMESPACE_CHARS:
            raise InvalidArgument(f"namespace name is longer than {MAX_NAMESPACE_CHARS} characters")
        with self._lock:
            info = self._by_name.get(name)
        if info is None:
            with self._lock:
                known = sorted(self._by_name)
            raise NotFound(unknown_namespace(name, known))
        if len(info.catalog) == 0:
            raise NotFound(f"namespace {name!r} has no models in its catalog")
        return info

    def all(self) -> list[NamespaceInfo]:
        with self._lock:
            return list(self._by_name.values())


#: Namespaces named in a NOT_FOUND message at most: the message travels in a gRPC trailer,
#: which a few thousand names would overflow (the client would see RESOURCE_EXHAUSTED).
LISTED_NAMESPACES = 10


def unknown_namespace(name: str, known: list[str]) -> str:
    """The message for a namespace that does not exist: the closest names first."""
    missing = f"namespace {name!r} does not exist"
    if not known:
        return f"{missing}; there are none yet (run `routebook routes sync`)"
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        missing += f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    if len(known) <= LISTED_NAMESPACES:
        return f"{missing}; known namespaces: {', '.join(known)}"
    first = ", ".join(known[:LISTED_NAMESPACES])
    return (
        f"{missing}; {len(known)} namespaces are known, the first {LISTED_NAMESPACES}: {first}, ..."
    )
