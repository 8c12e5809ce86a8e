"""The one seam between routebook and an embedding model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Embedder(Protocol):
    """Turns texts into float32 rows of unit length, so inner product is cosine similarity."""

    @property
    def dim(self) -> int: ...

    @property
    def model_id(self) -> str:
        """Names the model, so vectors from another model are never mixed in one index."""
        ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class EmbedderInFront:
    """An Embedder in front of another (a cache, a batcher, a test's hook): it passes for
    `inner`, same model id and dimension, and embeds through it unless a subclass says
    otherwise."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.inner.embed(texts)
