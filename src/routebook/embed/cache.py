"""A bounded LRU of query vectors by text hash: a repeated query skips the model."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from routebook.embed.protocol import Embedder, EmbedderInFront, layered, layers_dim_of

Vectors = npt.NDArray[np.float32]


class CachedEmbedder(EmbedderInFront):
    """An Embedder that remembers the last `capacity` vectors it returned.

    When the inner embedder gives layers, an entry keeps them beside the vector (one float32
    row: vector, then layers), and every miss is embedded with its layers: a hit then serves
    `embed_with_layers` as well as `embed`, with the very floats the model gave."""

    def __init__(self, inner: Embedder, capacity: int = 10_000) -> None:
        super().__init__(inner)
        self._capacity = capacity
        self._with_layers = layers_dim_of(inner) > 0
        self._rows: OrderedDict[bytes, Vectors] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        rows = self._cached_rows(texts)
        return rows if not self._with_layers else np.ascontiguousarray(rows[:, : self.dim])

    def embed_with_layers(self, texts: Sequence[str]) -> tuple[Vectors, Vectors]:
        layered(self.inner)  # a clear TypeError when there are none
        rows = self._cached_rows(texts)
        dim = self.dim
        return np.ascontiguousarray(rows[:, :dim]), np.ascontiguousarray(rows[:, dim:])

    def _cached_rows(self, texts: Sequence[str]) -> Vectors:
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        width = self.dim + (self.layers_dim if self._with_layers else 0)
        out = np.empty((len(texts), width), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for row, key in enumerate(keys):
                cached = self._rows.get(key)
                if cached is None:
                    missing.append(row)
                else:
                    self._rows.move_to_end(key)
                    out[row] = cached
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            out[missing] = self._embedded([texts[row] for row in missing])
            with self._lock:
                for row in missing:
                    self._rows[keys[row]] = out[row].copy()
                    self._rows.move_to_end(keys[row])
                while len(self._rows) > self._capacity:
                    self._rows.popitem(last=False)
        return out

    def _embedded(self, texts: list[str]) -> Vectors:
        if not self._with_layers:
            return self.inner.embed(texts)
        vectors, layers = layered(self.inner).embed_with_layers(texts)
        return np.concatenate([vectors, layers], axis=1)
