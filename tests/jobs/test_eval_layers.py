"""`head_features = "layers"` in the jobs: `eval`, `calibrate` and the gate train the head on
every layer's mean pool, as `serve` would, on real data slices through the real model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from routebook.cli import main
from routebook.config import load_settings
from routebook.decide import DecisionParams
from routebook.embed import Embedder
from routebook.embed.protocol import EmbedderInFront, layered
from routebook.jobs import replay
from routebook.jobs.calibrate import parse_goal, run_calibration
from routebook.jobs.datasets import load_outcome_rows
from routebook.jobs.embedcache import EmbeddingCache
from routebook.jobs.evaluate import RunOptions, evaluate_outcomes
from routebook.jobs.run import Inputs
from tests.jobs.conftest import DATA, needs_data

GSM8K_INDEX = DATA / "routellm" / "gsm8k.dev_index.jsonl"
GSM8K_TEST = DATA / "routellm" / "gsm8k.dev_test.jsonl"
RECOMMENDED = DecisionParams(similarity_floor=0.0, weight_power=2.0, target_mode="relative")
LAYERS_TOML = (
    'k = 50\nsimilarity_floor = 0.0\nweight_power = 2.0\ntarget_mode = "relative"\n'
    'head_features = "layers"\nhead_strength = 30\n'
)


class Counting(EmbedderInFront):
    """Counts the texts that reach the model."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.texts = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return super().embed(texts)

    def embed_with_layers(self, texts):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return super().embed_with_layers(texts)


@needs_data
def test_the_cache_keeps_layers_beside_vectors(layers_embedder: Embedder, tmp_path: Path) -> None:
    texts = [r.prompt for r in load_outcome_rows(GSM8K_TEST)[:20]]
    counting = Counting(layers_embedder)
    cache = EmbeddingCache(counting, tmp_path)
    vectors = cache.embed(texts)
    assert counting.texts == 20  # vectors and layers from one forward pass each
    layers = cache.layers(texts)
    assert counting.texts == 20 and layers.shape == (20, 7 * 384)
    fresh_vectors, fresh_layers = layered(layers_embedder).embed_with_layers(texts)
    assert np.allclose(vectors, fresh_vectors, atol=1e-6)
    # float16 on disk: within its rounding of the model's float32 pools.
    assert np.allclose(layers, fresh_layers, rtol=2e-3, atol=2e-3)
    reopened = Counting(layers_embedder)
    assert np.array_equal(EmbeddingCache(reopened, tmp_path).layers(texts), layers)
    assert reopened.texts == 0  # read from the file


@needs_data
def test_a_layers_head_is_trained_and_read_in_eval(
    layers_embedder: Embedder, cache_dir: Path
) -> None:
    cache = EmbeddingCache(layers_embedder, cache_dir)
    index_rows = load_outcome_rows(GSM8K_INDEX)[:300]
    test_rows = load_outcome_rows(GSM8K_TEST)[:60]
    catalog = replay.routellm_catalog()
    facts = replay.outcome_facts(index_rows)
    vectors = cache.embed([r.prompt for r in index_rows])
    layers = cache.layers([r.prompt for r in index_rows])
    head = replay.index_head(facts, vectors, catalog, RECOMMENDED, layers=layers)
    plain = replay.index_head(facts, vectors, catalog, RECOMMENDED)
    assert head is not None and head.reads_layers and head.model_weights.shape[1] == 7 * 384 + 1
    assert plain is not None and not plain.reads_layers

    texts = [r.prompt for r in test_rows]
    index = replay.build_index(facts, vectors)
    query_layers = cache.layers(texts)
    searched = replay.search_all(
        index, texts, cache.embed(texts), 50, head=head, layers=query_layers
    )
    by_vector = replay.search_all(index, texts, cache.embed(texts), 50, head=plain)
    differ = sum(
        abs((a.success_of(m) or 0.0) - (b.success_of(m) or 0.0)) > 1e-6
        for a, b in zip(searched.heads, by_vector.heads, strict=True)
        if a is not None and b is not None
        for m in catalog.names
    )
    assert differ > 60  # the two heads read different features

    def apgr(features: str) -> float:
        options = RunOptions(
            params=replace(RECOMMENDED, head_strength=30.0),
            k=50,
            resamples=20,
            serving=replay.Serving(head_features=features),
        )
        figures = evaluate_outcomes(index_rows, test_rows, cache, catalog, options).routers[0]
        return figures.apgr.estimate

    assert apgr("layers") != apgr("vector")


