"""The index bench: its data are deterministic and realistic, and its figures hang together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routebook.jobs import bench_index as bi
from tests.unit.test_index_kinds import clustered_unit_vectors


def test_real_embeddings_come_from_the_cache_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no cached embeddings"):
        bi.real_embeddings(tmp_path)
    vectors = clustered_unit_vectors(50, 16, seed=1)
    keys = np.array([f"{i:064x}" for i in range(50)])
    np.savez(tmp_path / "embeddings-some-model.npz", keys=keys[::-1], vectors=vectors[::-1])
    loaded = bi.real_embeddings(tmp_path)
    assert loaded.shape == (50, 16) and loaded.dtype == np.float32
    assert np.array_equal(loaded, np.unique(vectors, axis=0))  # every vector, each once
    # The same vectors stored in another order: the result does not depend on the order in
    # which the cache was written.
    np.savez(tmp_path / "embeddings-some-model.npz", keys=keys, vectors=vectors)
    assert np.array_equal(bi.real_embeddings(tmp_path), loaded)


def test_real_embeddings_never_mix_two_models_caches(tmp_path: Path) -> None:
    # float32 and int8 caches share a dimension; mixed, every text would appear twice as a
    # near-copy of itself. The bench takes the one cache holding the most vectors.
    vectors = clustered_unit_vectors(50, 16, seed=1)
    keys = np.array([f"{i:064x}" for i in range(50)])
    near_copies = vectors[:30] + np.float32(1e-3)
    np.savez(tmp_path / "embeddings-model-a.npz", keys=keys, vectors=vectors)
    np.savez(tmp_path / "embeddings-model-a_int8.npz", keys=keys[:30], vectors=near_copies)
    loaded = bi.real_embeddings(tmp_path)
    assert np.array_equal(loaded, np.unique(vectors, axis=0))


def test_synthetic_vectors_are_deterministic_unit_and_near_their_base() -> None:
    real = clustered_unit_vectors(300, 64, seed=2)
    base, queries = bi.split_queries(real, 20)
    assert (len(base), len(queries)) == (280, 20)
    vectors = bi.synthetic_vectors(base, 1000, seed=5)
    assert vectors.shape == (1000, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, bi.synthetic_vectors(base, 1000, seed=5))
    assert not np.array_equal(vectors, bi.synthetic_vectors(base, 1000, seed=6))
    # The first pass copies the base in order, each copy close to (but not at) its original.
    sims = np.sum(vectors[:280] * base, axis=1)
    assert sims.min() > 0.85 and sims.max() < 0.999
    with pytest.raises(ValueError, match="cannot hold out"):
        bi.split_queries(real, 300)


def test_synthetic_facts_have_realistic_texts_and_labels() -> None:
    facts = bi.synthetic_facts(500, ["hi", "where is my parcel", "x" * 400], seed=3)
    assert [f.example_id for f in facts] == list(range(1, 501))
    assert all(60 <= len(f.text) <= 130 for f in facts)
    assert {f.route for f in facts} > {None}
    assert {len(f.outcomes) for f in facts} == {0, 1, 2, 3}
    assert facts == bi.synthetic_facts(500, ["hi", "where is my parcel", "x" * 400], seed=3)


def test_bench_index_measures_an_ivf_index_end_to_end(tmp_path: Path) -> None:
    real = clustered_unit_vectors(3200, 32, seed=4)
    base, queries = bi.split_queries(real, 50)
    vectors = bi.synthetic_vectors(base, 4000)
    facts = bi.synthetic_facts(4000, ["where is my parcel", "reset my password please"])
    result = bi.bench_index(vectors, queries, facts, kind="ivf", snapshot_dir=tmp_path)
    assert (result.size, result.kind, result.k, result.queries) == (4000, "ivf", 10, 50)
    assert 0.5 <= result.recall_at_10 <= 1.0  # few, noisy vectors: only a sanity bound
    assert 0 < result.search_p50_ms <= result.search_p99_ms
    assert result.build_seconds > 0 and result.save_seconds > 0 and result.snapshot_bytes > 0
    assert result.load_seconds is not None and result.load_seconds > 0
    assert result.rss_bytes is not None and result.baseline_rss_bytes is not None
    assert result.rss_bytes >= result.baseline_rss_bytes
    assert result.as_dict()["kind"] == "ivf"


def test_bench_index_of_flat_is_exact_and_can_skip_the_load() -> None:
    vectors = clustered_unit_vectors(500, 16, seed=5)
    result = bi.bench_index(vectors[:450], vectors[450:], kind="flat", measure_load=False)
    assert result.recall_at_10 == 1.0 and result.load_seconds is None
