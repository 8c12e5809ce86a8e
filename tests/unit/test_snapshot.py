"""Snapshots of namespace indexes: round trips, refusals, crash safety and pruning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from routebook.domain import ExampleFacts, ObservedOutcome, Source
from routebook.index import IndexKind, NamespaceIndex
from routebook.index import snapshot as snap
from routebook.index.snapshot import (
    Expected,
    SnapshotCorrupt,
    SnapshotForeign,
    SnapshotMeta,
    SnapshotMismatch,
    latest_snapshot,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)

Vectors = npt.NDArray[np.float32]
DIM, N = 32, 800
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def unit_vectors(n: int, seed: int) -> Vectors:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, DIM))
    x = centres[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def rich_facts(example_id: int) -> ExampleFacts:
    """Facts with every field set to something distinctive, so a lossy round trip shows."""
    return ExampleFacts(
        example_id=example_id,
        text=f"question {example_id}: ünïcode “quotes”\nand a newline",
        route=None if example_id % 3 == 0 else f"route-{example_id % 5}",
        source=Source.HISTORY if example_id % 2 else Source.REFERENCE,
        best_model=None if example_id % 4 == 0 else "medium",
        outcomes=tuple(
            ObservedOutcome(model, 0.1 + example_id / 1e4 + j / 7, 1 + j)
            for j, model in enumerate(("small", "large")[: example_id % 3])
        ),
        contains_pii=example_id % 2 == 1 and example_id % 7 == 0,
    )


VECTORS = unit_vectors(N + 20, seed=11)


def make_index(kind: str, generation: int = 3) -> NamespaceIndex:
    facts = [rich_facts(i) for i in range(1, N + 1)]
    return NamespaceIndex.build(DIM, kind, facts, VECTORS[:N], generation=generation)


def meta_for(index: NamespaceIndex, namespace: str = "shop", model: str = MODEL) -> SnapshotMeta:
    return SnapshotMeta(
        namespace=namespace,
        generation=index.generation,
        embedding_model_id=model,
        dim=index.dim,
        high_water_example_id=N,
        high_water_outcome_id=77,
        high_water_tombstone_id=5,
        kind=index.kind,
        count=len(index),
    )


def results(index: NamespaceIndex, queries: Vectors) -> list[list[tuple[int, float]]]:
    return [[(n.facts.example_id, n.similarity) for n in index.search(q, 10)] for q in queries]


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_round_trip_keeps_results_facts_generation_and_kind(kind: str, tmp_path: Path) -> None:
    index = make_index(kind)
    assert index.kind == kind
    index.remove([2, 4, 6])  # HNSW tombstones must survive the trip too
    index.add([rich_facts(4)], VECTORS[N : N + 1])  # re-added with a new vector
    path = save_snapshot(index, tmp_path, meta_for(index))
    assert path == snapshot_path(tmp_path, "shop", 3) == tmp_path / "shop" / "gen-00000003"
    assert sorted(p.name for p in path.iterdir()) == ["facts.bin", "index.faiss", "meta.json"]

    loaded, meta = load_snapshot(path, MODEL, DIM)
    assert (loaded.kind, loaded.generation, len(loaded), loaded.dim) == (kind, 3, N - 2, DIM)
    assert loaded.tombstones == index.tombstones
    assert 2 not in loaded and 4 in loaded
    for example_id in range(1, N + 1):
        if example_id in index:
            assert loaded.facts(example_id) == index.facts(example_id)
    assert loaded.facts(5).outcomes == rich_facts(5).outcomes != ()
    assert loaded.facts(7).contains_pii and not loaded.facts(5).contains_pii
    queries = VECTORS[N:]
    assert results(loaded, queries) == results(index, queries)

    assert meta.namespace == "shop" and meta.generation == 3
    assert (meta.embedding_model_id, meta.dim, meta.kind, meta.count) == (MODEL, DIM, kind, N - 2)
    assert (meta.high_water_example_id, meta.high_water_outcome_id) == (N, 77)
    assert meta.high_water_tombstone_id == 5
    assert meta.created_at is not None and meta.created_at.tzinfo is not None
    assert meta.format_version == snap.FORMAT_VERSION
    assert latest_snapshot(tmp_path, "shop") == meta


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_a_loaded_index_keeps_working(kind: str, tmp_path: Path) -> None:
    index = make_index(kind)
    loaded, _ = load_snapshot(save_snapshot(index, tmp_path, meta_for(index)), MODEL, DIM)
    assert loaded.remove([10, 11]) == 2
    loaded.add([rich_facts(10), rich_facts(5000)], VECTORS[N : N + 2])
    assert len(loaded) == N
    assert loaded.search(VECTORS[N + 1], 1)[0].facts.example_id == 5000
    assert 11 not in [n.facts.example_id for n in loaded.search(VECTORS[10], 20)]


def test_index_file_is_plain_faiss(tmp_path: Path) -> None:
    index = make_index("flat")
    path = save_snapshot(index, tmp_path, meta_for(index))
    assert faiss.read_index(str(path / "index.faiss")).ntotal == N
    meta = json.loads((path / "meta.json").read_text())
    assert {"namespace", "generation", "embedding_model_id", "dim", "kind", "count"} <= set(meta)
    assert {"high_water_example_id", "high_water_outcome_id", "created_at"} <= set(meta)
    assert meta["format_version"] == 3 and meta["kind"] == "flat"
    assert (path / "facts.bin").read_bytes().startswith(b"RBFACTS\0")


def test_count_and_kind_in_the_meta_come_from_the_index(tmp_path: Path) -> None:
    index = make_index("ivf")
    stale = meta_for(index)
    index.remove([1, 2])  # changed after the caller counted
    save_snapshot(index, tmp_path, stale)
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.count == N - 2 and meta.kind == "ivf"


def test_meta_must_match_the_index_generation_and_dim(tmp_path: Path) -> None:
    index = make_index("flat", generation=3)
    with pytest.raises(ValueError, match="generation 4; the index has dim 32, generation 3"):
        save_snapshot(index, tmp_path, SnapshotMeta("shop", 4, MODEL, DIM, 0, 0, "flat", N))
    assert latest_snapshot(tmp_path, "shop") is None


def test_empty_index_round_trips(tmp_path: Path) -> None:
    index = NamespaceIndex(DIM, generation=1, kind="hnsw")
    loaded, meta = load_snapshot(save_snapshot(index, tmp_path, meta_for(index)), MODEL, DIM)
    assert len(loaded) == 0 and loaded.kind is IndexKind.HNSW and meta.count == 0
    assert loaded.search(VECTORS[0], 3) == []


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_another_embedding_model_is_refused_naming_both(tmp_path: Path) -> None:
    index = make_index("flat")
    path = save_snapshot(index, tmp_path, meta_for(index, model="old-model-v1"))
    with pytest.raises(SnapshotMismatch) as caught:
        load_snapshot(path, "new-model-v2", DIM)
    assert "old-model-v1" in str(caught.value) and "new-model-v2" in str(caught.value)


def test_another_dimension_is_refused(tmp_path: Path) -> None:
    index = make_index("flat")
    path = save_snapshot(index, tmp_path, meta_for(index))
    with pytest.raises(SnapshotMismatch, match=r"dim 32.*dim 384"):
        load_snapshot(path, MODEL, 384)


def expected_of(meta: SnapshotMeta, **changes: object) -> Expected:
    fields: dict[str, object] = {
        "store_id": meta.store_id,
        "generation": meta.generation,
        "high_water_example_id": meta.high_water_example_id,
        "high_water_outcome_id": meta.high_water_outcome_id,
        "high_water_tombstone_id": meta.high_water_tombstone_id,
        "count": meta.count,
    }
    return Expected(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_snapshot_of_another_store_is_foreign_whatever_its_model(tmp_path: Path) -> None:
    """Checked before the model: another store's snapshot says nothing about ours, and a
    model mismatch would stop a strict start instead of rebuilding from the store."""
    index = make_index("flat")
    meta = dataclasses.replace(meta_for(index, model="their-model"), store_id="their-store")
    path = save_snapshot(index, tmp_path, meta)
    with pytest.raises(SnapshotForeign, match="another store") as caught:
        load_snapshot(path, MODEL, DIM, expected=expected_of(meta, store_id="our-store"))
    assert isinstance(caught.value, SnapshotCorrupt)  # callers rebuild from the store
    loaded, read = load_snapshot(path, "their-model", DIM, expected=expected_of(meta))
    assert read.store_id == "their-store" and len(loaded) == len(index)


@pytest.mark.parametrize(
    "change",
    [
        {"generation": 4},
        {"high_water_example_id": N + 1},
        {"high_water_outcome_id": 78},
        {"high_water_tombstone_id": 6},
        {"count": N - 1},
    ],
)
def test_a_snapshot_other_than_the_published_one_is_foreign(
    change: dict[str, int], tmp_path: Path
) -> None:
    """Also without store ids (snapshots written before them): the folder must hold what the
    store's row says it published."""
    index = make_index("flat")
    meta = meta_for(index)
    assert meta.store_id == ""
    path = save_snapshot(index, tmp_path, meta)
    with pytest.raises(SnapshotForeign, match="not the one the store published"):
        load_snapshot(path, MODEL, DIM, expected=expected_of(meta, store_id="ours", **change))
    loaded, _ = load_snapshot(path, MODEL, DIM, expected=expected_of(meta, store_id="ours"))
    assert len(loaded) == N


