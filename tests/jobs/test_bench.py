"""`routebook bench` end to end on a small size: every figure is measured and plausible."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from routebook.cli import main
from routebook.embed import Embedder
from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.jobs.bench import as_markdown, real_texts, run_against, run_bench, to_json, varied
from routebook.jobs.bench_fill import derived_vectors
from routebook.jobs.embedcache import EmbeddingCache
from routebook.store.examples import vector_from_bytes
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
    assert (result.fill_vectors, result.fill_texts, result.fill_model_texts) == ("model", 300, 300)
    assert [row.concurrency for row in result.decide] == [1, 4]
    for row in result.decide:
        assert row.requests == 20
        assert 0 < row.p50_ms <= row.p95_ms <= row.p99_ms
        assert row.throughput_per_s > 0
        # CPU per Decide, both sides: the server embeds every query, so it cannot be free.
        assert row.server_cpu_ms is not None and row.server_cpu_ms > 0.5
        assert row.client_cpu_ms > 0
        # The server's own Decide timings, from its metrics, over this level's calls only: the
        # stages fit inside the Decide, which fits inside the client's mean latency.
        assert row.server_ms is not None and row.embed_ms is not None
        assert row.search_ms is not None
        assert row.search_ms > 0 and row.embed_ms > 0
        assert row.embed_ms + row.search_ms < row.server_ms < row.mean_ms
    assert result.cached_p50_ms > 0
    assert result.record_outcome_per_s > 0
    assert result.head_ready_s is not None and result.head_ready_s < 300  # a head came
    assert 0 < result.search_p50_ms <= result.search_p99_ms
    assert result.index_kind == "flat" and result.recall_at_10 is None
    assert result.store == "sqlite" and result.embedding_model == embedder.model_id
    # The server ran as its own process: its memory holds the model, its start-up is measured.
    assert 100 < result.rss_mb <= result.peak_rss_mb
    assert result.startup_s > result.startup_from_snapshot_s > 0
    table = as_markdown(result, "routebook bench --size 300")
    assert "| 4 | 20 |" in table and "recall@10 exact (flat)" in table
    second = result.decide[1]
    assert f"| {second.server_cpu_ms:.2f} / {second.client_cpu_ms:.2f} |" in table
    inside = f"{second.server_ms:.1f} ({second.embed_ms:.1f} / {second.search_ms:.2f})"
    assert f"| {second.mean_ms:.1f} / {inside} |" in table
    assert "Fill vectors: model" in table and "the model embedded 300 of the 300" in table


def test_bench_against_a_running_server(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url, metrics_port=0)
    result = run_against(served.target, "default", DATASETS, concurrencies=(2,), requests=10)
    assert [(row.concurrency, row.requests) for row in result.decide] == [(2, 10)]
    # A server elsewhere: its CPU is not visible from the bench, nor its stages without --metrics.
    assert result.decide[0].server_cpu_ms is None and result.decide[0].client_cpu_ms > 0
    assert result.decide[0].server_ms is None
    metrics = f"http://127.0.0.1:{served.running.metrics_port}/metrics"
    watched = run_against(
        served.target, "default", DATASETS, concurrencies=(2,), requests=10, metrics_url=metrics
    )
    row = watched.decide[0]
    assert row.server_ms is not None and row.embed_ms is not None and row.search_ms is not None
    assert 0 < row.embed_ms + row.search_ms < row.server_ms < row.mean_ms
    assert result.record_outcome_per_s > 0 and result.cached_p50_ms > 0
    # Every decision the bench made got its outcome, under the bench's own outcome ids.
    with served.app.store.engine.connect() as connection:
        recorded = connection.execute(
            text("SELECT count(*) FROM outcomes WHERE outcome_id LIKE 'bench-%'")
        ).scalar_one()
    assert recorded == 20
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


def test_derived_fill_stores_noisy_copies_of_the_base_vectors(
    embedder: Embedder, tmp_path: Path
) -> None:
    """`fill_vectors="derived"`: 100 base texts through the model, 200 variations of them stored
    with the base vector plus noise; the server accepts the store and the result says so."""
    base = real_texts(DATASETS)[:100]
    datasets = tmp_path / "datasets"
    (datasets / "clinc150").mkdir(parents=True)
    (datasets / "clinc150" / "train.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in base), encoding="utf-8"
    )
    assert real_texts(datasets) == base
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_bench(
        300,
        datasets,
        concurrencies=(1, 2),
        requests=20,
        embedder=embedder,
        workdir=workdir,
        fill_vectors="derived",
    )
    assert (result.fill_vectors, result.fill_texts, result.fill_model_texts) == (
        "derived",
        300,
        100,
    )
    assert result.size == 300 + 215  # the fill plus the default route file's utterances
    assert result.fill_s > 0 and result.rss_mb > 100  # a real server loaded the snapshot
    assert [row.requests for row in result.decide] == [20, 20]
    assert json.loads(to_json(result))["fill_vectors"] == "derived"
    table = as_markdown(result, "routebook bench --size 300 --fill-vectors derived")
    assert "Fill vectors: **derived**" in table
    assert "100 distinct dataset texts embedded by the model; the other 200 fill texts" in table

    fill = list(varied(base, 300))
    wanted = set(fill)
    engine = create_engine(f"sqlite:///{workdir / 'bench.db'}")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT text, embedding, embedding_model FROM examples"))
        stored = {t: (vector_from_bytes(e), m) for t, e, m in rows if t in wanted}
    engine.dispose()
    assert len(stored) == 300  # every fill text is stored, as text
    assert {m for _v, m in stored.values()} == {embedder.model_id}
    vectors = np.stack([stored[t][0] for t in fill])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    own_base = embedder.embed(base)
    to_base = np.sum(vectors * own_base[np.arange(300) % 100], axis=1)
    # The first pass is the base texts themselves: their model vectors as they are.
    assert to_base[:100].min() > 0.9999
    # Every variation sits near its base text's vector, but is not that vector: noise of norm
    # 0.15 to 0.45 gives a cosine of about 0.91 to 0.99 (0.89 at worst over 300,000 draws)...
    assert to_base[100:].min() > 0.88 and to_base[100:].max() < 0.995
    assert 0.93 < to_base[100:].mean() < 0.98
    # ...nor the model's embedding of the variation's own text.
    to_own = np.sum(vectors[100:] * embedder.embed(fill[100:]), axis=1)
    assert to_own.max() < 0.999


def test_derived_vectors_keep_the_first_pass_and_are_seeded() -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((10, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    chunk = derived_vectors(base, 5, 20)  # fill texts 5..24: 5 first-pass, 15 variations
    assert np.array_equal(chunk[:5], base[5:10])
    assert not np.isclose(chunk[5:], base[np.arange(10, 25) % 10]).all(axis=1).any()
    assert np.array_equal(chunk, derived_vectors(base, 5, 20))
    assert not np.array_equal(chunk[5:], derived_vectors(base, 6, 20)[4:19])


def test_fill_vectors_needs_a_fill() -> None:
    result = CliRunner().invoke(
        main, ["bench", "--target", "127.0.0.1:1", "--fill-vectors", "derived"]
    )
    assert result.exit_code == 2
    assert "--fill-vectors is for a fill" in result.output


def test_set_needs_key_equals_value() -> None:
    result = CliRunner().invoke(main, ["bench", "--set", "embed_precision"])
    assert result.exit_code == 2
    assert "write KEY=VALUE" in result.output
    result = CliRunner().invoke(main, ["bench", "--index-only", "--set", "workers=4"])
    assert result.exit_code == 2
    assert "--set configures the started server" in result.output


def test_metrics_is_for_a_target() -> None:
    result = CliRunner().invoke(main, ["bench", "--metrics", "http://127.0.0.1:1/metrics"])
    assert result.exit_code == 2
    assert "--metrics is for --target" in result.output


def test_bench_does_not_wait_for_a_head_that_cannot_come(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """With heads off the bench waited its full 300 s, then said "learned head ready after
    300.4 s"."""
    started = time.monotonic()
    result = run_bench(
        20,
        DATASETS,
        concurrencies=(1,),
        requests=10,
        embedder=embedder,
        server_settings={"head_enabled": "false"},
    )
    assert result.head_ready_s is None
    assert time.monotonic() - started < 200
    assert "no learned head" in as_markdown(result, "routebook bench --size 20")
