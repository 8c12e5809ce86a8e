"""Flat, HNSW and IVF namespace indexes: recall against exact search, removal, re-adding.

The vectors are seeded, clustered unit vectors of low intrinsic dimension (each cluster a random
subspace around a random centre, plus a little isotropic noise), which is roughly how sentence
embeddings sit: near neighbours exist, but are not trivially far ahead of the rest.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest

from routebook.domain import ExampleFacts, ObservedOutcome, Source
from routebook.index import IndexKind, NamespaceIndex, SearchParams, choose_kind
from routebook.index.kinds import ivf_lists, parse_kind

Vectors = npt.NDArray[np.float32]
KINDS = [IndexKind.FLAT, IndexKind.HNSW, IndexKind.IVF]


def clustered_unit_vectors(
    n: int,
    dim: int,
    *,
    seed: int,
    clusters: int = 200,
    intrinsic: int = 32,
    spread: float = 0.45,
    noise: float = 0.4,
) -> Vectors:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, intrinsic, dim)) / np.sqrt(dim)
    which = rng.integers(0, clusters, n)
    coords = rng.standard_normal((n, intrinsic)) * spread
    x = centres[which]
    for cluster in range(clusters):  # each point moves within its cluster's subspace
        members = which == cluster
        x[members] += coords[members] @ bases[cluster]
    x += noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    unit: Vectors = x.astype(np.float32)
    return unit


def facts_for(ids: range | list[int], tag: str = "") -> list[ExampleFacts]:
    return [
        ExampleFacts(
            example_id=i,
            text=f"example {i}{tag}",
            route=None,
            source=Source.HISTORY,
            best_model=None,
            outcomes=(ObservedOutcome("small", 0.5, 1),),
        )
        for i in ids
    ]


def ids_of(index: NamespaceIndex, query: Vectors, k: int) -> list[int]:
    return [n.facts.example_id for n in index.search(query, k)]


# --------------------------------------------------------------------------------------------
# Choosing a kind
# --------------------------------------------------------------------------------------------


def test_choose_kind_is_flat_up_to_the_threshold_and_approximate_above() -> None:
    assert choose_kind(0) == "flat"
    assert choose_kind(50_000) == "flat"
    assert choose_kind(50_001) == "ivf"
    assert choose_kind(1_000_000) is IndexKind.IVF
    assert choose_kind(100, approximate_above=99, approximate="hnsw") == "hnsw"
    assert choose_kind(99, approximate_above=99) == "flat"


def test_choose_kind_can_pick_ivf_above_the_threshold() -> None:
    assert choose_kind(50_000, approximate="ivf") is IndexKind.FLAT
    assert choose_kind(50_001, approximate="ivf") is IndexKind.IVF
    assert choose_kind(1_000_000, 10, IndexKind.IVF) is IndexKind.IVF
    with pytest.raises(ValueError, match="unknown index kind"):
        choose_kind(1_000_000, approximate="annoy")


def test_ivf_stores_vectors_in_half_the_bytes_of_flat() -> None:
    """float16 storage: what makes a million examples fit in memory (issue #7)."""
    vectors = clustered_unit_vectors(5000, 128, seed=6)
    sizes = {
        kind: NamespaceIndex.build(128, kind, facts_for(range(5000)), vectors)
        .export_state()
        .faiss_bytes.nbytes
        for kind in (IndexKind.FLAT, IndexKind.IVF)
    }
    assert sizes[IndexKind.IVF] < 0.6 * sizes[IndexKind.FLAT]


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown index kind 'annoy'; expected one of: flat, hnsw"):
        parse_kind("annoy")
    with pytest.raises(ValueError, match="unknown index kind"):
        NamespaceIndex(8, kind="annoy")


def test_ivf_lists_is_about_four_root_n_with_enough_points_per_list() -> None:
    assert ivf_lists(20_000) == 512  # 4·√20000 ≈ 566, capped at 20000 // 39
    assert ivf_lists(1_000_000) == 4000
    assert ivf_lists(311) == 0  # 311 // 39 = 7 lists: too few to bother
    assert ivf_lists(312) == 8


def test_an_empty_ivf_index_cannot_be_made_without_training_data() -> None:
    with pytest.raises(ValueError, match=r"use NamespaceIndex\.build"):
        NamespaceIndex(8, kind="ivf")


def test_ivf_with_too_few_vectors_falls_back_to_flat_and_says_so() -> None:
    vectors = clustered_unit_vectors(100, 16, seed=3)
    index = NamespaceIndex.build(16, "ivf", facts_for(range(100)), vectors, generation=4)
    assert index.kind is IndexKind.FLAT
    assert len(index) == 100 and index.generation == 4
    assert ids_of(index, vectors[7], 1) == [7]


def test_build_makes_the_kind_asked_for_with_its_search_params() -> None:
    vectors = clustered_unit_vectors(1000, 16, seed=4)
    for kind in KINDS:
        index = NamespaceIndex.build(
            16, kind, facts_for(range(1000)), vectors, generation=9, ef_search=64, nprobe=4
        )
        assert index.kind is kind and index.kind == str(kind)
        assert index.params == SearchParams(ef_search=64, nprobe=4)
        assert (len(index), index.dim, index.generation, index.tombstones) == (1000, 16, 9, 0)
        assert ids_of(index, vectors[123], 1) == [123]


def test_search_params_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        NamespaceIndex(8, kind="hnsw", ef_search=0)


def test_wrong_vector_width_is_refused() -> None:
    index = NamespaceIndex(8)
    with pytest.raises(ValueError, match=r"expected \(n, 8\)"):
        index.add(facts_for([1]), np.ones((1, 9), dtype=np.float32))
    assert len(index) == 0


# --------------------------------------------------------------------------------------------
# Recall against exact search: 20k clustered unit vectors of dimension 384
# --------------------------------------------------------------------------------------------

RECALL_N, RECALL_DIM, RECALL_QUERIES = 20_000, 384, 200


@pytest.fixture(scope="module")
def recall_data() -> tuple[Vectors, Vectors, list[ExampleFacts]]:
    everything = clustered_unit_vectors(RECALL_N + RECALL_QUERIES, RECALL_DIM, seed=1)
    return everything[:RECALL_N], everything[RECALL_N:], facts_for(range(RECALL_N))


@pytest.fixture(scope="module")
def exact_top10(recall_data: tuple[Vectors, Vectors, list[ExampleFacts]]) -> list[list[int]]:
    """The flat index's answers: checked against brute force on a few, then taken in one batch
    (one query at a time through the flat index costs seconds on a busy machine)."""
    vectors, queries, facts = recall_data
    brute = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10].tolist()
    flat = NamespaceIndex.build(RECALL_DIM, "flat", facts, vectors)
    for query, expected in list(zip(queries, brute, strict=True))[:10]:
        assert ids_of(flat, query, 10) == expected
    return [list(map(int, row)) for row in brute]


