"""The eval embedding cache: two runs at once keep each other's vectors, and a damaged file is
only a cold cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routebook.embed import Embedder
from routebook.jobs.embedcache import EmbeddingCache


def test_two_runs_saving_at_once_keep_both_runs_vectors(embedder: Embedder, tmp_path: Path) -> None:
    first = EmbeddingCache(embedder, tmp_path)
    second = EmbeddingCache(embedder, tmp_path)  # opened before the first one saved
    a = first.embed(["how do I reset my card pin"])
    b = second.embed(["what is the capital of france"])
    reopened = EmbeddingCache(embedder, tmp_path)
    assert len(reopened._vectors.memory) == 2  # the second save merged the first one's vector in
    both = reopened.embed(["how do I reset my card pin", "what is the capital of france"])
    assert np.array_equal(both, np.concatenate([a, b]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "embeddings-" + embedder.model_id.replace(":", "_") + ".npz"
    ]  # no temporary file left behind


def test_a_truncated_cache_file_is_a_cold_cache(embedder: Embedder, tmp_path: Path) -> None:
    cache = EmbeddingCache(embedder, tmp_path)
    expected = cache.embed(["how do I reset my card pin", "what is the capital of france"])
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:100])  # a disk that filled up mid-write, say
    reopened = EmbeddingCache(embedder, tmp_path)
    assert not reopened._vectors.memory
    again = reopened.embed(["how do I reset my card pin", "what is the capital of france"])
    assert np.allclose(again, expected, atol=1e-6)
    assert len(EmbeddingCache(embedder, tmp_path)._vectors.memory) == 2  # rewritten whole
