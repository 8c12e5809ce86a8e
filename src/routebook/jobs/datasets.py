"""Loaders for the evaluation datasets: RouteLLM outcome rows and intent rows (CLINC150,
Banking77), read from JSONL into frozen dataclasses.

Why a strict loader: an evaluation number is only as good as the rows behind it, and a silently
skipped or mis-typed row shifts APGR or accuracy without any visible failure. So every row is
validated, and a bad one raises `DatasetError` naming the file and the 1-based line number, the
way a compiler reports a syntax error. Standard library only, so the loaders can run anywhere
the evaluation maths runs.

Formats (see the README next to each dataset):

* outcome rows: `{"id", "prompt", "outcomes": {model: quality in [0, 1]}, "benchmark", ...}`
* intent rows: `{"id", "text", "label", ...}`; out-of-scope queries carry the label `oos`.

Extra fields are allowed and ignored, so richer rows (MT-Bench turns, CLINC domains) load too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

OOS_LABEL = "oos"
"""The label CLINC150 gives out-of-scope queries; a router should go cold on them."""

DatasetKind = Literal["outcome", "intent"]
Row = TypeVar("Row")


class DatasetError(ValueError):
    """A dataset file that cannot be loaded; the message starts with `path:line:`."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One benchmark prompt and how well each model did on it (quality in [0, 1])."""

    id: str
    prompt: str
    outcomes: dict[str, float]
    benchmark: str | None = None


@dataclass(frozen=True, slots=True)
class IntentRow:
    """One user query and its intent label (`OOS_LABEL` when it fits no intent)."""

    id: str
    text: str
    label: str


class _RowProblem(Exception):
    """Raised inside a row parser; the caller turns it into a DatasetError with file and line."""


def _iter_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, JSON object) for each non-blank line, 1-based like editors count."""
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(path, lineno, f"not valid UTF-8 ({exc.reason})") from exc
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, lineno, f"invalid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise DatasetError(path, lineno, f"expected a JSON object, got {_kind(obj)}")
            yield lineno, obj


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _text_field(obj: dict[str, Any], name: str) -> str:
    """A required, non-empty string field."""
    if name not in obj:
        raise _RowProblem(f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise _RowProblem(f"field {name!r} must be a string, got {_kind(value)}")
    if not value.strip():
        raise _RowProblem(f"field {name!r} is empty")
    return value


def _quality(model: str, value: object) -> float:
    """One model's quality: a finite number in [0, 1]; booleans are refused as ambiguous."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RowProblem(f"outcome for {model!r} must be a number, got {_kind(value)}")
    quality = float(value)
    if not math.isfinite(quality) or not 0.0 <= quality <= 1.0:
        raise _RowProblem(f"outcome for {model!r} must be in [0, 1], got {value}")
    return quality


def _outcomes(obj: dict[str, Any]) -> dict[str, float]:
    if "outcomes" not in obj:  # said as for every other required field, not "got null"
        raise _RowProblem("missing field 'outcomes'")
    raw = obj["outcomes"]
    if not isinstance(raw, dict):
        raise _RowProblem(f"field 'outcomes' must be an object, got {_kind(raw)}")
    if not raw:
        raise _RowProblem("field 'outcomes' is empty")
    if any(not isinstance(k, str) or not k for k in raw):
        raise _RowProblem("model names in 'outcomes' must be non-empty strings")
    return {model: _quality(model, value) for model, value in raw.items()}


def _outcome_row(obj: dict[str, Any]) -> OutcomeRow:
    benchmark = obj.get("benchmark")
    if benchmark is not None and not isinstance(benchmark, str):
        raise _RowProblem(f"field 'benchmark' must be a string or null, got {_kind(benchmark)}")
    return OutcomeRow(
        id=_text_field(obj, "id"),
        prompt=_text_field(obj, "prompt"),
        outcomes=_outcomes(obj),
        benchmark=benchmark,
    )


def _intent_row(obj: dict[str, Any]) -> IntentRow:
    return IntentRow(
        id=_text_field(obj, "id"),
        text=_text_field(obj, "text"),
        label=_text_field(obj, "label"),
    )


def _load(
    path: str | os.PathLike[str],
    parse: Callable[[dict[str, Any]], Row],
    id_of: Callable[[Row], str],
) -> list[Row]:
    """Parse every row, attach file and line to any problem, and refuse duplicate ids.

    Ids key results and precedents downstream, so a repeated id would silently merge two rows.
    """
    source = Path(path)
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for lineno, obj in _iter_objects(source):
        try:
            row = parse(obj)
        except _RowProblem as exc:
            raise DatasetError(source, lineno, str(exc)) from None
        row_id = id_of(row)
        if row_id in first_line:
            raise DatasetError(
                source, lineno, f"duplicate id {row_id!r} (first on line {first_line[row_id]})"
            )
        first_line[row_id] = lineno
        rows.append(row)
    return rows


def load_outcome_rows(path: str | os.PathLike[str]) -> list[OutcomeRow]:
    """Load RouteLLM-style outcome rows (per-model quality per prompt), in file order."""
    return _load(path, _outcome_row, lambda row: row.id)


def load_intent_rows(path: str | os.PathLike[str]) -> list[IntentRow]:
    """Load intent rows (CLINC150, Banking77), in file order."""
    return _load(path, _intent_row, lambda row: row.id)


def detect_kind(path: str | os.PathLike[str]) -> DatasetKind:
    """Tell outcome data from intent data by the first row's fields.

    Only the first row is read, so this is cheap; the loader then validates every row.
    """
    source = Path(path)
    for lineno, obj in _iter_objects(source):
        if "outcomes" in obj:
            return "outcome"
        if "text" in obj and "label" in obj:
            return "intent"
        raise DatasetError(
            source, lineno, "row has neither 'outcomes' nor 'text' and 'label'; unknown format"
        )
    raise DatasetError(source, None, "file has no rows")
