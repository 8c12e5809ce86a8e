"""Tests for routebook.index with a tiny deterministic fake embedder.

`trigram_embed` hashes character trigrams into a 64-d vector and L2-normalises it. It exists
only for these pure unit tests of the FAISS wrapper; routing itself uses the real model.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from routebook.domain import ExampleFacts, ObservedOutcome, Source
from routebook.index import IndexRegistry, NamespaceIndex

DIM = 64


def trigram_embed(text: str) -> npt.NDArray[np.float32]:
    """Character trigrams of the padded lower-cased text, hashed (crc32) into DIM buckets."""
    padded = f"  {text.lower()} "
    vector = np.zeros(DIM, dtype=np.float32)
    for i in range(len(padded) - 2):
        vector[zlib.crc32(padded[i : i + 3].encode("utf-8")) % DIM] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def embed_all(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    return np.stack([trigram_embed(t) for t in texts]).astype(np.float32)


def make_facts(example_id: int, text: str, route: str | None = None) -> ExampleFacts:
    return ExampleFacts(
        example_id=example_id,
        text=text,
        route=route,
        source=Source.REFERENCE,
        best_model="small",
    )


TEXTS = {
    1: "where is my order",
    2: "where is my parcel",
    3: "prove that the square root of two is irrational",
    4: "write a haiku about autumn leaves",
}


@pytest.fixture
def index() -> NamespaceIndex:
    idx = NamespaceIndex(DIM)
    facts = [make_facts(i, t) for i, t in TEXTS.items()]
    idx.add(facts, embed_all([f.text for f in facts]))
    return idx


def test_fake_embedder_is_deterministic_and_normalised() -> None:
    a = trigram_embed("where is my order")
    assert np.array_equal(a, trigram_embed("where is my order"))
    assert float(np.linalg.norm(a)) == pytest.approx(1.0, abs=1e-6)
    assert a.dtype == np.float32 and a.shape == (DIM,)


def test_add_and_len(index: NamespaceIndex) -> None:
    assert len(index) == 4
    assert index.dim == DIM
    assert 1 in index and 4 in index
    assert 99 not in index
    assert index.facts(3).text == TEXTS[3]
    assert index.generation == 1


def test_exact_match_comes_first_with_similarity_one(index: NamespaceIndex) -> None:
    found = index.search(trigram_embed("where is my order"), k=4)
    assert found[0].facts.example_id == 1
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert found[0].weight == 0.0  # the index leaves weights to decide


def test_search_orders_by_similarity(index: NamespaceIndex) -> None:
    query = trigram_embed("where is my order")
    found = index.search(query, k=4)
    sims = [n.similarity for n in found]
    assert sims == sorted(sims, reverse=True)
    # The similarities are the inner products with the stored vectors.
    for n in found:
        expected = float(np.dot(query, trigram_embed(n.facts.text)))
        assert n.similarity == pytest.approx(expected, abs=1e-5)
    # The near-paraphrase outranks the unrelated texts.
    assert found[1].facts.example_id == 2
    assert {n.facts.example_id for n in found[2:]} == {3, 4}


def test_search_returns_k_results(index: NamespaceIndex) -> None:
    assert len(index.search(trigram_embed("autumn"), k=2)) == 2
    assert len(index.search(trigram_embed("autumn"), k=1)) == 1


def test_k_larger_than_size_returns_everything(index: NamespaceIndex) -> None:
    found = index.search(trigram_embed("haiku"), k=100)
    assert len(found) == 4
    assert {n.facts.example_id for n in found} == set(TEXTS)


def test_search_on_empty_index_returns_nothing() -> None:
    assert NamespaceIndex(DIM).search(trigram_embed("anything"), k=5) == []


def test_readding_an_id_replaces_vector_and_facts(index: NamespaceIndex) -> None:
    new = make_facts(1, "integrate x squared from zero to one", route="maths")
    index.add([new], embed_all([new.text]))
    assert len(index) == 4
    assert index.facts(1) == new
    found = index.search(trigram_embed(new.text), k=4)
    assert found[0].facts == new
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    # The old vector is gone: the old text no longer finds id 1 at similarity 1.
    old_hits = index.search(trigram_embed(TEXTS[1]), k=4)
    assert old_hits[0].facts.example_id == 2
    assert all(n.similarity < 0.99 for n in old_hits)


def test_adding_a_batch_with_new_and_existing_ids(index: NamespaceIndex) -> None:
    batch = [make_facts(2, "cancel my subscription"), make_facts(5, "translate this to french")]
    index.add(batch, embed_all([f.text for f in batch]))
    assert len(index) == 5
    assert index.facts(2).text == "cancel my subscription"
    assert index.search(trigram_embed("translate this to french"), k=1)[0].facts.example_id == 5


def test_update_facts_changes_what_search_returns(index: NamespaceIndex) -> None:
    updated = ExampleFacts(
        example_id=3,
        text=TEXTS[3],
        route="maths",
        source=Source.HISTORY,
        best_model="frontier",
        outcomes=(ObservedOutcome("small", 0.2, 4),),
    )
    index.update_facts(updated)
    found = index.search(trigram_embed(TEXTS[3]), k=1)
    assert found[0].facts == updated
    assert found[0].facts.outcomes == (ObservedOutcome("small", 0.2, 4),)
    assert len(index) == 4


def test_update_facts_of_unknown_id_raises_key_error(index: NamespaceIndex) -> None:
    with pytest.raises(KeyError):
        index.update_facts(make_facts(404, "not indexed"))
    assert 404 not in index
    assert len(index) == 4


def test_revise_facts_reads_and_writes_in_one_step(index: NamespaceIndex) -> None:
    seen: list[ExampleFacts] = []

    def add_an_outcome(current: ExampleFacts) -> ExampleFacts:
        seen.append(current)
        return replace(current, outcomes=(ObservedOutcome("small", 1.0, 1),))

    assert index.revise_facts(2, add_an_outcome)
    assert seen == [make_facts(2, TEXTS[2])]
    assert index.facts(2).outcomes == (ObservedOutcome("small", 1.0, 1),)
    version = index.version
    assert index.revise_facts(2, lambda current: None)  # None: leave the facts as they are
    assert index.facts(2).outcomes == (ObservedOutcome("small", 1.0, 1),)
    assert index.version == version
    assert not index.revise_facts(404, add_an_outcome)  # not indexed: nothing called, no error
    assert len(seen) == 1 and 404 not in index


def test_add_new_leaves_examples_already_there(index: NamespaceIndex) -> None:
    taken = make_facts(1, "a different text under an id already indexed")
    fresh = make_facts(5, "a brand new query")
    present = index.add_new([taken, fresh], embed_all([taken.text, fresh.text]))
    assert present == [1]
    assert index.facts(1) == make_facts(1, TEXTS[1])  # untouched: facts and vector
    assert index.search(trigram_embed(TEXTS[1]), k=1)[0].facts.example_id == 1
    assert index.facts(5) == fresh and len(index) == 5
    assert index.add_new([make_facts(1, TEXTS[1])], embed_all([TEXTS[1]])) == [1]


def test_add_new_refuses_an_example_removed_meanwhile(index: NamespaceIndex) -> None:
    """RecordOutcome indexes its new history example after the commit; a delete that commits
    and reaches the index first (before or after the example was there) must win."""
    assert index.remove([2]) == 1  # deleted while indexed
    assert index.remove([7]) == 0  # deleted before the outcome's writer indexed it
    late = [make_facts(2, TEXTS[2]), make_facts(7, "a query deleted before it was indexed")]
    assert index.add_new(late, embed_all([f.text for f in late])) == [2, 7]
    assert 2 not in index and 7 not in index and len(index) == 3
    fresh = make_facts(8, "a query nobody deleted")
    assert index.add_new([fresh], embed_all([fresh.text])) == []
    assert 8 in index


def test_a_swapped_in_index_refuses_what_the_old_one_removed(index: NamespaceIndex) -> None:
    """A generation loaded from a snapshot taken after a delete never removes that example
    itself; a writer that committed before the delete must not put it back there either."""
    registry = IndexRegistry(DIM)
    registry.swap("ns", index)
    assert index.remove([2]) == 1 and index.remove([7]) == 0
    newer = NamespaceIndex(DIM)  # the snapshot's content: 2 already gone
    newer.add([make_facts(1, TEXTS[1])], embed_all([TEXTS[1]]))
    assert newer.remove([1]) == 1  # its own removals are kept as well
    registry.swap("ns", newer)
    late = [make_facts(i, f"late {i}") for i in (1, 2, 7, 8)]
    assert registry.get("ns").add_new(late, embed_all([f.text for f in late])) == [1, 2, 7]
    assert newer.all_facts() == [late[3]]


def test_revisions_racing_deletes_never_raise() -> None:
    idx = NamespaceIndex(DIM)
    texts = [f"query {n}" for n in range(50)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def churn() -> None:  # delete and re-add every example, over and over
        try:
            start.wait()
            for _ in range(20):
                idx.remove(range(50))
                idx.add([make_facts(n, t) for n, t in enumerate(texts)], embed_all(texts))
        except BaseException as exc:
            errors.append(exc)

    def revise() -> None:
        try:
            start.wait()
            for round_ in range(200):
                for n in range(50):
                    idx.revise_facts(
                        n, lambda f, r=round_: replace(f, outcomes=(ObservedOutcome("s", 1, r),))
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn), threading.Thread(target=revise)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(idx) == 50


def test_facts_of_unknown_id_raises_key_error(index: NamespaceIndex) -> None:
    with pytest.raises(KeyError):
        index.facts(404)


def test_mismatched_lengths_raise_value_error(index: NamespaceIndex) -> None:
    facts = [make_facts(10, "a"), make_facts(11, "b")]
    with pytest.raises(ValueError, match="2 examples but 1 vectors"):
        index.add(facts, embed_all(["a"]))
    assert len(index) == 4  # nothing was added
    assert 10 not in index


def test_adding_nothing_is_a_no_op(index: NamespaceIndex) -> None:
    index.add([], np.zeros((0, DIM), dtype=np.float32))
    assert len(index) == 4


def test_repeated_id_within_one_batch_keeps_the_last() -> None:
    idx = NamespaceIndex(DIM)
    batch = [make_facts(1, "where is my order"), make_facts(1, "write a haiku")]
    idx.add(batch, embed_all([f.text for f in batch]))
    assert len(idx) == 1
    found = idx.search(trigram_embed("where is my order"), k=5)
    assert [n.facts.text for n in found] == ["write a haiku"]


def test_float64_vectors_are_accepted() -> None:
    idx = NamespaceIndex(DIM)
    idx.add([make_facts(1, "hello there")], embed_all(["hello there"]).astype(np.float64))
    found = idx.search(trigram_embed("hello there").astype(np.float64), k=1)
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------------------
# IndexRegistry
# --------------------------------------------------------------------------------------------


def test_registry_get_creates_an_empty_index_once() -> None:
    registry = IndexRegistry(DIM)
    assert registry.namespaces() == []
    first = registry.get("shop")
    assert isinstance(first, NamespaceIndex)
    assert len(first) == 0
    assert first.dim == DIM
    assert first.generation == 1
    assert registry.get("shop") is first
    assert registry.namespaces() == ["shop"]


def test_registry_swap_increments_generation() -> None:
    registry = IndexRegistry(DIM)
    registry.get("shop")
    rebuilt = NamespaceIndex(DIM)
    registry.swap("shop", rebuilt)
    assert registry.get("shop") is rebuilt
    assert rebuilt.generation == 2
    again = NamespaceIndex(DIM)
    registry.swap("shop", again)
    assert registry.get("shop") is again
    assert again.generation == 3


def test_registry_swap_into_a_new_namespace_keeps_the_generation() -> None:
    registry = IndexRegistry(DIM)
    registry.swap("fresh", NamespaceIndex(DIM, generation=7))
    assert registry.get("fresh").generation == 7


def test_registry_namespaces_are_sorted_and_independent() -> None:
    registry = IndexRegistry(DIM)
    for name in ("zeta", "alpha", "mid"):
        registry.get(name)
    assert registry.namespaces() == ["alpha", "mid", "zeta"]
    registry.get("alpha").add([make_facts(1, "hi")], embed_all(["hi"]))
    assert len(registry.get("alpha")) == 1
    assert len(registry.get("zeta")) == 0


# --------------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------------


def test_concurrent_add_and_search() -> None:
    registry = IndexRegistry(DIM)
    threads_n, per_thread = 4, 50
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def work(worker: int) -> None:
        try:
            start.wait()
            idx = registry.get("shared")
            for j in range(per_thread):
                example_id = worker * 1000 + j
                text = f"worker {worker} query number {j}"
                idx.add([make_facts(example_id, text)], embed_all([text]))
                found = idx.search(trigram_embed(text), k=3)
                assert found, "search found nothing right after an add"
                sims = [n.similarity for n in found]
                assert sims == sorted(sims, reverse=True)
                if j % 10 == 0:
                    # Re-adding an id must not grow the index.
                    idx.add([make_facts(example_id, text)], embed_all([text]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    idx = registry.get("shared")
    assert len(idx) == threads_n * per_thread
    assert registry.namespaces() == ["shared"]
    for worker in range(threads_n):
        text = f"worker {worker} query number 7"
        top = idx.search(trigram_embed(text), k=1)[0]
        assert top.facts.text == text
