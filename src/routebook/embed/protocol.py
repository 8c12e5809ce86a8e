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
