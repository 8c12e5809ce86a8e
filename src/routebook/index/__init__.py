"""FAISS indexes, one per namespace, derived from the store and rebuilt from it at will."""

from routebook.index.namespace_index import NamespaceIndex
from routebook.index.registry import IndexRegistry

__all__ = ["IndexRegistry", "NamespaceIndex"]
