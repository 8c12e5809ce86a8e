"""Index snapshots on disk, so a server starts (or swaps generation) without rebuilding.

Layout, one folder per store, namespace and generation::

    <snapshot_dir>/store-<id>/<namespace>/gen-00000007/index.faiss  faiss.write_index format
                                                      /facts.bin    facts and FAISS labels
                                                      /meta.json    SnapshotMeta, and each
                                                                    file's size and sha256

`store_folder` names a store's folder (from its identity), so two stores (deployments with
their own databases) sharing one snapshot_dir never write the same files; the functions below
take that folder. Snapshots from before store folders sit at `<snapshot_dir>/<namespace>/…`:
the store's `index_generations` row records each snapshot's path, so they are still loaded
from there (when they are that store's), and nothing writes there any more.

Pruning goes by what the store published, which this module cannot read: after each publish
the reindex (service/reindex.py) deletes the generations older than the one before the newest
published (`prune_before`), and old-layout snapshots its rows name (`remove_published`). A save
prunes nothing unless asked to keep a number of folders (`keep`, for tools without a store).
Format version 1 kept the facts as JSON lines (facts.jsonl); such snapshots are still read.
Format version 3 added each example's `contains_pii` mark to facts.bin; versions 1 and 2 are
read with every mark off, and their loader (service/follower.py) takes the marks from the
store, so a snapshot an older routebook wrote never shows a marked example's text.

A snapshot is written into a hidden temporary sibling (``.tmp-…``), every file and the folder
are fsynced, and only then is it renamed into place: a process killed half-way leaves a
temporary folder that readers never look at and the next save deletes, never a ``gen-…``
folder that looks complete. ``meta.json`` is written last and records the other files' sizes
(checked by `latest_snapshot`) and hashes (checked by `load_snapshot`), so a folder damaged
later is refused too; the hash is checked before FAISS parses a byte, streaming the file so
the check costs no second copy of it in memory. Saves of one namespace are serialised with a
lock file.

Errors::

    SnapshotError
     ├── SnapshotMismatch   made by another embedding model or with another dimension
     └── SnapshotCorrupt    missing, truncated or inconsistent files
          └── SnapshotForeign   not the snapshot the caller's store published (another
                                store's, or another save of the same generation)

No store import: what the high-water marks mean is the caller's business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from routebook.domain import ExampleFacts, ObservedOutcome, Source
from routebook.index import facts_file
from routebook.index.facts_table import FactsColumns, FactsTable
from routebook.index.kinds import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, SearchParams, parse_kind
from routebook.index.namespace_index import NamespaceIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
#: The first format whose facts carry the `contains_pii` marks.
MARKS_PII_FROM = 3
INDEX_FILE = "index.faiss"
FACTS_FILE = "facts.bin"
META_FILE = "meta.json"
#: Format version → its facts file. Versions 1 and 2 are read, never written.
_FACTS_FILES = {1: "facts.jsonl", 2: FACTS_FILE, 3: FACTS_FILE}
_HASH_CHUNK = 1 << 22
_GEN_DIR = re.compile(r"^gen-(\d{8,})$")
_STORE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TEMP_PREFIXES = (".tmp-", ".old-")


class SnapshotError(Exception):
    """A snapshot that cannot be used; the message says which and why."""


class SnapshotMismatch(SnapshotError):
    """The snapshot was made by another embedding model (or dimension) than the configured one."""


class SnapshotCorrupt(SnapshotError):
    """The snapshot folder is incomplete or damaged; rebuild from the store instead."""


class SnapshotForeign(SnapshotCorrupt):
    """The folder holds a snapshot, but not the one expected: another store wrote it (two
    deployments sharing a snapshot folder), or its generation, marks or size differ from
    the store's record. Rebuild from the store instead."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What the store that published a snapshot says it holds (see `load_snapshot`)."""

    store_id: str
    generation: int
    high_water_example_id: int
    high_water_outcome_id: int
    high_water_tombstone_id: int
    count: int


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot holds and up to where in the store it is complete.

    The caller fills everything but `created_at`, which `save_snapshot` stamps. `count` and
    `kind` as written are taken from the index itself (it may have grown since the caller
    counted); `dim` and `generation` must agree with the index.
    """

    namespace: str
    generation: int
    embedding_model_id: str
    dim: int
    high_water_example_id: int
    high_water_outcome_id: int
    kind: str
    count: int
    high_water_tombstone_id: int = 0
    #: The id of the store whose examples these are; "" in snapshots from before it existed.
    store_id: str = ""
    created_at: datetime | None = None
    format_version: int = FORMAT_VERSION


def store_folder(snapshot_dir: Path, store_id: str) -> Path:
    """The folder of one store's snapshots inside the shared `snapshot_dir`."""
    if not _STORE_ID.fullmatch(store_id):
        raise ValueError(f"store id {store_id!r} cannot name a snapshot folder")
    return snapshot_dir / f"store-{store_id}"