def test_missing_folder_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_snapshot(tmp_path / "shop" / "gen-00000001", MODEL, DIM)


@pytest.fixture
def two_generations(tmp_path: Path) -> tuple[Path, Path]:
    older = make_index("flat", generation=1)
    newer = make_index("flat", generation=2)
    return (
        save_snapshot(older, tmp_path, meta_for(older)),
        save_snapshot(newer, tmp_path, meta_for(newer)),
    )


def test_latest_is_the_newest_generation(
    tmp_path: Path, two_generations: tuple[Path, Path]
) -> None:
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 2
    assert latest_snapshot(tmp_path, "other") is None


def test_missing_meta_is_neither_latest_nor_loadable(
    tmp_path: Path, two_generations: tuple[Path, Path]
) -> None:
    _, newer = two_generations
    (newer / "meta.json").unlink()
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 1
    with pytest.raises(SnapshotCorrupt, match=r"no meta\.json"):
        load_snapshot(newer, MODEL, DIM)


def test_truncated_index_is_neither_latest_nor_loadable(
    tmp_path: Path, two_generations: tuple[Path, Path]
) -> None:
    _, newer = two_generations
    index_file = newer / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:1000])
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 1
    with pytest.raises(SnapshotCorrupt, match=r"index\.faiss is 1000 bytes"):
        load_snapshot(newer, MODEL, DIM)


