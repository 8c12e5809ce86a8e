"""Tests for routebook.jobs.datasets: real files load with the documented counts, bad rows fail
with the file and line in the message."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from routebook.jobs.datasets import (
    OOS_LABEL,
    DatasetError,
    IntentRow,
    OutcomeRow,
    detect_kind,
    load_intent_rows,
    load_outcome_rows,
)

DATA = Path(os.environ.get("ROUTEBOOK_DATASETS", "/work/shared/datasets"))
STRONG = "gpt-4-1106-preview"
WEAK = "mixtral-8x7b-instruct-v0.1"

needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present")


# --------------------------------------------------------------------------------------------
# Real files (counts and means from the READMEs in /work/shared/datasets)
# --------------------------------------------------------------------------------------------


@needs_data
def test_gsm8k_dev_test_rows() -> None:
    rows = load_outcome_rows(DATA / "routellm" / "gsm8k.dev_test.jsonl")
    assert len(rows) == 261
    first = rows[0]
    assert first.id == "gsm8k-d28df8f7b843b4df"
    assert first.benchmark == "gsm8k"
    assert first.prompt.startswith("Every day, Wendi feeds each of her chickens")
    assert first.outcomes == {STRONG: 1.0, WEAK: 0.0}
    # README: GPT-4 0.8506, Mixtral 0.6398, best-of-both 0.9310.
    assert sum(r.outcomes[STRONG] for r in rows) / 261 == pytest.approx(0.8506, abs=5e-5)
    assert sum(r.outcomes[WEAK] for r in rows) / 261 == pytest.approx(0.6398, abs=5e-5)
    best = sum(max(r.outcomes.values()) for r in rows) / 261
    assert best == pytest.approx(0.9310, abs=5e-5)


@needs_data
def test_mt_bench_dev_test_keeps_graded_scores() -> None:
    rows = load_outcome_rows(DATA / "routellm" / "mt_bench.dev_test.jsonl")
    assert len(rows) == 14
    assert rows[0].outcomes == {STRONG: 0.95, WEAK: 0.95}
    assert rows[2].outcomes == {STRONG: 1.0, WEAK: 0.75}
    assert sum(r.outcomes[STRONG] for r in rows) / 14 == pytest.approx(0.9214, abs=5e-5)


@needs_data
def test_clinc150_val_rows() -> None:
    rows = load_intent_rows(DATA / "clinc150" / "val.jsonl")
    assert len(rows) == 3100
    labels = Counter(r.label for r in rows)
    assert labels[OOS_LABEL] == 100
    assert len(labels) == 151  # 150 intents + oos
    assert {count for label, count in labels.items() if label != OOS_LABEL} == {20}
    assert rows[0] == IntentRow(
        id="clinc150-1290ae1fe674b491",
        text="in spanish, meet me tomorrow is said how",
        label="translate",
    )


@needs_data
def test_banking77_dev_test_rows() -> None:
    rows = load_intent_rows(DATA / "banking77" / "train.dev_test.jsonl")
    assert len(rows) == 1970
    assert len({r.label for r in rows}) == 77
    assert OOS_LABEL not in {r.label for r in rows}
    assert rows[0].label == "card_arrival"


@needs_data
def test_detect_kind_on_real_files() -> None:
    assert detect_kind(DATA / "routellm" / "mmlu.dev_test.jsonl") == "outcome"
    assert detect_kind(DATA / "clinc150" / "val.jsonl") == "intent"
    assert detect_kind(DATA / "banking77" / "train.dev_test.jsonl") == "intent"


# --------------------------------------------------------------------------------------------
# Hand-made files
# --------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _outcome(row_id: str, **outcomes: float) -> str:
    return json.dumps({"id": row_id, "prompt": f"prompt {row_id}", "outcomes": outcomes})


def test_loads_outcome_rows_skipping_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.jsonl", [_outcome("q1", s=1, w=0), "", _outcome("q2", s=0.5, w=1)])
    assert load_outcome_rows(path) == [
        OutcomeRow(id="q1", prompt="prompt q1", outcomes={"s": 1.0, "w": 0.0}),
        OutcomeRow(id="q2", prompt="prompt q2", outcomes={"s": 0.5, "w": 1.0}),
    ]
    assert detect_kind(path) == "outcome"


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    # Line 2 is blank but still counted, so the broken row is on line 3.
    path = _write(tmp_path, "bad.jsonl", [_outcome("q1", s=1, w=0), "", '{"id": "q2", '])
    with pytest.raises(DatasetError) as info:
        load_outcome_rows(path)
    assert info.value.path == path
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: invalid JSON")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "p", "outcomes": {"s": 1}}, "missing field 'id'"),
        ({"id": "q", "prompt": 7, "outcomes": {"s": 1}}, "field 'prompt' must be a string"),
        ({"id": "q", "prompt": "p", "outcomes": {}}, "field 'outcomes' is empty"),
        ({"id": "q", "prompt": "p", "outcomes": [1, 0]}, "field 'outcomes' must be an object"),
        # Black-box review 2, finding 10: a row without outcomes read "must be an object, got
        # null", as if the field were there.
        ({"id": "q", "prompt": "p"}, "missing field 'outcomes'"),
        ({"id": "q", "prompt": "p", "outcomes": None}, "must be an object, got null"),
        ({"id": "q", "prompt": "p", "outcomes": {"s": 1.5}}, "must be in [0, 1], got 1.5"),
        ({"id": "q", "prompt": "p", "outcomes": {"s": True}}, "must be a number, got bool"),
        ({"id": "q", "prompt": "p", "outcomes": {"s": "1"}}, "must be a number, got str"),
    ],
)
def test_bad_outcome_row_names_line_and_reason(
    tmp_path: Path, row: dict[str, object], reason: str
) -> None:
    path = _write(tmp_path, "rows.jsonl", [_outcome("q0", s=1), json.dumps(row)])
    with pytest.raises(DatasetError) as info:
        load_outcome_rows(path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{path}:2: ")
    assert reason in str(info.value)


def test_non_object_row_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "list.jsonl", ["[1, 2]"])
    with pytest.raises(DatasetError, match=r":1: expected a JSON object, got list"):
        load_intent_rows(path)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    rows = [json.dumps({"id": i, "text": "t", "label": "x"}) for i in ("a", "b", "a")]
    path = _write(tmp_path, "dup.jsonl", rows)
    with pytest.raises(DatasetError, match=r":3: duplicate id 'a' \(first on line 1\)"):
        load_intent_rows(path)


def test_intent_rows_need_a_label(tmp_path: Path) -> None:
    path = _write(tmp_path, "intent.jsonl", [json.dumps({"id": "a", "text": "hi", "label": ""})])
    with pytest.raises(DatasetError, match=r":1: field 'label' is empty"):
        load_intent_rows(path)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok", "label": "x"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r":2: not valid UTF-8"):
        load_intent_rows(path)


def test_detect_kind_rejects_unknown_and_empty_files(tmp_path: Path) -> None:
    unknown = _write(tmp_path, "unknown.jsonl", [json.dumps({"id": "a", "question": "?"})])
    with pytest.raises(DatasetError, match=r":1: row has neither"):
        detect_kind(unknown)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        detect_kind(empty)
    assert info.value.line is None
    assert str(info.value) == f"{empty}: file has no rows"