def namespace_folder(folder: Path, namespace: str) -> Path:
    """A namespace's folder in a store's folder: its snapshots, beside other files kept per
    namespace, which saves and prunes leave alone. ValueError for a name that cannot be one
    (namespace names are checked long before: `routefiles.NAME_PATTERN`)."""
    if not namespace or namespace.startswith(".") or "/" in namespace or "\\" in namespace:
        raise ValueError(f"namespace {namespace!r} cannot name a snapshot folder")
    return folder / namespace


def snapshot_path(folder: Path, namespace: str, generation: int) -> Path:
    return namespace_folder(folder, namespace) / f"gen-{generation:08d}"


def save_snapshot(
    index: NamespaceIndex, folder: Path, meta: SnapshotMeta, *, keep: int | None = None
) -> Path:
    """Write `index` as `meta.namespace`'s snapshot of `meta.generation`; returns its folder.

    Saving a generation that already exists replaces it, and leftovers of interrupted saves
    are deleted. With `keep`, only the newest `keep` snapshot folders of the namespace remain
    afterwards; a store's reindex passes none, because folders are not what servers load:
    it prunes by what the store published, once it has published (`prune_before`).
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (got {keep})")
    state = index.export_state()
    if meta.dim != state.dim or meta.generation != state.generation:
        raise ValueError(
            f"meta says dim {meta.dim}, generation {meta.generation}; the index has dim "
            f"{state.dim}, generation {state.generation}"
        )
    meta = dataclasses.replace(
        meta,
        kind=str(state.kind),
        count=state.facts.rows,
        created_at=datetime.now(UTC),
        format_version=FORMAT_VERSION,
    )
    ns_dir = namespace_folder(folder, meta.namespace)
    ns_dir.mkdir(parents=True, exist_ok=True)
    final = snapshot_path(folder, meta.namespace, meta.generation)
    with _namespace_lock(ns_dir):
        _remove_leftovers(ns_dir)
        temp = ns_dir / f".tmp-{final.name}-{uuid.uuid4().hex}"
        temp.mkdir()
        files = {
            INDEX_FILE: _write_file(temp / INDEX_FILE, [state.faiss_bytes.data]),
            FACTS_FILE: _write_file(
                temp / FACTS_FILE, facts_file.encode(state.facts, state.labels)
            ),
        }
        _write_file(temp / META_FILE, [_meta_json(meta, files)])
        _fsync_dir(temp)
        if final.exists():  # same generation saved again: move the old one aside first
            final.rename(ns_dir / f".old-{final.name}-{uuid.uuid4().hex}")
        temp.rename(final)
        _fsync_dir(ns_dir)
        _remove_leftovers(ns_dir)
        if keep is not None:
            _prune(ns_dir, keep, final)
    return final


def latest_snapshot(folder: Path, namespace: str) -> SnapshotMeta | None:
    """The newest complete snapshot of `namespace`, skipping incomplete or damaged ones."""
    for _generation, path in _generations(namespace_folder(folder, namespace)):
        try:
            meta, _files = _read_meta(path)
        except SnapshotCorrupt as exc:
            log.warning("ignoring snapshot %s: %s", path, exc)
            continue
        if meta.namespace == namespace:
            return meta
        log.warning("ignoring snapshot %s: it belongs to namespace %r", path, meta.namespace)
    return None


def load_snapshot(
    path: Path,
    expected_model_id: str,
    expected_dim: int,
    *,
    expected: Expected | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    nprobe: int = DEFAULT_NPROBE,
) -> tuple[NamespaceIndex, SnapshotMeta]:
    """The index saved in `path` and its meta.

    Raises FileNotFoundError if `path` does not exist, SnapshotForeign if it is not the
    `expected` snapshot, SnapshotMismatch if it was made by another model or dimension,
    SnapshotCorrupt if anything in it is missing or damaged.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"no snapshot folder at {path}")
    meta, files = _read_meta(path)
    if expected is not None:  # first: another store's snapshot says nothing about our model
        _check_expected(path, meta, expected)
    if meta.embedding_model_id != expected_model_id or meta.dim != expected_dim:
        raise SnapshotMismatch(
            f"snapshot {path} was made with embedding model {meta.embedding_model_id!r} "
            f"(dim {meta.dim}), but the configured model is {expected_model_id!r} "
            f"(dim {expected_dim})"
        )
    facts_name = _FACTS_FILES[meta.format_version]
    facts_data = _read_checked(path / facts_name, *files[facts_name])
    _check_hash(path / INDEX_FILE, *files[INDEX_FILE])
    try:
        if meta.format_version == 1:
            packed, labels = _parse_fact_lines(facts_data)
        else:
            packed, labels = facts_file.decode(facts_data)
        index = NamespaceIndex.from_parts(
            faiss.read_index(str(path / INDEX_FILE)),
            dim=meta.dim,
            kind=parse_kind(meta.kind),
            generation=meta.generation,
            facts=packed,
            labels=labels,
            params=SearchParams(ef_search, nprobe),
        )
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # RuntimeError: FAISS
        raise SnapshotCorrupt(f"snapshot {path} cannot be read: {exc}") from exc
    if len(index) != meta.count:
        raise SnapshotCorrupt(
            f"snapshot {path} holds {len(index)} examples, meta says {meta.count}"
        )
    return index, meta


