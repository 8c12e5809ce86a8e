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

    def refresh(self) -> list[NamespaceInfo]:
        with self._store.read() as session:
            infos = [
                NamespaceInfo(
                    row.id,
                    row.name,
                    ns_store.load_catalog(session, row.id),
                    ns_store.load_policy(row),
                )
                for row in ns_store.list_namespaces(session)
            ]
        with self._lock:
            self._by_name = {info.name: info for info in infos}
        return infos

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
