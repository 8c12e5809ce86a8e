"""`routebook eval` end to end on slices of real datasets, through the real model.

The model is the session fixture, handed to the command through click's context object, so it
loads once per test session. Embeddings go to a per-session cache folder.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from routebook.cli import main
from routebook.embed.sentence import SentenceTransformerEmbedder
from tests.jobs.conftest import DATA, needs_data

GSM8K_INDEX = DATA / "routellm" / "gsm8k.dev_index.jsonl"
GSM8K_TEST = DATA / "routellm" / "gsm8k.dev_test.jsonl"


def run(embedder: SentenceTransformerEmbedder, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), obj={"embedder": embedder})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@needs_data
def test_eval_outcome_slice_end_to_end(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, tmp_path: Path
) -> None:
    png = tmp_path / "curve.png"
    out = run(
        embedder,
        "eval",
        "--index", str(GSM8K_INDEX),
        "--test", str(GSM8K_TEST),
        "--limit", "200",
        "--resamples", "100",
        "--cache-dir", str(cache_dir),
        "--plot", str(png),
        "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert report["kind"] == "outcome"
    assert (report["n_index"], report["n_test"], report["k"]) == (653, 200, 10)
    ref = report["reference"]
    weak, strong = ref["mean_quality"].values()
    assert 0.5 < weak < strong < 1.0
    # The random router's expected curve is the diagonal: APGR 0.5, CPT(x) = x.
    assert ref["random_apgr"] == pytest.approx(0.5)
    assert (ref["random_cpt50"], ref["random_cpt80"]) == (0.5, 0.8)
    assert ref["oracle_quality"] >= strong
    names = [r["name"] for r in report["routers"]]
    assert names == ["routebook", "routebook, no cascade", "kNN vote (k=50)", "linear head"]
    for router in report["routers"]:
        apgr = router["apgr"]
        assert apgr["low"] <= apgr["estimate"] <= apgr["high"]
        # No router beats the oracle: a cascade pays for its wasted cheap calls.
        assert 0.0 < apgr["estimate"] <= ref["oracle_apgr"] + 1e-9
        for cpt in (router["cpt50"], router["cpt80"]):
            assert 0.0 <= cpt["low"] <= cpt["estimate"] <= cpt["high"] <= 1.0
        assert router["cpt50"]["estimate"] <= router["cpt80"]["estimate"]
        shares = [p[0] for p in router["curve"]]
        dollars = [p[2] for p in router["curve"]]
        # Highest target first: lowering the target never costs more.
        assert all(a >= b - 1e-12 for a, b in itertools.pairwise(shares))
        assert all(a >= b - 1e-15 for a, b in itertools.pairwise(dollars))
        op = router["operating"]
        assert sum(op["answer_share"].values()) == pytest.approx(1.0)
        assert 0.0 <= op["cold_share"] <= 1.0
        assert 0.0 < op["relative_quality"] <= ref["oracle_quality"] / strong + 1e-9
    cold = [r["operating"]["cold_share"] for r in report["routers"]]
    assert cold[1:] == [0.0, 0.0, 0.0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_data
def test_eval_table_for_people(embedder: SentenceTransformerEmbedder, cache_dir: Path) -> None:
    out = run(
        embedder,
        "eval",
        "--index", str(GSM8K_INDEX),
        "--test", str(GSM8K_TEST),
        "--limit", "50",
        "--resamples", "20",
        "--cache-dir", str(cache_dir),
    )  # fmt: skip
    for word in ("APGR", "CPT(50%)", "random", "kNN vote", "linear head", "oracle"):
        assert word in out
    # The cascades' bar beside the target: a file that changes only the bar must not read alike.
    assert "cascades accept quality >= 0.8 (the target)" in " ".join(out.split())


@needs_data
def test_eval_intent_slice_end_to_end(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, tmp_path: Path
) -> None:
    # Index: the first 8 training queries of every CLINC150 label (oos included); test: 200
    # validation queries, 10 of them out of scope.
    per_label: dict[str, int] = {}
    index = tmp_path / "index.jsonl"
    with index.open("w") as out:
        for line in (DATA / "clinc150" / "train.jsonl").read_text().splitlines(keepends=True):
            row = json.loads(line)
            if per_label.get(row["label"], 0) < 8:
                per_label[row["label"]] = per_label.get(row["label"], 0) + 1
                out.write(line)
    val = [json.loads(line) for line in (DATA / "clinc150" / "val.jsonl").read_text().splitlines()]
    test = tmp_path / "test.jsonl"
    picked = [r for r in val if r["label"] != "oos"][:190]
    picked += [r for r in val if r["label"] == "oos"][:10]
    test.write_text("".join(json.dumps(r) + "\n" for r in picked))
    out = run(
        embedder,
        "eval",
        "--index", str(index),
        "--test", str(test),
        "--resamples", "50",
        "--cache-dir", str(cache_dir),
        "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert report["kind"] == "intent"
    assert (report["n_test"], report["n_labels"]) == (200, 150)
    assert [r["name"] for r in report["routers"]] == ["routebook", "kNN vote (k=10)", "linear head"]
    routebook, knn, _linear = report["routers"]
    assert routebook["cold_tests"] == {"top_similarity": 0.55, "support": 0.25}
    assert knn["cold_tests"] == {"top_similarity": knn["threshold"]}
    for router in report["routers"]:
        rep = router["report"]
        assert (rep["n_in_scope"], rep["n_oos"]) == (190, 10)
        # Far better than chance (1/150) with 8 examples per label.
        assert rep["in_scope_accuracy"] > 0.5 > router["random"]["in_scope_accuracy"]
        # The random router guesses among the 150 routes, not among the few labels of the
        # label-sorted validation file's first 190 in-scope rows.
        chance = (1 - router["cold_share"]) / 150
        assert router["random"]["in_scope_accuracy"] == pytest.approx(chance)
        for field, ci in router["intervals"].items():
            if ci is not None:
                assert ci["low"] <= ci["estimate"] <= ci["high"], field
        assert router["random"]["oos_recall"] == pytest.approx(router["cold_share"])


def test_plot_on_intent_data_is_refused_before_the_run(tmp_path: Path) -> None:
    """It used to fail after the whole evaluation, and lose its results."""
    rows = tmp_path / "intents.jsonl"
    rows.write_text(json.dumps({"text": "hi", "label": "greet"}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["eval", "--index", str(rows), "--test", str(rows), "--plot", str(tmp_path / "p.png")]
    )
    assert result.exit_code == 2
    assert "intent data has none" in result.output


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (["oos", "oos"], "the index file has 0 in-scope labels; intent eval needs at least 2"),
        (
            ["oos", "greet", "greet"],
            "the index file has 1 in-scope label ('greet'); intent eval needs",
        ),
    ],
)
@pytest.mark.parametrize("command", ["eval", "calibrate", "gate"])
def test_an_intent_index_with_fewer_than_two_routes_is_refused(
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    labels: list[str],
    shown: str,
    command: str,
) -> None:
    """It failed after routing every query, inside the baselines: "max() arg is an empty
    sequence" (no route), scikit-learn's "needs samples of at least 2 classes" (one);
    `calibrate` only after its whole search."""
    index = tmp_path / "index.jsonl"
    rows = [{"id": str(i), "text": f"query {i}", "label": label} for i, label in enumerate(labels)]
    index.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["eval", "--index", str(index), "--test", str(index), "--cache-dir", str(tmp_path)]
    if command == "calibrate":
        args = ["calibrate", *args[1:], "--goal", "oos_recall=0.8"]
    elif command == "gate":
        settings = tmp_path / "side.toml"
        settings.write_text("k = 5\n", encoding="utf-8")
        args += ["--baseline", str(settings), "--candidate", str(settings)]
    result = CliRunner().invoke(main, args, obj={"embedder": embedder})
    assert result.exit_code == 1, result.output
    assert f"error: {shown}" in result.output
    assert "embed" not in result.output  # refused before the slow part


MMLU_INDEX = DATA / "routellm" / "mmlu.dev_index.jsonl"
MMLU_TEST = DATA / "routellm" / "mmlu.dev_test.jsonl"

# Mixtral listed cheaper (10.00 + 0.00 against 0.00 + 10.01 per Mtok) but dearer than GPT-4 for
# any prompt longer than the 256-token answer: long MMLU prompts invert the order per query.
INVERTING_CATALOG = """\
namespace: inverting
catalog:
  - {name: mixtral-8x7b-instruct-v0.1, provider: t, input_usd_per_mtok: 10.0,
     output_usd_per_mtok: 0.0, latency_ms: 100, context_window: 32000}
  - {name: gpt-4-1106-preview, provider: t, input_usd_per_mtok: 0.0,
     output_usd_per_mtok: 10.01, latency_ms: 100, context_window: 128000}