def _check_expected(path: Path, meta: SnapshotMeta, expected: Expected) -> None:
    if meta.store_id and meta.store_id != expected.store_id:
        raise SnapshotForeign(
            f"snapshot {path} was written by another store (id {meta.store_id}, this store's "
            f"is {expected.store_id}) over this store's: two deployments shared the snapshot "
            "folder before each store had a folder of its own there; the next reindex writes "
            "into this store's folder"
        )
    # Also for snapshots from before store ids: a folder rewritten since its row was
    # published (by another store, or a losing reindex of the same generation) differs here.
    found = (
        meta.generation,
        meta.high_water_example_id,
        meta.high_water_outcome_id,
        meta.high_water_tombstone_id,
        meta.count,
    )
    wanted = (
        expected.generation,
        expected.high_water_example_id,
        expected.high_water_outcome_id,
        expected.high_water_tombstone_id,
        expected.count,
    )
    if found != wanted:
        raise SnapshotForeign(
            f"snapshot {path} is not the one the store published: (generation, example, "
            f"outcome and tombstone marks, examples) are {found} in its meta, {wanted} in the "
            "store"
        )


def prune_snapshots(folder: Path, namespace: str, keep: int) -> None:
    """Keep only the newest `keep` snapshot folders of `namespace`, whatever was published."""
    ns_dir = namespace_folder(folder, namespace)
    if ns_dir.is_dir():
        with _namespace_lock(ns_dir):
            _prune(ns_dir, keep, None)


def prune_before(folder: Path, namespace: str, generation: int) -> list[Path]:
    """Delete `namespace`'s snapshots older than `generation`, complete or damaged alike (a
    damaged one still holds example text), and leftovers of interrupted saves; returns the
    folders deleted. None at or after `generation` is touched, so a generation published
    after the caller chose it is never lost. A folder that cannot be deleted is logged and
    left (the next prune tries again): the caller's reindex is published all the same.
    """
    ns_dir = namespace_folder(folder, namespace)
    if not ns_dir.is_dir():
        return []
    deleted: list[Path] = []
    with _namespace_lock(ns_dir):
        _remove_leftovers(ns_dir)
        for found, path in _generations(ns_dir):
            if found < generation and _remove(path):
                deleted.append(path)
    return deleted


def remove_published(path: Path, expected: Expected) -> bool:
    """Delete the snapshot at `path` if it is the one `expected` describes (an old-layout
    snapshot a row of the caller's store names, see the module docstring); True if deleted.
    One that is missing, unreadable or another store's is left alone: it is not provably
    the caller's to delete."""
    try:
        meta, _files = _read_meta(path)
        _check_expected(path, meta, expected)
    except SnapshotCorrupt:
        return False
    return _remove(path)


# -- writing ------------------------------------------------------------------------------


def _meta_json(meta: SnapshotMeta, files: dict[str, tuple[int, str]]) -> bytes:
    record: dict[str, Any] = dataclasses.asdict(meta)
    record["created_at"] = meta.created_at.isoformat() if meta.created_at else None
    record["files"] = {name: {"bytes": n, "sha256": digest} for name, (n, digest) in files.items()}
    return (json.dumps(record, indent=2) + "\n").encode("utf-8")


