"""Embeddings of dataset texts, cached on disk by model id and text hash.

Why: an evaluation embeds the same benchmark texts again and again (MMLU alone has about 10k long
prompts, minutes on a CPU), while the texts and the model rarely change. Keying each vector by
the embedder's `model_id` and the sha256 of its text means a changed model or text is simply a
cache miss, never a stale vector. The cache is one `.npz` file per model; it is rewritten only
when something new was embedded, merged with what other runs saved meanwhile, and replaced
atomically from a temporary file of its own, so concurrent runs neither truncate nor undo each
other's work. A file that cannot be read (a disk that filled up, say) is a cold cache, not an
error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.embed import Embedder
from routebook.embed.protocol import layered, layers_dim_of
from routebook.errors import ConfigError

Vectors = npt.NDArray[np.float32]

log = logging.getLogger(__name__)

#: Texts embedded per call, so the progress bar moves and memory stays flat.
BATCH = 256


def default_cache_dir() -> Path:
    """`$ROUTEBOOK_CACHE_DIR`, else `$XDG_CACHE_HOME/routebook`, else `~/.cache/routebook`."""
    explicit = os.environ.get("ROUTEBOOK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routebook"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _RowFile:
    """Rows by text key, in memory and in one `.npz` file (None: memory only)."""

    def __init__(self, path: Path | None, width: int, dtype: type[np.floating[Any]]) -> None:
        self.path = path
        self.width = width
        self.dtype = dtype
        self.memory: dict[str, npt.NDArray[np.floating[Any]]] = {}
        self.load()

    def load(self) -> None:
        for key, row in self._read_file().items():
            self.memory.setdefault(key, row)

    def _read_file(self) -> dict[str, npt.NDArray[np.floating[Any]]]:
        """What the cache file holds now; empty when there is none, or it is unreadable."""
        if self.path is None or not self.path.is_file():
            return {}
        try:
            with self.path.open("rb") as file, np.load(file) as data:
                keys = data["keys"]
                rows = data["vectors"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            log.warning("ignoring unreadable embedding cache %s: %s", self.path, error)
            return {}
        if rows.ndim != 2 or rows.shape[1] != self.width or len(keys) != len(rows):
            return {}  # another width under the same id: ignore, it will be rewritten
        return dict(zip((str(k) for k in keys), rows, strict=True))

    def save(self) -> None:
        if self.path is None or not self.memory:
            return
        self.load()  # keep what another run saved since we read the file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.memory), dtype="U64")
        rows = np.stack(list(self.memory.values())).astype(self.dtype)
        handle, partial = tempfile.mkstemp(
            dir=self.path.parent, prefix=self.path.stem + ".", suffix=".tmp.npz"
        )
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, keys=keys, vectors=rows)
            os.replace(partial, self.path)  # atomic: readers see the old file or the new one
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise


class EmbeddingCache:
    """Wraps an Embedder: `embed(texts)` returns cached vectors and embeds only what is new;
    `layers(texts)` the same for every layer's mean pool (`head_features = "layers"`), kept as
    float16 in a file of their own (5.4 KB a text for MiniLM)."""

    def __init__(self, embedder: Embedder, cache_dir: Path | None) -> None:
        self._embedder = embedder
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.model_id)
        self._vectors = _RowFile(
            cache_dir / f"embeddings-{safe}.npz" if cache_dir else None, embedder.dim, np.float32
        )
        width = layers_dim_of(embedder)
        self._layers = (
            _RowFile(cache_dir / f"layers-{safe}.npz" if cache_dir else None, width, np.float16)
            if width
            else None
        )

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def embed(self, texts: Sequence[str], advance: Callable[[int], None] | None = None) -> Vectors:
        """Unit vectors for `texts` in order; `advance(n)` is called as batches finish. An
        embedder with layer pools embeds them too (its settings' head reads them), so a later
        `layers` call runs no model."""
        memory = self._vectors.memory
        if self._layers is not None:
            self.layers(texts, advance)
            advance = None
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in memory:
                missing.setdefault(key, text)
        if advance is not None:
            advance(len(texts) - len(missing))
        todo = list(missing.items())
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            vectors = self._embedder.embed([text for _, text in chunk])
            for (key, _), vector in zip(chunk, vectors, strict=True):
                memory[key] = vector
            if advance is not None:
                advance(len(chunk))
        if todo:
            self._vectors.save()
        if not keys:
            return np.zeros((0, self._embedder.dim), dtype=np.float32)
        return np.ascontiguousarray(np.stack([memory[k] for k in keys]), dtype=np.float32)

    def layers(
        self, texts: Sequence[str], advance: Callable[[int], None] | None = None
    ) -> npt.NDArray[np.float32]:
        """Every layer's mean pool of `texts` in order (float32 rows of float16 values, as a
        server's head trains on them: `service/head_layers.py`)."""
        if self._layers is None:
            raise ConfigError(
                f"the embedder ({self._embedder.model_id}) gives no layer pools, which "
                'head_features = "layers" needs: it is built with them when the settings that '
                'load it (--config) say head_features = "layers" (calibrate tries both kinds of '
                "head unless told --head-features vector)"
            )
        memory = self._layers.memory
        keys = [text_key(t) for t in texts]
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in memory}
        if advance is not None:
            advance(len(texts) - len(missing))
        todo = list(missing.items())
        embedder = layered(self._embedder)
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            vectors, pools = embedder.embed_with_layers([text for _, text in chunk])
            for (key, _), vector, pool in zip(chunk, vectors, pools, strict=True):
                self._vectors.memory.setdefault(key, vector)
                memory[key] = pool.astype(np.float16)
            if advance is not None:
                advance(len(chunk))
        if todo:
            self._layers.save()
            self._vectors.save()
        if not keys:
            return np.zeros((0, self._layers.width), dtype=np.float32)
        return np.stack([memory[k] for k in keys]).astype(np.float32)
