"""FAISS indexes, one per namespace, derived from the store and rebuilt from it at will.

Snapshots (`routebook.index.snapshot`) are imported from their module, not from here.
"""

from routebook.index.kinds import IndexKind, SearchParams, choose_kind
from routebook.index.namespace_index import NamespaceIndex
from routebook.index.registry import IndexRegistry

__all__ = ["IndexKind", "IndexRegistry", "NamespaceIndex", "SearchParams", "choose_kind"]