def test_damaged_bytes_of_the_same_size_fail_the_checksum(
    tmp_path: Path, two_generations: tuple[Path, Path]
) -> None:
    _, newer = two_generations
    facts_file = newer / "facts.bin"
    data = bytearray(facts_file.read_bytes())
    data[10] ^= 0xFF
    facts_file.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        load_snapshot(newer, MODEL, DIM)


def test_garbled_meta_is_corrupt(tmp_path: Path, two_generations: tuple[Path, Path]) -> None:
    _, newer = two_generations
    (newer / "meta.json").write_text('{"format_version": 1, "namespace": ')
    with pytest.raises(SnapshotCorrupt, match=r"unreadable meta\.json"):
        load_snapshot(newer, MODEL, DIM)
    (newer / "meta.json").write_text('{"format_version": 99}')
    with pytest.raises(SnapshotCorrupt, match="format version 99"):
        load_snapshot(newer, MODEL, DIM)
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 1


def test_a_namespace_that_cannot_be_a_folder_name_is_refused(tmp_path: Path) -> None:
    for bad in ("", ".hidden", "a/b", "../up"):
        with pytest.raises(ValueError, match="cannot name a snapshot folder"):
            latest_snapshot(tmp_path, bad)


def test_each_store_has_a_folder_of_its_own(tmp_path: Path) -> None:
    assert snap.store_folder(tmp_path, "4bac6114") == tmp_path / "store-4bac6114"
    for bad in ("", "..", "a/b", "../up", "x" * 65):
        with pytest.raises(ValueError, match="cannot name a snapshot folder"):
            snap.store_folder(tmp_path, bad)


