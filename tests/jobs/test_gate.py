"""`routebook eval --baseline A.toml --candidate B.toml`: the gate end to end, real model.

Outcome data: 300 GSM8K index rows and 150 test rows, embedded once per session (the shared
cache folder), so every test after the first only searches and decides. Intent data: the test
route file's utterances as the index, a few paraphrases and out-of-scope queries as the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from routebook.cli import main
from routebook.embed.sentence import SentenceTransformerEmbedder
from tests.conftest import TEST_ROUTES
from tests.jobs.conftest import DATA, needs_data

GSM8K_INDEX = DATA / "routellm" / "gsm8k.dev_index.jsonl"
GSM8K_TEST = DATA / "routellm" / "gsm8k.dev_test.jsonl"

BASELINE = "k = 10\nquality_target = 0.8\ncold_start_threshold = 0.55\n"
#: Nearly everything to the cheap model: far cheaper, far worse.
CHEAP = "k = 10\nquality_target = 0.01\ncold_start_threshold = -1\nmin_support = 0\n"


def _eval_json(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index: Path, test: Path, config: Path
) -> dict[str, Any]:
    """`eval --config FILE --json`: what one side measures alone."""
    args = ["eval", "--index", str(index), "--test", str(test), "--config", str(config)]
    args += ["--resamples", "50", "--cache-dir", str(cache_dir), "--json"]
    result = CliRunner().invoke(main, args, obj={"embedder": embedder})
    assert result.exit_code == 0, result.output + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _toml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def gate(
    embedder: SentenceTransformerEmbedder,
    cache_dir: Path,
    index: Path,
    test: Path,
    baseline: Path,
    candidate: Path,
    *extra: str,
) -> Result:
    args = [
        "eval",
        "--index", str(index),
        "--test", str(test),
        "--baseline", str(baseline),
        "--candidate", str(candidate),
        "--resamples", "50",
        "--cache-dir", str(cache_dir),
        *extra,
    ]  # fmt: skip
    return CliRunner().invoke(main, args, obj={"embedder": embedder})


@needs_data
def test_identical_candidate_passes_with_equal_figures(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    a = _toml(tmp_path, "a.toml", BASELINE)
    b = _toml(tmp_path, "b.toml", BASELINE)
    result = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, "--limit", "150", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    base, cand = report["baseline"], report["candidate"]
    assert base["figures"]["operating"] == cand["figures"]["operating"]
    assert base["figures"]["apgr"] == cand["figures"]["apgr"]
    assert report["gate"]["passed"] is True
    assert report["gate"]["reason"] is None
    measured = {c["figure"]: c["measured"] for c in report["gate"]["checks"]}
    assert measured == {"relative quality": 0.0, "cost saving": 0.0}
    assert result.stderr == ""

    # The table for people says the same.
    table = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, "--limit", "150")
    assert table.exit_code == 0, table.output
    for word in ("baseline", "candidate", "relative quality", "cost saving", "gate passed"):
        assert word in table.stdout


@needs_data
def test_clearly_worse_candidate_fails_naming_the_figure(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    a = _toml(tmp_path, "a.toml", BASELINE)
    b = _toml(tmp_path, "b.toml", CHEAP)
    result = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, "--limit", "150")
    assert result.exit_code == 1
    # Progress bars go to stderr too (not with --json); the verdict is its one last line.
    reason = result.stderr.strip().splitlines()[-1]
    assert reason.startswith("gate failed: relative quality ")
    assert "tolerance 0.01" in reason
    # It is far cheaper, so the saving rule alone would have passed.
    assert "cost saving" not in reason

    # The other way round: the expensive side saves nothing, and quality rose, so only the
    # saving rule fails.
    back = gate(
        embedder, cache_dir, index_slice, GSM8K_TEST, b, a,
        "--limit", "150", "--min-saving", "0.1", "--json",
    )  # fmt: skip
    assert back.exit_code == 1
    assert back.stderr.startswith("gate failed: cost saving ")
    assert back.stderr.count("\n") == 1
    assert "relative quality" not in back.stderr


@needs_data
def test_json_holds_both_sides(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    a = _toml(tmp_path, "a.toml", BASELINE)
    b = _toml(tmp_path, "b.toml", CHEAP)
    result = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, "--limit", "150", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)  # the verdict goes to stderr; stdout stays JSON
    assert (report["kind"], report["n_index"], report["n_test"]) == ("outcome", 300, 150)
    assert report["baseline"]["config"] == str(a)
    assert report["candidate"]["config"] == str(b)
    assert report["baseline"]["params"]["quality_target"] == 0.8
    assert report["candidate"]["params"]["quality_target"] == 0.01
    base = report["baseline"]["figures"]["operating"]
    cand = report["candidate"]["figures"]["operating"]
    assert cand["cost_per_query"] < base["cost_per_query"]
    assert cand["relative_quality"] < base["relative_quality"] - 0.01
    assert cand["cold_share"] == 0.0
    strongest = report["reference"]["models"][-1]
    assert cand["call_share"][strongest] < 0.1
    gate_json = report["gate"]
    assert gate_json["passed"] is False
    assert gate_json["tolerance_quality"] == 0.01
    checks = {c["figure"]: c for c in gate_json["checks"]}
    assert checks["relative quality"]["passed"] is False
    assert checks["relative quality"]["measured"] == pytest.approx(
        cand["relative_quality"] - base["relative_quality"]
    )
    assert checks["cost saving"]["passed"] is True
    assert checks["cost saving"]["measured"] == pytest.approx(
        1 - cand["cost_per_query"] / base["cost_per_query"]
    )


def test_intent_gate_compares_accuracy_and_oos_recall(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, tmp_path: Path
) -> None:
    routes = yaml.safe_load((TEST_ROUTES / "shop.yaml").read_text())["routes"]
    index = tmp_path / "index.jsonl"
    index.write_text(
        "".join(
            json.dumps({"id": f"u{i}-{j}", "text": text, "label": route["name"]}) + "\n"
            for i, route in enumerate(routes)
            for j, text in enumerate(route["utterances"])
        )
    )
    probes = [
        ("where is my package right now", "order_status"),
        ("I am not happy with this purchase", "refunds"),
        ("give me a summary of this long article", "summaries"),
        ("what is the capital of australia", "oos"),
        ("tell me a joke about penguins", "oos"),
    ]
    test = tmp_path / "test.jsonl"
    test.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "text": t, "label": y}) + "\n"
            for i, (t, y) in enumerate(probes)
        )
    )
    a = _toml(tmp_path, "a.toml", "k = 5\ncold_start_threshold = 0.3\nmin_support = 0\n")
    # Cold on everything: in-scope accuracy drops to 0 while OOS recall can only rise.
    b = _toml(tmp_path, "b.toml", "k = 5\ncold_start_threshold = 0.999\nmin_support = 0\n")
    result = gate(embedder, cache_dir, index, test, a, b, "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith("gate failed: in-scope accuracy 0.0000 is ")
    assert "OOS recall" not in result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "intent"
    assert report["candidate"]["figures"]["cold_share"] == 1.0
    assert [c["figure"] for c in report["gate"]["checks"]] == ["in-scope accuracy", "OOS recall"]

    refused = gate(embedder, cache_dir, index, test, a, b, "--min-saving", "0.1")
    assert refused.exit_code == 1
    assert "error: --min-saving needs outcome data" in refused.stderr


def test_gate_refuses_half_or_mixed_options(tmp_path: Path) -> None:
    a = _toml(tmp_path, "a.toml", BASELINE)
    data = _toml(tmp_path, "rows.jsonl", json.dumps({"id": "1", "text": "hi", "label": "x"}))
    base = ["eval", "--index", str(data), "--test", str(data)]
    half = CliRunner().invoke(main, [*base, "--baseline", str(a)])
    assert half.exit_code == 2
    assert "needs both --baseline and --candidate" in half.output
    mixed = CliRunner().invoke(
        main, [*base, "--baseline", str(a), "--candidate", str(a), "--k", "5"]
    )
    assert mixed.exit_code == 2
    assert "--k cannot be combined with --baseline/--candidate" in mixed.output


@needs_data
def test_gate_refuses_sides_that_embed_differently(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    """A candidate that switched to int8 was scored on the baseline's float32 vectors, and
    passed: the gate embeds once, so the sides must embed alike."""
    a = _toml(tmp_path, "a.toml", BASELINE)
    b = _toml(tmp_path, "b.toml", BASELINE + 'embed_precision = "int8"\n')
    result = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b)
    assert result.exit_code == 1
    assert "embed differently (embed_precision 'float32' against 'int8')" in result.output


# Mixtral with cheap input and dear output, GPT-4 the reverse: which is cheaper for a GSM8K
# prompt (about 100 tokens) depends on the answer length a request is priced at.
CROSSING_CATALOG = """\
namespace: crossing
catalog:
  - {name: mixtral-8x7b-instruct-v0.1, provider: t, input_usd_per_mtok: 0.1,
     output_usd_per_mtok: 10.0, latency_ms: 100, context_window: 32000}
  - {name: gpt-4-1106-preview, provider: t, input_usd_per_mtok: 1.0,
     output_usd_per_mtok: 1.0, latency_ms: 100, context_window: 128000}
