"""Namespace name → its current index. Swapping in a rebuilt index is one assignment."""

from __future__ import annotations

import threading

from routebook.index.namespace_index import NamespaceIndex


class IndexRegistry:
    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._indexes: dict[str, NamespaceIndex] = {}
        self._lock = threading.Lock()

    def get(self, namespace: str) -> NamespaceIndex:
        """The namespace's index, created empty on first use."""
        with self._lock:
            index = self._indexes.get(namespace)
            if index is None:
                index = self._indexes[namespace] = NamespaceIndex(self._dim)
            return index

    def swap(self, namespace: str, index: NamespaceIndex) -> None:
        """Make `index` the one that serves `namespace`, one generation past the old one.

        The new index inherits the old one's memory of removed ids (see `add_new`): a writer
        holding an example read before its deletion may meet either.
        """
        with self._lock:
            old = self._indexes.get(namespace)
            if old is not None and old is not index:
                index.inherit_removed(old)
            index.generation = (old.generation + 1) if old is not None else index.generation
            self._indexes[namespace] = index

    def namespaces(self) -> list[str]:
        with self._lock:
            return sorted(self._indexes)
