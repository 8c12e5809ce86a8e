"""The binary facts file of a snapshot: a `FactsTable`'s columns and the FAISS labels, as is.

Why not JSON lines: parsing a million lines and making a million objects took most of a
start-up; columns load as a handful of array copies. Layout::

    b"RBFACTS\\0"                 8 bytes, the magic
    header length                 8 bytes, little-endian unsigned
    header                        JSON: rows, strings, and each column's dtype, offset, length
    zero padding                  up to a multiple of 64 bytes
    columns                       raw little-endian arrays at the offsets the header gives

A file written before the `contains_pii` column existed (snapshot format 2) lacks it; it is
read as all zeros, and the caller learns from the snapshot's format that the marks are to be
taken from the store instead.

Integrity is not this module's job: the snapshot's meta.json records the file's size and
sha256, checked before these bytes are parsed. Parsing still refuses anything inconsistent
(ValueError), so a forged or mis-written file cannot make out-of-range reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.index.facts_table import COLUMNS, FactsColumns

MAGIC = b"RBFACTS\x00"
_ALIGN = 64
_LABEL = "label"
_DTYPES: dict[str, np.dtype[Any]] = {**COLUMNS, _LABEL: np.dtype("<i8")}
#: Columns newer than the format: a file without one is read with zeros in its place.
_ADDED_LATER = frozenset({"contains_pii"})


def encode(facts: FactsColumns, labels: npt.NDArray[np.int64]) -> Iterator[bytes | memoryview]:
    """The file's bytes in chunks (the columns are not copied)."""
    arrays: dict[str, npt.NDArray[Any]] = {**facts.columns, _LABEL: labels}
    arrays = {name: np.ascontiguousarray(arrays[name], dtype=_DTYPES[name]) for name in _DTYPES}
    columns = []
    offset = 0
    for name, array in arrays.items():
        columns.append(
            {"name": name, "dtype": array.dtype.str, "offset": offset, "length": len(array)}
        )
        offset += _padded(array.nbytes)
    header = json.dumps(
        {"rows": facts.rows, "strings": list(facts.strings), "columns": columns},
        ensure_ascii=False,
    ).encode("utf-8")
    start = _padded(len(MAGIC) + 8 + len(header))
    yield MAGIC + len(header).to_bytes(8, "little") + header
    yield bytes(start - len(MAGIC) - 8 - len(header))
    for array in arrays.values():
        yield array.view(np.uint8).data  # the bytes in place, no copy
        yield bytes(_padded(array.nbytes) - array.nbytes)


def decode(data: bytes) -> tuple[FactsColumns, npt.NDArray[np.int64]]:
    """The columns and labels held in `data` (views into it); ValueError if malformed."""
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError("the facts file does not start with the expected magic bytes")
    header_length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    header_end = len(MAGIC) + 8 + header_length
    try:
        header = json.loads(data[len(MAGIC) + 8 : header_end])
        strings = tuple(str(s) for s in header["strings"])
        rows = int(header["rows"])
        layout = {str(c["name"]): c for c in header["columns"]}
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"the facts file has an unreadable header: {exc}") from exc
    if not set(_DTYPES) - _ADDED_LATER <= set(layout) <= set(_DTYPES):
        raise ValueError(f"the facts file holds columns {sorted(layout)}")
    start = _padded(header_end)
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, dtype in _DTYPES.items():
        if name not in layout:
            arrays[name] = np.zeros(rows, dtype=dtype)
            continue
        spec = layout[name]
        if np.dtype(str(spec["dtype"])) != dtype:
            raise ValueError(f"facts column {name} has dtype {spec['dtype']}, expected {dtype.str}")
        offset, length = start + int(spec["offset"]), int(spec["length"])
        if offset < start or length < 0 or offset + length * dtype.itemsize > len(data):
            raise ValueError(f"facts column {name} lies outside the file")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=length, offset=offset)
    labels = arrays.pop(_LABEL)
    packed = FactsColumns(arrays, strings)
    if packed.rows != rows or len(labels) != rows:
        raise ValueError(f"the facts file says {rows} rows but holds {packed.rows}")
    return packed, labels


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN
