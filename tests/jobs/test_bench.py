"""`routebook bench` end to end on a small size: every figure is measured and plausible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.jobs.bench import as_markdown, real_texts, run_bench, varied

DATASETS = Path(
    os.environ.get("ROUTEBOOK_DATASETS", Path(__file__).parents[3] / "shared" / "datasets")
)
pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason="needs ../shared/datasets")


def test_fill_texts_are_real_and_distinct() -> None:
    texts = real_texts(DATASETS)
    assert len(texts) > 20_000
    fill = list(varied(texts[:100], 250))
    assert len(fill) == len(set(fill)) == 250
    assert fill[:100] == texts[:100]  # real text first, variations after


def test_bench_measures_every_figure(embedder: SentenceTransformerEmbedder) -> None:
    result = run_bench(300, DATASETS, concurrencies=(1, 4), requests=20, embedder=embedder)
    assert result.size == 300 + 215  # the fill plus the default route file's utterances
    assert [row.concurrency for row in result.decide] == [1, 4]
    for row in result.decide:
        assert row.requests == 20
        assert 0 < row.p50_ms <= row.p95_ms <= row.p99_ms
        assert row.throughput_per_s > 0
    assert result.cached_p50_ms > 0
    assert result.record_outcome_per_s > 0
    assert 0 < result.search_p50_ms <= result.search_p99_ms
    assert result.index_kind == "flat" and result.recall_at_10 is None
    assert result.rss_mb > 100
    table = as_markdown(result, "routebook bench --size 300")
    assert "| 4 | 20 |" in table and "recall@10 exact (flat)" in table
