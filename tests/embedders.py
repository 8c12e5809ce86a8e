"""The real model behind a test's hook: wrappers that see or time its calls, nothing mocked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from routebook.embed import Embedder


class WrappedEmbedder:
    """Delegates to `inner`; a subclass overrides `embed` to watch or steer the calls."""

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