@pytest.mark.parametrize("kind", [IndexKind.HNSW, IndexKind.IVF])
def test_recall_at_10_against_flat(
    kind: IndexKind,
    recall_data: tuple[Vectors, Vectors, list[ExampleFacts]],
    exact_top10: list[list[int]],
) -> None:
    vectors, queries, facts = recall_data
    index = NamespaceIndex.build(RECALL_DIM, kind, facts, vectors)
    assert index.kind is kind
    hits = 0
    for query, exact in zip(queries, exact_top10, strict=True):
        found = index.search(query, 10)
        assert len(found) == 10
        sims = [n.similarity for n in found]
        assert sims == sorted(sims, reverse=True)
        # Similarities are the true inner products, whatever the kind.
        for n in found[:3]:
            assert n.similarity == pytest.approx(
                float(vectors[n.facts.example_id] @ query), abs=1e-4
            )
        hits += len(set(exact) & {n.facts.example_id for n in found})
    recall = hits / (10 * len(queries))
    assert recall >= 0.95, f"{kind} recall@10 {recall:.3f}"


# --------------------------------------------------------------------------------------------
# Removal and re-adding, for every kind
# --------------------------------------------------------------------------------------------

SMALL_N, SMALL_DIM = 1000, 32


@pytest.fixture(scope="module")
def small_vectors() -> Vectors:
    return clustered_unit_vectors(SMALL_N + 50, SMALL_DIM, seed=2, clusters=20, intrinsic=8)


def small_index(kind: IndexKind, vectors: Vectors) -> NamespaceIndex:
    index = NamespaceIndex.build(SMALL_DIM, kind, facts_for(range(SMALL_N)), vectors[:SMALL_N])
    assert index.kind is kind
    return index