def rewrite_with_meta(path: Path, name: str, data: bytes) -> None:
    """Replace a file and record its new size and hash, as a forger (or a bug) would."""
    (path / name).write_bytes(data)
    meta = json.loads((path / "meta.json").read_text())
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "meta.json").write_text(json.dumps(meta))


def test_a_facts_file_that_passes_the_checksum_but_does_not_fit_is_corrupt(
    tmp_path: Path,
) -> None:
    index = make_index("flat")
    path = save_snapshot(index, tmp_path, meta_for(index))
    data = (path / "facts.bin").read_bytes()
    rewrite_with_meta(path, "facts.bin", data[:-64])
    with pytest.raises(SnapshotCorrupt, match="cannot be read: facts column"):
        load_snapshot(path, MODEL, DIM)
    rewrite_with_meta(path, "facts.bin", b"RBFACTS\0" + bytes(100))
    with pytest.raises(SnapshotCorrupt, match="cannot be read"):
        load_snapshot(path, MODEL, DIM)


def test_facts_labelled_for_another_index_are_corrupt(tmp_path: Path) -> None:
    index = make_index("ivf")
    other = NamespaceIndex.build(
        DIM, "ivf", [rich_facts(i) for i in range(1, N)], VECTORS[: N - 1], generation=3
    )
    path = save_snapshot(index, tmp_path, meta_for(index))
    (path / "index.faiss").unlink()
    save_snapshot(other, tmp_path / "other", meta_for(other))
    data = (snapshot_path(tmp_path / "other", "shop", 3) / "index.faiss").read_bytes()
    rewrite_with_meta(path, "index.faiss", data)
    with pytest.raises(SnapshotCorrupt, match=f"holds {N - 1} vectors for {N} facts"):
        load_snapshot(path, MODEL, DIM)


def write_version_1(index: NamespaceIndex, folder: Path) -> Path:
    """The snapshot an older routebook wrote: facts as JSON lines, format version 1."""
    path = snapshot_path(folder, "shop", index.generation)
    path.mkdir(parents=True)
    state = index.export_state()
    lines = []
    for label, example_id in zip(
        state.labels.tolist(), state.facts.columns["example_id"], strict=True
    ):
        f = index.facts(int(example_id))
        record = {
            "label": label,
            "id": f.example_id,
            "text": f.text,
            "route": f.route,
            "source": f.source.value,
            "best_model": f.best_model,
            "outcomes": [[o.model, o.mean_quality, o.count] for o in f.outcomes],
            "tenant": f.tenant,
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    blobs = {
        "index.faiss": state.faiss_bytes.tobytes(),
        "facts.jsonl": "".join(lines).encode("utf-8"),
    }
    for name, data in blobs.items():
        (path / name).write_bytes(data)
    meta = {
        "namespace": "shop",
        "generation": index.generation,
        "embedding_model_id": MODEL,
        "dim": DIM,
        "high_water_example_id": N,
        "high_water_outcome_id": 77,
        "high_water_tombstone_id": 5,
        "kind": str(index.kind),
        "count": len(index),
        "created_at": "2026-11-20T10:00:00+00:00",
        "format_version": 1,
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in blobs.items()
        },
    }
    (path / "meta.json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-flat"])