routes: []
"""


@needs_data
def test_eval_mirrors_decide_when_a_long_prompt_inverts_the_price_order(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, tmp_path: Path
) -> None:
    # decide picks the model cheapest for each request; the sweep that derives the whole curve
    # must do the same, or eval refuses ("the sweep no longer mirrors decide's rule").
    index = tmp_path / "index.jsonl"
    test = tmp_path / "test.jsonl"
    index.write_text("".join(MMLU_INDEX.read_text().splitlines(keepends=True)[:300]))
    rows = MMLU_TEST.read_text().splitlines(keepends=True)
    long = [r for r in rows if len(json.loads(r)["prompt"]) > 1100][:40]
    short = [r for r in rows if len(json.loads(r)["prompt"]) < 600][:40]
    test.write_text("".join(long + short))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(INVERTING_CATALOG)
    out = run(
        embedder,
        "eval",
        "--index", str(index),
        "--test", str(test),
        "--catalog", str(catalog),
        "--resamples", "50",
        "--cache-dir", str(cache_dir),
        "--json",
    )  # fmt: skip
    report = json.loads(out)
    (routebook,) = [r for r in report["routers"] if r["name"] == "routebook, no cascade"]
    op = routebook["operating"]
    assert sum(op["answer_share"].values()) == pytest.approx(1.0)
    # Calls never fall short of answers: a cascade's attempts are counted in its own order.
    for model, share in op["answer_share"].items():
        assert op["call_share"][model] >= share - 1e-12