routes: []
"""

#: Every query to the model cheapest for it: the answer length alone picks the model.
CHEAPEST = "k = 10\nquality_target = 0.01\ncold_start_threshold = -1\nmin_support = 0\n"


@needs_data
def test_the_gate_decides_each_side_at_its_own_answer_length(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    """Both sides were decided and priced at a fixed 256-token answer: a candidate whose
    `default_output_tokens` moves every request to another model in `serve` passed the gate as
    identical to its baseline (same figures, saving 0)."""
    catalog = _toml(tmp_path, "catalog.yaml", CROSSING_CATALOG)
    a = _toml(tmp_path, "a.toml", CHEAPEST + "default_output_tokens = 256\n")
    b = _toml(tmp_path, "b.toml", CHEAPEST + "default_output_tokens = 4\n")
    args = ("--limit", "150", "--catalog", str(catalog), "--json")
    result = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, *args)
    assert result.exit_code == 1, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["answer_tokens"] == 256  # both charged at the baseline's answer length
    base, cand = report["baseline"]["figures"], report["candidate"]["figures"]
    # At 256 tokens GPT-4 is the cheaper call, at 4 Mixtral for all but the shortest prompts.
    assert base["operating"]["answer_share"]["gpt-4-1106-preview"] > 0.9
    assert cand["operating"]["answer_share"]["mixtral-8x7b-instruct-v0.1"] > 0.5
    # Charged for 256-token answers, Mixtral's calls cost several times GPT-4's.
    assert cand["operating"]["cost_per_query"] > 3 * base["operating"]["cost_per_query"]
    checks = {c["figure"]: c for c in report["gate"]["checks"]}
    assert checks["cost saving"]["passed"] is False
    assert "cost saving" in result.stderr

    # Priced at a measured 4-token answer instead, the candidate's calls are the cheaper ones.
    short = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, *args, "--answer-tokens", "4")
    measured = json.loads(short.stdout)
    assert measured["answer_tokens"] == 4
    checks = {c["figure"]: c for c in measured["gate"]["checks"]}
    assert checks["cost saving"]["passed"] is True and checks["cost saving"]["measured"] > 0


@needs_data
def test_the_gate_grades_each_sides_cascades_at_its_own_bar(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    """The gate ignored `cascade_min_quality` (a review of the change that added it): both
    sides' cascades accepted at the target 0.14, so a candidate that `serve` runs with a bar
    of 0.8 was gated as identical to its baseline. Graded answers make the bar matter: the
    cheap model's good answers are graded 0.5 here."""
    graded = tmp_path / "graded.jsonl"
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:150]]
    for row in rows:
        row["outcomes"] = {
            model: (0.5 if "mixtral" in model and q == 1 else q)
            for model, q in row["outcomes"].items()
        }
    graded.write_text("".join(json.dumps(row) + "\n" for row in rows))
    every_query_cold = "k = 10\nquality_target = 0.14\ncold_start_threshold = 0.99\n"
    a = _toml(tmp_path, "a.toml", every_query_cold)
    b = _toml(tmp_path, "b.toml", every_query_cold + "cascade_min_quality = 0.8\n")
    result = gate(embedder, cache_dir, index_slice, graded, a, b, "--json")
    report = json.loads(result.stdout)
    base, cand = report["baseline"]["figures"], report["candidate"]["figures"]
    assert base["operating"]["cold_share"] == cand["operating"]["cold_share"] == 1.0
    # At the bar 0.14 every graded 0.5 passes; at 0.8 none does, and GPT-4 is called.
    assert cand["operating"]["quality"] > base["operating"]["quality"] + 0.1
    assert cand["operating"]["cost_per_query"] > 2 * base["operating"]["cost_per_query"]
    # The candidate side measures what `eval --config` measures for the same file.
    alone = _eval_json(embedder, cache_dir, index_slice, graded, b)
    routebook = next(r for r in alone["routers"] if r["name"] == "routebook")
    assert routebook["operating"]["quality"] == pytest.approx(cand["operating"]["quality"])
    # The table's settings lines tell the two files apart (they read alike without the bar).
    table = gate(embedder, cache_dir, index_slice, graded, a, b)
    printed = " ".join(table.stdout.split())  # rich wraps long lines
    assert "cascade_min_quality=0.14 (the target)" in printed
    assert "cascade_min_quality=0.8," in printed


@needs_data
def test_the_gate_trains_each_sides_head_on_its_own_sample(
    embedder: SentenceTransformerEmbedder, cache_dir: Path, index_slice: Path, tmp_path: Path
) -> None:
    """`head_max_examples` bounds what `serve` trains a namespace's head on; the gate trained
    one head on the whole index for both sides."""
    a = _toml(tmp_path, "a.toml", BASELINE)
    b = _toml(tmp_path, "b.toml", BASELINE + "head_max_examples = 120\n")
    result = gate(embedder, cache_dir, index_slice, GSM8K_TEST, a, b, "--limit", "150", "--json")
    report = json.loads(result.stdout)
    base, cand = report["baseline"], report["candidate"]
    assert base["figures"]["apgr"] != cand["figures"]["apgr"]
    assert cand["serving"]["head_max_examples"] == 120
