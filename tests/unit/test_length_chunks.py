"""Query batches are cut into similar-length chunks, so one long prompt does not pad the rest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routebook.embed.sentence import PAD_RATIO, PAD_SLACK, TRUNCATED_CHARS, length_chunks


def test_short_texts_share_a_chunk_and_a_long_one_goes_alone() -> None:
    texts = ["a" * 20, "b" * 1200, "c" * 25, "d" * 30, "e" * 60, "f" * 70]
    chunks = length_chunks(texts, max_batch=32, budget_chars=2000)
    # 20, 25 and 30 pad to 30 (within 1.3 x 20 + 16 = 42); 60 starts a chunk; 1200 is alone.
    assert chunks == [[0, 2, 3], [4, 5], [1]]


def test_max_batch_bounds_a_chunk() -> None:
    chunks = length_chunks(["x"] * 5, max_batch=2, budget_chars=10_000)
    assert chunks == [[0, 1], [2, 3], [4]]


@given(
    st.lists(st.text(max_size=3000), max_size=40),
    st.integers(1, 16),
    st.integers(1, 20_000),
)
def test_every_text_once_and_each_chunk_within_budget(
    texts: list[str], max_batch: int, budget: int
) -> None:
    chunks = length_chunks(texts, max_batch, budget)
    assert sorted(p for chunk in chunks for p in chunk) == list(range(len(texts)))
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_batch
        lengths = [min(len(texts[p]), TRUNCATED_CHARS) for p in chunk]
        # A chunk may exceed the budget only when it is a single text, and pads little.
        assert len(chunk) == 1 or len(chunk) * max(lengths) <= budget
        assert max(lengths) <= min(lengths) * PAD_RATIO + PAD_SLACK