@needs_data
def test_eval_and_calibrate_read_head_features_from_the_config(
    layers_embedder: Embedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    config = tmp_path / "layers.toml"
    config.write_text(LAYERS_TOML, encoding="utf-8")
    vector = tmp_path / "vector.toml"
    vector.write_text(LAYERS_TOML.replace('"layers"', '"vector"'), encoding="utf-8")
    common = ["--index", str(index_slice), "--test", str(GSM8K_TEST), "--limit", "60"]
    common += ["--cache-dir", str(cache_dir), "--resamples", "20", "--json"]

    def run(*args: str) -> dict[str, object]:
        result = CliRunner().invoke(main, list(args), obj={"embedder": layers_embedder})
        assert result.exit_code == 0, result.output
        report: dict[str, object] = json.loads(result.stdout)
        return report

    def routebook_apgr(report: dict[str, object]) -> float:
        routers = report["routers"]
        assert isinstance(routers, list)
        return float(routers[0]["apgr"]["estimate"])

    by_layers = run("eval", *common, "--config", str(config))
    by_vector = run("eval", *common, "--config", str(vector))
    assert routebook_apgr(by_layers) != routebook_apgr(by_vector)

    out = tmp_path / "calibrated.toml"
    report = run("calibrate", *common, "--config", str(config), "--goal", "quality=0.95",
                 "--head-features", "layers", "--out", str(out))  # fmt: skip
    settings = report["settings"]
    assert isinstance(settings, dict)
    # The written file serves the head the strengths were chosen for: the layers one, or none
    # (on this slice no head wins), which reads nothing and is written as "vector".
    chosen = "layers" if settings["head_strength"] else "vector"
    assert settings["head_features"] == chosen
    assert load_settings({}, out).head_features == chosen

    # A head with no weight reads nothing: the file then says "vector", so that `serve` neither
    # builds the layers graph nor embeds its training texts' pools for it.
    weightless = tmp_path / "weightless.toml"
    weightless.write_text(LAYERS_TOML.replace("head_strength = 30", "head_strength = 0"))
    args = ["calibrate", *common, "--config", str(weightless), "--goal", "quality=0.95"]
    result = CliRunner().invoke(main, args, obj={"embedder": layers_embedder})
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["head_strength"] == 0 and settings["head_features"] == "vector"
    # Said on stderr, since the config asked for the layers.
    assert (
        'note: the settings say head_features = "layers"; calibrate chose no head '
        "(head_strength 0), written as vector" in result.stderr
    )


@needs_data
def test_calibrate_chooses_what_the_head_reads(
    layers_embedder: Embedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    """By default `calibrate` tries a head on the vector and one on the layers, and keeps the
    cheaper setting at the goal: the one each kind alone would find, whichever costs less."""
    common = ["calibrate", "--index", str(index_slice), "--test", str(GSM8K_TEST)]
    common += ["--limit", "40", "--cache-dir", str(cache_dir), "--resamples", "20", "--json"]
    common += ["--goal", "quality=0.95", "--no-cascade", "--target-mode", "relative"]

    def calibrate(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(main, [*common, *args], obj={"embedder": layers_embedder})
        assert result.exit_code == 0, result.output
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    alone = {kind: calibrate("--head-features", kind) for kind in ("vector", "layers")}
    both = calibrate()  # the default: both
    cost = {kind: r["calibration"]["cost_per_query"] for kind, r in alone.items()}
    assert cost["vector"] != cost["layers"]  # the two heads lead to different settings here
    cheaper = min(cost, key=lambda kind: cost[kind])
    assert both["settings"]["head_features"] == cheaper
    assert both["settings"] == alone[cheaper]["settings"]
    assert both["calibration"]["cost_per_query"] == pytest.approx(cost[cheaper])
    # The test file is routed with the chosen head: the same report as that kind alone.
    assert both["test"]["routers"][0] == alone[cheaper]["test"]["routers"][0]
    # Chosen by cost, not by the order tried (a tie goes to the first kind).
    inputs = Inputs.make(embedder=layers_embedder, cache_dir=cache_dir, target_mode="relative")
    reversed_order = run_calibration(
        inputs,
        index_slice,
        GSM8K_TEST,
        None,
        parse_goal("quality=0.95"),
        resamples=20,
        limit=40,
        cascade=False,
        modes=("relative",),
        head_features=("layers", "vector"),
    )
    assert reversed_order.head_features == cheaper
    assert reversed_order.calib_figures["cost_per_query"] == pytest.approx(cost[cheaper])


@needs_data
def test_the_gate_compares_a_layers_head_with_a_vector_head(
    layers_embedder: Embedder,
    embedder: Embedder,
    cache_dir: Path,
    index_slice: Path,
    tmp_path: Path,
) -> None:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(LAYERS_TOML, encoding="utf-8")
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(LAYERS_TOML.replace('"layers"', '"vector"'), encoding="utf-8")
    args = ["eval", "--index", str(index_slice), "--test", str(GSM8K_TEST), "--limit", "60"]
    args += ["--baseline", str(baseline), "--candidate", str(candidate)]
    args += ["--cache-dir", str(cache_dir), "--resamples", "20", "--json"]
    result = CliRunner().invoke(main, args, obj={"embedder": layers_embedder})
    assert result.exit_code in (0, 1), result.output  # 1 with a report: the candidate failed
    report = json.loads(result.stdout)
    assert report["candidate"]["serving"]["head_features"] == "layers"
    assert report["baseline"]["serving"]["head_features"] == "vector"
    assert report["candidate"]["figures"]["apgr"] != report["baseline"]["figures"]["apgr"]

    # An embedder without layer pools cannot serve the candidate: a message, not a traceback.
    refused = CliRunner().invoke(main, args, obj={"embedder": embedder})
    assert refused.exit_code == 1 and not refused.stdout
    assert "error:" in refused.stderr and "gives no layer pools" in refused.stderr
