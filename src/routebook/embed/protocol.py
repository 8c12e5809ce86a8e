"""The one seam between routebook and an embedding model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

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


class LayerEmbedder(Embedder, Protocol):
    """An Embedder that also hands out the mean pool of every hidden state of the same forward
    pass: a learned head reads more of what the model saw than the final vector keeps.

    `embed_with_layers` returns `(vectors, layers)`: `vectors` exactly as `embed` gives them;
    `layers` (n, layers_dim) float32, the attention-masked mean over tokens of each hidden
    state, embedding output first and last layer last, concatenated, raw (not normalised), so
    the last `dim` columns, normalised, are the vector. `layers_dim` 0: no layers."""

    @property
    def layers_dim(self) -> int: ...

    def embed_with_layers(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...


def layers_dim_of(embedder: Embedder) -> int:
    """The width of `embedder`'s layers, 0 when it (or what it wraps) gives none."""
    return int(getattr(embedder, "layers_dim", 0))


class EmbedderInFront:
    """An Embedder in front of another (a cache, a batcher, a test's hook): it passes for
    `inner`, same model id, dimension and layers, and embeds through it unless a subclass says
    otherwise."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def layers_dim(self) -> int:
        return layers_dim_of(self.inner)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.inner.embed(texts)

    def embed_with_layers(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        return layered(self.inner).embed_with_layers(texts)


def layered(embedder: Embedder) -> LayerEmbedder:
    """`embedder` as a LayerEmbedder; TypeError when it gives no layers (built without them)."""
    if layers_dim_of(embedder) <= 0:
        raise TypeError(
            f"{type(embedder).__name__} ({embedder.model_id}) gives no layers: build the "
            'embedder with layers=True (the setting head_features = "layers")'
        )
    return cast(LayerEmbedder, embedder)


def background_layers(embedder: Embedder) -> Callable[[Sequence[str]], npt.NDArray[np.float32]]:
    """How background work (a head's training) gets texts' layer pools from `embedder`: on one
    thread when it can (`OnnxEmbedder.background_layers`), so that queries keep the other
    cores; else as `embed_with_layers` gives them. TypeError when it gives no layers."""
    model = layered(embedder)
    own: Callable[[Sequence[str]], npt.NDArray[np.float32]] | None = getattr(
        model, "background_layers", None
    )
    return own if own is not None else lambda texts: model.embed_with_layers(texts)[1]