def _write_file(path: Path, chunks: Iterable[bytes | memoryview]) -> tuple[int, str]:
    """Write and fsync `path`; returns its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            size += memoryview(chunk).nbytes
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _namespace_lock(ns_dir: Path) -> Iterator[None]:
    """Serialise saves and prunes of one namespace, across processes too."""
    with (ns_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(ns_dir: Path) -> None:
    """Delete what interrupted saves left behind; safe because the caller holds the lock."""
    for entry in ns_dir.iterdir():
        if entry.name.startswith(_TEMP_PREFIXES) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _remove(path: Path) -> bool:
    """Delete a snapshot folder: renamed aside first, so no reader ever sees it half gone
    and a crash mid-way leaves a leftover the next save or prune deletes."""
    aside = path.with_name(f".old-{path.name}-{uuid.uuid4().hex}")
    try:
        path.rename(aside)
        shutil.rmtree(aside)
    except OSError as exc:
        log.warning("cannot delete snapshot %s (it keeps its example texts): %s", path, exc)
        return False
    log.info("pruned snapshot %s", path)
    return True


def _prune(ns_dir: Path, keep: int, just_saved: Path | None) -> None:
    """Delete complete snapshots beyond the newest `keep`, and anything older than those."""
    kept: list[int] = []
    for generation, path in _generations(ns_dir):
        if len(kept) < keep or path == just_saved:
            try:
                _read_meta(path)
            except SnapshotCorrupt:
                if not kept:
                    continue  # damaged but newer than every good one: not ours to judge
            else:
                kept.append(generation)
                continue
        log.info("pruning snapshot %s", path)
        shutil.rmtree(path, ignore_errors=True)


# -- reading ------------------------------------------------------------------------------


def _generations(ns_dir: Path) -> list[tuple[int, Path]]:
    """The gen-… folders of a namespace, newest first."""
    if not ns_dir.is_dir():
        return []
    found = []
    for entry in ns_dir.iterdir():
        match = _GEN_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found, reverse=True)


def _read_meta(path: Path) -> tuple[SnapshotMeta, dict[str, tuple[int, str]]]:
    """The snapshot's meta and recorded files, after checking the files exist at those sizes."""
    try:
        record = json.loads((path / META_FILE).read_text("utf-8"))
        version = record.get("format_version")
        if version not in _FACTS_FILES:
            readable = " and ".join(str(v) for v in _FACTS_FILES)
            raise SnapshotCorrupt(
                f"snapshot {path} has format version {version!r}; this version of routebook "
                f"reads versions {readable}"
            )
        files = {
            name: (int(record["files"][name]["bytes"]), str(record["files"][name]["sha256"]))
            for name in (INDEX_FILE, _FACTS_FILES[version])
        }
        created = record["created_at"]
        meta = SnapshotMeta(
            namespace=str(record["namespace"]),
            generation=int(record["generation"]),
            embedding_model_id=str(record["embedding_model_id"]),
            dim=int(record["dim"]),
            high_water_example_id=int(record["high_water_example_id"]),
            high_water_outcome_id=int(record["high_water_outcome_id"]),
            high_water_tombstone_id=int(record.get("high_water_tombstone_id", 0)),
            store_id=str(record.get("store_id", "")),
            kind=str(parse_kind(record["kind"])),
            count=int(record["count"]),
            created_at=datetime.fromisoformat(created) if created else None,
            format_version=int(version),
        )
    except FileNotFoundError:
        raise SnapshotCorrupt(f"snapshot {path} has no {META_FILE}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotCorrupt(f"snapshot {path} has an unreadable {META_FILE}: {exc}") from exc
    for name, (size, _digest) in files.items():
        try:
            actual = (path / name).stat().st_size
        except FileNotFoundError:
            raise SnapshotCorrupt(f"snapshot {path} has no {name}") from None
        if actual != size:
            raise SnapshotCorrupt(f"snapshot {path}: {name} is {actual} bytes, expected {size}")
    return meta, files


def _read_checked(path: Path, size: int, sha256: str) -> bytes:
    data = path.read_bytes() if path.exists() else b""
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise SnapshotCorrupt(f"{path} is damaged: its size or checksum differs from the meta")
    return data


def _check_hash(path: Path, size: int, sha256: str) -> None:
    """Like `_read_checked` for a file too big to hold twice: hashed in chunks, not kept."""
    digest = hashlib.sha256()
    seen = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                seen += len(chunk)
    except FileNotFoundError:
        seen = -1
    if seen != size or digest.hexdigest() != sha256:
        raise SnapshotCorrupt(f"{path} is damaged: its size or checksum differs from the meta")


def _parse_fact_lines(data: bytes) -> tuple[FactsColumns, npt.NDArray[np.int64]]:
    """Format version 1's facts.jsonl as columns and labels."""
    labels: list[int] = []
    facts: list[ExampleFacts] = []
    for line in data.splitlines():
        record = json.loads(line)
        labels.append(int(record["label"]))
        facts.append(
            ExampleFacts(
                example_id=int(record["id"]),
                text=str(record["text"]),
                route=record["route"],
                source=Source(record["source"]),
                best_model=record["best_model"],
                outcomes=tuple(
                    ObservedOutcome(str(m), float(q), int(c)) for m, q, c in record["outcomes"]
                ),
                tenant=record.get("tenant"),
            )
        )
    table = FactsTable()
    table.put(facts)
    if len(table) != len(facts):
        raise ValueError("an example appears twice in the facts")
    return table.packed(), np.asarray(labels, dtype=np.int64)