@pytest.mark.parametrize("kind", KINDS)
def test_remove_counts_present_ids_and_hides_them(kind: IndexKind, small_vectors: Vectors) -> None:
    index = small_index(kind, small_vectors)
    assert index.remove([5, 6, 6, 7, 999_999]) == 3  # duplicates once, absent ids ignored
    assert len(index) == SMALL_N - 3
    assert 5 not in index and 8 in index
    with pytest.raises(KeyError):
        index.facts(6)
    for gone in (5, 6, 7):
        found = ids_of(index, small_vectors[gone], 20)
        assert gone not in found
        assert len(found) == 20
    assert index.remove([5]) == 0
    assert index.remove([]) == 0
    assert index.tombstones == (3 if kind is IndexKind.HNSW else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_readding_a_removed_id_works(kind: IndexKind, small_vectors: Vectors) -> None:
    index = small_index(kind, small_vectors)
    index.remove([42])
    new_vector = small_vectors[SMALL_N : SMALL_N + 1]
    index.add(facts_for([42], " again"), new_vector)
    assert len(index) == SMALL_N and 42 in index
    assert index.facts(42).text == "example 42 again"
    top = index.search(new_vector[0], 1)[0]
    assert top.facts.example_id == 42
    assert top.similarity == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_replacing_an_id_leaves_one_copy(kind: IndexKind, small_vectors: Vectors) -> None:
    index = small_index(kind, small_vectors)
    old_vector, new_vector = small_vectors[10], small_vectors[SMALL_N + 1]
    index.add(facts_for([10], " moved"), new_vector[None, :])
    assert len(index) == SMALL_N
    found = index.search(old_vector, 50)
    assert [n.facts.example_id for n in found].count(10) <= 1
    assert all(n.similarity < 0.999 for n in found if n.facts.example_id == 10)
    assert ids_of(index, new_vector, 1) == [10]


@pytest.mark.parametrize("kind", [IndexKind.FLAT, IndexKind.HNSW])
def test_search_after_removing_almost_everything(kind: IndexKind, small_vectors: Vectors) -> None:
    """HNSW must look past many tombstones to still return k live examples.

    (IVF is left out: it only scans `nprobe` lists, so with 20 survivors it may rightly find
    fewer than k.)
    """
    index = small_index(kind, small_vectors)
    keep = list(range(0, SMALL_N, 50))  # 20 survivors
    assert index.remove(i for i in range(SMALL_N) if i not in keep) == SMALL_N - len(keep)
    assert len(index) == len(keep)
    found = ids_of(index, small_vectors[0], 10)
    assert len(found) == 10 and set(found) <= set(keep) and found[0] == 0
    assert sorted(ids_of(index, small_vectors[0], 100)) == keep
    assert index.remove(keep) == len(keep)
    assert len(index) == 0
    assert index.search(small_vectors[0], 5) == []


def test_hnsw_grows_from_empty_and_counts_tombstones(small_vectors: Vectors) -> None:
    index = NamespaceIndex(SMALL_DIM, kind="hnsw")
    assert index.search(small_vectors[0], 3) == []
    index.add(facts_for(range(100)), small_vectors[:100])
    index.add(facts_for(range(50), " v2"), small_vectors[100:150])  # replace half
    assert len(index) == 100
    assert index.tombstones == 50
    assert index.facts(3).text == "example 3 v2"
    assert ids_of(index, small_vectors[103], 1) == [3]
    assert ids_of(index, small_vectors[77], 1) == [77]


def test_hnsw_concurrent_add_remove_and_search(small_vectors: Vectors) -> None:
    index = NamespaceIndex(SMALL_DIM, kind="hnsw")
    index.add(facts_for(range(200)), small_vectors[:200])
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for j in range(40):
                example_id = 1000 + worker * 100 + j
                vector = small_vectors[200 + worker * 40 + j]
                index.add(facts_for([example_id]), vector[None, :])
                assert index.search(vector, 1)[0].facts.example_id == example_id
                if j % 2:
                    assert index.remove([example_id]) == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(index) == 200 + 4 * 20
    assert index.tombstones == 4 * 20


@pytest.mark.parametrize("kind", KINDS)
def test_training_data_gives_each_live_example_its_stored_vector(kind: IndexKind) -> None:
    vectors = clustered_unit_vectors(1_000, 32, seed=5)
    index = NamespaceIndex.build(32, kind, facts_for(range(1_000)), vectors)
    built = index.version
    assert index.kind is kind
    index.remove(range(0, 1_000, 10))
    index.update_facts(facts_for([1], tag=" updated")[0])
    assert index.version == built + 100 + 1

    got, facts = index.training_data(limit=10_000)
    ids = [f.example_id for f in facts]
    assert sorted(ids) == [i for i in range(1_000) if i % 10]
    tolerance = 1e-3 if kind is IndexKind.IVF else 1e-6  # IVF stores float16
    assert np.allclose(got, vectors[ids], atol=tolerance)
    assert next(f.text for f in facts if f.example_id == 1) == "example 1 updated"

    sample, sampled = index.training_data(limit=50, seed=3)
    assert sample.shape == (50, 32) and len({f.example_id for f in sampled}) == 50
    assert np.allclose(sample, vectors[[f.example_id for f in sampled]], atol=tolerance)
    assert [f.example_id for f in index.training_data(limit=50, seed=3)[1]] == [
        f.example_id for f in sampled
    ]
