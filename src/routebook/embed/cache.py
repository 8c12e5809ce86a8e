"""A bounded LRU of query vectors by text hash: a repeated query skips the model."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from routebook.embed.protocol import Embedder, EmbedderInFront


class CachedEmbedder(EmbedderInFront):
    """An Embedder that remembers the last `capacity` vectors it returned."""

    def __init__(self, inner: Embedder, capacity: int = 10_000) -> None:
        super().__init__(inner)
        self._capacity = capacity
        self._vectors: OrderedDict[bytes, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for row, key in enumerate(keys):
                vector = self._vectors.get(key)
                if vector is None:
                    missing.append(row)
                else:
                    self._vectors.move_to_end(key)
                    out[row] = vector
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = self.inner.embed([texts[row] for row in missing])
            out[missing] = fresh
            with self._lock:
                for row, vector in zip(missing, fresh, strict=True):
                    self._vectors[keys[row]] = np.array(vector, dtype=np.float32)
                    self._vectors.move_to_end(keys[row])
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        return out
