"""`routebook bench` end to end on a small size: every figure is measured and plausible."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from routebook.cli import main
from routebook.embed import Embedder
from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.jobs.bench import as_markdown, real_texts, run_against, run_bench, varied
from routebook.jobs.embedcache import EmbeddingCache
from tests.conftest import Served

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
    assert result.store == "sqlite"
    # The server ran as its own process: its memory holds the model, its start-up is measured.
    assert 100 < result.rss_mb <= result.peak_rss_mb
    assert result.startup_s > result.startup_from_snapshot_s > 0
    table = as_markdown(result, "routebook bench --size 300")
    assert "| 4 | 20 |" in table and "recall@10 exact (flat)" in table


def test_bench_against_a_running_server(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url)
    result = run_against(served.target, "default", DATASETS, concurrencies=(2,), requests=10)
    assert [(row.concurrency, row.requests) for row in result.decide] == [(2, 10)]
    assert result.record_outcome_per_s > 0 and result.cached_p50_ms > 0
    # Every decision the bench made got its outcome, under the bench's own outcome ids.
    with served.app.store.engine.connect() as connection:
        recorded = connection.execute(
            text("SELECT count(*) FROM outcomes WHERE outcome_id LIKE 'bench-%'")
        ).scalar_one()
    assert recorded == 10
    table = as_markdown(result, "routebook bench --target x")
    assert "index search alone" not in table and "| 2 | 10 |" in table


def test_bench_index_only_from_the_command_line(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench --index-only` makes its vectors from cached real embeddings: fill a cache first."""
    monkeypatch.setenv("ROUTEBOOK_CACHE_DIR", str(tmp_path))
    EmbeddingCache(embedder, tmp_path).embed(real_texts(DATASETS)[:1_200])
    result = CliRunner().invoke(
        main,
        ["bench", "--index-only", "--size", "4000", "--datasets", str(DATASETS), "--json"],
    )
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert (measured["size"], measured["kind"], measured["queries"]) == (4000, "ivf", 1000)
    assert 0.9 <= measured["recall_at_10"] <= 1.0
    assert 0 < measured["search_p50_ms"] <= measured["search_p99_ms"]
    assert measured["load_seconds"] > 0 and measured["rss_bytes"] > 0
