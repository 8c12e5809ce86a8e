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

import numpy as np
import numpy.typing as npt

from routebook.embed import Embedder

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


class EmbeddingCache:
    """Wraps an Embedder: `embed(texts)` returns cached vectors and embeds only what is new."""

    def __init__(self, embedder: Embedder, cache_dir: Path | None) -> None:
        self._embedder = embedder
        self._memory: dict[str, Vectors] = {}
        self._path: Path | None = None
        if cache_dir is not None:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.model_id)
            self._path = cache_dir / f"embeddings-{safe}.npz"
            self._load()

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    def _load(self) -> None:
        for key, vector in self._read_file().items():
            self._memory.setdefault(key, vector)

    def _read_file(self) -> dict[str, Vectors]:
        """What the cache file holds now; empty when there is none, or it is unreadable."""
        if self._path is None or not self._path.is_file():
            return {}
        try:
            with self._path.open("rb") as file, np.load(file) as data:
                keys = data["keys"]
                vectors = data["vectors"]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            log.warning("ignoring unreadable embedding cache %s: %s", self._path, error)
            return {}
        if vectors.ndim != 2 or vectors.shape[1] != self._embedder.dim or len(keys) != len(vectors):
            return {}  # another dimension under the same id: ignore, it will be rewritten
        return dict(zip((str(k) for k in keys), vectors, strict=True))

    def _save(self) -> None:
        if self._path is None:
            return
        self._load()  # keep what another run saved since we read the file
        self._path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._memory), dtype="U64")
        vectors = np.stack(list(self._memory.values())).astype(np.float32)
        handle, partial = tempfile.mkstemp(
            dir=self._path.parent, prefix=self._path.stem + ".", suffix=".tmp.npz"
        )
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, keys=keys, vectors=vectors)
            os.replace(partial, self._path)  # atomic: readers see the old file or the new one
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def embed(self, texts: Sequence[str], advance: Callable[[int], None] | None = None) -> Vectors:
        """Unit vectors for `texts` in order; `advance(n)` is called as batches finish."""
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._memory:
                missing.setdefault(key, text)
        if advance is not None:
            advance(len(texts) - len(missing))
        todo = list(missing.items())
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            vectors = self._embedder.embed([text for _, text in chunk])
            for (key, _), vector in zip(chunk, vectors, strict=True):
                self._memory[key] = vector
            if advance is not None:
                advance(len(chunk))
        if todo:
            self._save()
        if not keys:
            return np.zeros((0, self._embedder.dim), dtype=np.float32)
        return np.ascontiguousarray(np.stack([self._memory[k] for k in keys]), dtype=np.float32)
