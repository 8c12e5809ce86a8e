"""The layer pools of the texts a namespace's head trains on, embedded once and kept.

Why: with `head_features = "layers"` the success head reads every hidden layer's mean pool
(2,688 floats for MiniLM) where the index keeps only the final 384-float vector. Keeping every
example's pools beside the index would cost 7 times its memory; embedding the whole training
sample again at each retraining would cost the cores a minute per 10,000 examples. So the pools
of a namespace's training texts are kept here, by text hash, as float16 (5.4 KB a text; the
largest sample, `head_max_examples` = 50,000, holds 270 MB), and a retraining embeds only the
texts that are new since the last one (at `retrain_after` = 200 changes, about a second).
Texts that left the sample are dropped. After a restart the first training embeds its whole
sample once.

float16 rounds a pool by at most 1 part in 2,000, far below what moves a regression with the
penalty the head uses; the query at Decide is read in float32 from the same forward pass.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

#: Texts embedded per model call while filling the store.
BATCH = 64

LayerRows = npt.NDArray[np.float32]
EmbedLayers = Callable[[Sequence[str]], LayerRows]


class TrainingLayers:
    """Per namespace: text hash → float16 layer pools of the texts its head last trained on."""

    def __init__(self, embed_layers: EmbedLayers) -> None:
        self._embed_layers = embed_layers
        self._kept: dict[str, dict[bytes, npt.NDArray[np.float16]]] = {}
        self._lock = threading.Lock()
        self.embedded = 0  # texts embedded so far, for tests and logs

    def of(self, namespace: str, texts: Sequence[str]) -> npt.NDArray[np.float16]:
        """The pools of `texts` in order (float16, as kept), embedding only texts not kept
        yet; the namespace then keeps exactly these texts' pools."""
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        with self._lock:
            before = self._kept.get(namespace, {})
        kept = {key: before[key] for key in keys if key in before}
        missing = list(
            {key: text for key, text in zip(keys, texts, strict=True) if key not in kept}.items()
        )
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            pools = self._embed_layers([text for _, text in chunk])
            for (key, _), row in zip(chunk, pools, strict=True):
                kept[key] = row.astype(np.float16)
            self.embedded += len(chunk)
        with self._lock:
            self._kept[namespace] = kept
        if not keys:
            return np.zeros((0, 0), dtype=np.float16)
        return np.stack([kept[key] for key in keys])  # float16: the head standardises a copy

    def kept(self, namespace: str) -> int:
        with self._lock:
            return len(self._kept.get(namespace, {}))