def test_a_version_1_snapshot_still_loads(kind: str, tmp_path: Path) -> None:
    if kind == "ivf-flat":  # IVF as version 1 stored it: full float32 vectors
        ivf = faiss.index_factory(DIM, "IVF8,Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.train(VECTORS[:N])
        ivf.add_with_ids(VECTORS[:N], np.arange(1, N + 1, dtype=np.int64))
        index = NamespaceIndex.from_parts(
            ivf,
            dim=DIM,
            kind=IndexKind.IVF,
            generation=3,
            facts=make_index("flat").export_state().facts,
            labels=np.arange(1, N + 1, dtype=np.int64),
        )
    else:
        index = make_index(kind)
    index.remove([2, 4])
    path = write_version_1(index, tmp_path)
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.format_version == 1 and meta.count == N - 2
    loaded, _ = load_snapshot(path, MODEL, DIM)
    assert (loaded.kind, len(loaded), loaded.tombstones) == (index.kind, N - 2, index.tombstones)
    # Version 1 kept no PII marks: they are off (the follower takes them from the store).
    assert all(
        loaded.facts(i) == dataclasses.replace(index.facts(i), contains_pii=False)
        for i in range(1, N + 1)
        if i in index
    )
    assert results(loaded, VECTORS[N:]) == results(index, VECTORS[N:])
    loaded.generation = 4  # saving it again writes the current format
    again = save_snapshot(loaded, tmp_path, meta_for(loaded))
    assert (again / "facts.bin").exists() and not (again / "facts.jsonl").exists()


def test_a_version_2_snapshot_loads_with_every_pii_mark_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Format 2 wrote facts.bin without the contains_pii column (an older routebook, or one
    still running in a rolling upgrade): it loads, every mark off, and says its format, so the
    follower knows to take the marks from the store."""
    from routebook.index import facts_file

    index = make_index("flat")
    assert index.facts(7).contains_pii
    older = {k: v for k, v in facts_file._DTYPES.items() if k != "contains_pii"}
    monkeypatch.setattr(facts_file, "_DTYPES", older)  # the writer as format 2 had it
    path = save_snapshot(index, tmp_path, meta_for(index))
    monkeypatch.undo()
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 2
    (path / "meta.json").write_text(json.dumps(meta))
    assert b"contains_pii" not in (path / "facts.bin").read_bytes()[:4096]

    loaded, loaded_meta = load_snapshot(path, MODEL, DIM)
    assert loaded_meta.format_version == 2 < snap.MARKS_PII_FROM
    assert len(loaded) == N and not any(f.contains_pii for f in loaded.all_facts())
    assert all(
        loaded.facts(i) == dataclasses.replace(index.facts(i), contains_pii=False)
        for i in range(1, N + 1)
    )
    assert results(loaded, VECTORS[N:]) == results(index, VECTORS[N:])


def test_a_version_1_snapshot_with_a_damaged_jsonl_is_corrupt(tmp_path: Path) -> None:
    path = write_version_1(make_index("flat"), tmp_path)
    data = (path / "facts.jsonl").read_bytes()
    rewrite_with_meta(path, "facts.jsonl", data.replace(b'"id": 7,', b'"id": 8,', 1))
    with pytest.raises(SnapshotCorrupt, match="appears twice"):
        load_snapshot(path, MODEL, DIM)


# --------------------------------------------------------------------------------------------
# Crash safety
# --------------------------------------------------------------------------------------------


def test_a_save_killed_half_way_leaves_no_complete_looking_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_index("flat", generation=1)
    save_snapshot(first, tmp_path, meta_for(first))
    second = make_index("flat", generation=2)
    real_write = snap._write_file

    def die_on_meta(path: Path, chunks: object) -> tuple[int, str]:
        if path.name == "meta.json":
            raise KeyboardInterrupt  # the process "dies" with the data files written
        return real_write(path, chunks)  # type: ignore[arg-type]

    monkeypatch.setattr(snap, "_write_file", die_on_meta)
    with pytest.raises(KeyboardInterrupt):
        save_snapshot(second, tmp_path, meta_for(second))
    monkeypatch.undo()

    leftovers = [p for p in (tmp_path / "shop").iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and (leftovers[0] / "index.faiss").exists()
    assert not snapshot_path(tmp_path, "shop", 2).exists()
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 1

    save_snapshot(second, tmp_path, meta_for(second))  # the next save cleans up
    assert not leftovers[0].exists()
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 2


def test_a_leftover_temp_folder_that_looks_complete_is_ignored(tmp_path: Path) -> None:
    index = make_index("flat", generation=1)
    done = save_snapshot(index, tmp_path, meta_for(index))
    fake = tmp_path / "shop" / ".tmp-gen-00000009-deadbeef"
    fake.mkdir()
    for f in done.iterdir():
        (fake / f.name).write_bytes(f.read_bytes())
    meta = latest_snapshot(tmp_path, "shop")
    assert meta is not None and meta.generation == 1
    index.generation = 2
    save_snapshot(index, tmp_path, meta_for(index))
    assert not fake.exists()


def test_saving_a_generation_again_replaces_it(tmp_path: Path) -> None:
    index = make_index("flat", generation=5)
    save_snapshot(index, tmp_path, meta_for(index))
    index.remove([1])
    path = save_snapshot(index, tmp_path, meta_for(index))
    loaded, meta = load_snapshot(path, MODEL, DIM)
    assert len(loaded) == N - 1 and meta.count == N - 1
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == [".lock", "gen-00000005"]


# --------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------


def generations_on_disk(folder: Path, namespace: str = "shop") -> list[str]:
    return sorted(p.name for p in (folder / namespace).iterdir() if p.name.startswith("gen-"))


def test_a_save_prunes_nothing_unless_asked(tmp_path: Path) -> None:
    """Folders are not what servers load: a reindex prunes by what its store published,
    after publishing (service/reindex.py), so a save alone deletes no generation."""
    index = make_index("flat", generation=1)
    for generation in range(1, 4):
        index.generation = generation
        save_snapshot(index, tmp_path, meta_for(index))
    assert generations_on_disk(tmp_path) == ["gen-00000001", "gen-00000002", "gen-00000003"]


def test_prune_before_deletes_older_generations_damaged_ones_too(tmp_path: Path) -> None:
    """A damaged snapshot still holds example text; newer generations (the published ones
    and a save not yet published) are never touched."""
    index = make_index("flat", generation=1)
    for generation in range(1, 6):
        index.generation = generation
        save_snapshot(index, tmp_path, meta_for(index))
    (snapshot_path(tmp_path, "shop", 1) / "meta.json").unlink()
    leftover = tmp_path / "shop" / ".old-gen-00000002-deadbeef"
    leftover.mkdir()
    deleted = snap.prune_before(tmp_path, "shop", 3)
    assert sorted(p.name for p in deleted) == ["gen-00000001", "gen-00000002"]
    assert generations_on_disk(tmp_path) == ["gen-00000003", "gen-00000004", "gen-00000005"]
    assert not leftover.exists()
    assert sorted(p.name for p in (tmp_path / "shop").iterdir() if p.name != ".lock") == [
        "gen-00000003",
        "gen-00000004",
        "gen-00000005",
    ]
    assert snap.prune_before(tmp_path, "nothing-here", 3) == []


def test_pruning_keeps_n_per_namespace(tmp_path: Path) -> None:
    index = make_index("flat", generation=1)
    for generation in range(1, 6):
        index.generation = generation
        save_snapshot(index, tmp_path, meta_for(index, namespace="shop"), keep=3)
        save_snapshot(index, tmp_path, meta_for(index, namespace="maths"), keep=1)
    assert generations_on_disk(tmp_path, "shop") == ["gen-00000003", "gen-00000004", "gen-00000005"]
    assert generations_on_disk(tmp_path, "maths") == ["gen-00000005"]
    snap.prune_snapshots(tmp_path, "shop", keep=1)
    assert generations_on_disk(tmp_path, "shop") == ["gen-00000005"]


def test_damaged_snapshots_do_not_count_towards_the_kept(tmp_path: Path) -> None:
    index = make_index("flat", generation=1)
    for generation in (1, 2):
        index.generation = generation
        save_snapshot(index, tmp_path, meta_for(index))
    (snapshot_path(tmp_path, "shop", 2) / "meta.json").unlink()
    index.generation = 3
    save_snapshot(index, tmp_path, meta_for(index), keep=2)
    # Generation 1 is kept: the damaged 2 is no fallback. The damaged one is older than a
    # good one and goes.
    assert generations_on_disk(tmp_path) == ["gen-00000001", "gen-00000003"]


def test_keep_must_be_positive(tmp_path: Path) -> None:
    index = make_index("flat")
    with pytest.raises(ValueError, match="keep must be at least 1"):
        save_snapshot(index, tmp_path, meta_for(index), keep=0)
