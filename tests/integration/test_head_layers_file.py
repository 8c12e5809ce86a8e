"""The layer pools a head trains on, kept on disk (`service/head_layers_file.py`): a new
TrainingLayers on the same folder (a restarted server) embeds nothing it embedded before; a
file it cannot use (damaged, another model's) is ignored with one warning and the texts are
embedded again; the file holds the current sample only; and files no server uses any more
(another model's, a deleted namespace's) are removed once unused for a week. The real model,
real files, and for the last a real store."""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import delete

from routebook.embed import Embedder
from routebook.embed.protocol import background_layers, layered, layers_dim_of
from routebook.index.snapshot import store_folder
from routebook.service import head_layers
from routebook.service.examples import ExampleInput
from routebook.service.head_layers import BATCH, TrainingLayers, TrainingStopped
from routebook.service.head_layers_file import (
    STALE_POOLS_SECONDS,
    STALE_TEMP_SECONDS,
    KeptPools,
    PoolsFiles,
)
from routebook.store.identity import store_id
from routebook.store.tables import NamespaceRow
from routebook.wiring import App
from tests.conftest import wait_until

TEXTS = [
    "where is my parcel?",
    "I want my money back for this broken kettle",
    "prove that there are infinitely many primes",
    "where is my parcel?",  # a copy: embedded once, given twice
    "Ünïcödé, 文字 and an emoji 🎉",
]
NAMESPACE = "shop:eu-1.a"  # the characters a namespace name may have beyond letters and digits


@pytest.fixture
def training(layers_embedder: Embedder, tmp_path: Path) -> Callable[..., TrainingLayers]:
    """A new TrainingLayers over the real model and the same folder each time: a restart."""

    def _make(model_id: str | None = None) -> TrainingLayers:
        files = PoolsFiles(tmp_path / "store-1", model_id or layers_embedder.model_id)
        return TrainingLayers(
            background_layers(layers_embedder), layers_dim_of(layers_embedder), files
        )

    return _make


def pools_file(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "store-1" / NAMESPACE).glob("layers-*.npz")
    return found


def test_a_restart_embeds_nothing_for_an_unchanged_sample(
    training: Callable[..., TrainingLayers], layers_embedder: Embedder, tmp_path: Path
) -> None:
    first = training()
    rows = first.of(NAMESPACE, TEXTS)
    assert first.embedded == 4 and rows.shape == (5, layers_dim_of(layers_embedder))
    _, expected = layered(layers_embedder).embed_with_layers(TEXTS)
    assert np.abs(rows.astype(np.float32) - expected).max() < 2e-3  # float16's rounding
    assert pools_file(tmp_path).name.startswith("layers-")

    restarted = training()
    again = restarted.of(NAMESPACE, TEXTS)
    assert restarted.embedded == 0 and np.array_equal(again, rows)
    assert restarted.of(NAMESPACE, [*TEXTS, "a new one"]).shape == (6, rows.shape[1])
    assert restarted.embedded == 1  # only the new text


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(
            lambda data: data[:3000] + bytes([data[3000] ^ 0xFF]) + data[3001:], id="bit-flip"
        ),
        pytest.param(lambda data: b"not a zip file at all" * 100, id="garbage"),
    ],
)
def test_a_damaged_file_is_ignored_once_and_embedded_again(
    training: Callable[..., TrainingLayers],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
) -> None:
    rows = training().of(NAMESPACE, TEXTS)
    path = pools_file(tmp_path)
    path.write_bytes(damage(path.read_bytes()))

    restarted = training()
    with caplog.at_level(logging.INFO, logger="routebook.service.head_layers_file"):
        again = restarted.of(NAMESPACE, TEXTS)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignoring the layer pools kept at" in warnings[0].message
    assert restarted.embedded == 4 and np.array_equal(again, rows)
    assert training().of(NAMESPACE, TEXTS).shape == rows.shape  # written again, whole
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None


def test_another_models_pools_are_never_read(
    training: Callable[..., TrainingLayers], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    training().of(NAMESPACE, TEXTS)
    float32_file = pools_file(tmp_path)

    int8 = training("all-MiniLM-L6-v2+int8.2:384")  # another model id: a file of its own
    int8.of(NAMESPACE, TEXTS)
    assert int8.embedded == 4
    files = sorted((tmp_path / "store-1" / NAMESPACE).glob("layers-*.npz"))
    assert len(files) == 2 and float32_file in files

    # Another model's file under this model's name (copied by hand): its model id says so.
    other = next(f for f in files if f != float32_file)
    other.replace(float32_file)
    restarted = training()
    with caplog.at_level(logging.WARNING, logger="routebook.service.head_layers_file"):
        restarted.of(NAMESPACE, TEXTS)
    assert restarted.embedded == 4
    assert len(caplog.records) == 1 and "made with model" in caplog.records[0].message


def test_a_file_of_the_wrong_width_is_ignored(
    training: Callable[..., TrainingLayers],
    layers_embedder: Embedder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    training().of(NAMESPACE, TEXTS)
    files = PoolsFiles(tmp_path / "store-1", layers_embedder.model_id)
    narrow = files.read(NAMESPACE, layers_dim_of(layers_embedder))
    assert narrow is not None
    files.write(NAMESPACE, KeptPools(narrow.digests, narrow.rows[:, :384].copy()))
    restarted = training()
    with caplog.at_level(logging.WARNING, logger="routebook.service.head_layers_file"):
        assert restarted.of(NAMESPACE, TEXTS).shape[1] == layers_dim_of(layers_embedder)
    assert restarted.embedded == 4 and "not float16 (4, 2688)" in caplog.records[0].message


def test_texts_that_left_the_sample_leave_the_file_too(
    training: Callable[..., TrainingLayers], layers_embedder: Embedder, tmp_path: Path
) -> None:
    kept = training()
    kept.of(NAMESPACE, TEXTS)
    kept.of(NAMESPACE, TEXTS[1:3])
    with np.load(pools_file(tmp_path), allow_pickle=False) as npz:
        assert len(npz["digests"]) == len(npz["pools"]) == 2

    restarted = training()
    restarted.of(NAMESPACE, TEXTS[:3])
    assert restarted.embedded == 1  # the parcel left the sample: embedded again
    restarted.of(NAMESPACE, [])  # an emptied index
    with np.load(pools_file(tmp_path), allow_pickle=False) as npz:
        assert npz["pools"].shape == (0, layers_dim_of(layers_embedder))


def _many(count: int) -> list[str]:
    return [f"question number {n}: where is parcel {n}?" for n in range(count)]


def test_a_stop_ends_an_embedding_and_keeps_its_progress(
    layers_embedder: Embedder, tmp_path: Path
) -> None:
    """A server stopped during a first embedding kept none of it (the file was written at the
    end only), and its pauses could not be interrupted."""
    files = PoolsFiles(tmp_path / "store-1", layers_embedder.model_id)
    model = background_layers(layers_embedder)
    layers: TrainingLayers

    def stop_after_two_chunks(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if layers.embedded >= BATCH:
            layers.stop()  # as HeadBook.stop does, during the second chunk
        return model(texts)

    layers = TrainingLayers(stop_after_two_chunks, layers_dim_of(layers_embedder), files)
    texts = _many(3 * BATCH)
    with pytest.raises(TrainingStopped):
        layers.of(NAMESPACE, texts)
    assert layers.embedded == 2 * BATCH
    restarted = TrainingLayers(model, layers_dim_of(layers_embedder), files)
    restarted.pause = 0.0
    assert restarted.of(NAMESPACE, texts).shape[0] == 3 * BATCH
    assert restarted.embedded == BATCH  # the two chunks before the stop were kept


def test_a_long_embedding_saves_its_progress_as_it_goes(
    layers_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed mid-embedding (here: the model failing on the third chunk) leaves
    the progress saved before it."""
    monkeypatch.setattr(head_layers, "CHECKPOINT_SECONDS", 0.0)  # save after every chunk
    files = PoolsFiles(tmp_path / "store-1", layers_embedder.model_id)
    model = background_layers(layers_embedder)
    calls = 0

    def dies_on_the_third_chunk(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("killed")
        return model(texts)

    layers = TrainingLayers(dies_on_the_third_chunk, layers_dim_of(layers_embedder), files)
    layers.pause = 0.0
    texts = _many(3 * BATCH)
    with pytest.raises(RuntimeError, match="killed"):
        layers.of(NAMESPACE, texts)
    restarted = TrainingLayers(model, layers_dim_of(layers_embedder), files)
    restarted.pause = 0.0
    restarted.of(NAMESPACE, texts)
    assert restarted.embedded == BATCH


def test_temp_files_left_by_a_killed_write_are_removed(
    training: Callable[..., TrainingLayers], tmp_path: Path
) -> None:
    first = training()
    first.of(NAMESPACE, TEXTS[:2])
    path = pools_file(tmp_path)
    stale = path.with_name(f".{path.name}.dead.tmp")
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 2 * STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    fresh = path.with_name(f".{path.name}.writing.tmp")  # another replica's, under way
    fresh.write_bytes(b"y")
    training().of(NAMESPACE, TEXTS)  # a changed sample: the file is written again
    assert not stale.exists() and fresh.exists()


def _age(path: Path, seconds: float) -> None:
    """Make `path` look last modified `seconds` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_another_models_file_is_removed_once_no_server_used_it_for_a_week(
    training: Callable[..., TrainingLayers], layers_embedder: Embedder, tmp_path: Path
) -> None:
    """A namespace's folder kept a file for every model it ever trained with (each as big as
    its sample). A recent one stays: a replica of a rolling upgrade may still be using it."""
    path = {
        model: PoolsFiles(tmp_path / "store-1", model).path(NAMESPACE)
        for model in ("old-model", "recent-model", layers_embedder.model_id)
    }
    training("old-model").of(NAMESPACE, TEXTS[:2])
    training("recent-model").of(NAMESPACE, TEXTS[:2])
    _age(path["old-model"], STALE_POOLS_SECONDS + 3600)
    _age(path["recent-model"], STALE_POOLS_SECONDS - 3600)
    dead = path["old-model"].with_name(f".{path['old-model'].name}.dead.tmp")
    dead.write_bytes(b"x" * 1000)
    _age(dead, 2 * STALE_TEMP_SECONDS)

    training().of(NAMESPACE, TEXTS[:2])
    assert not path["old-model"].exists() and not dead.exists()
    assert path["recent-model"].exists() and path[layers_embedder.model_id].exists()

    # A file in use is touched at each training, even one that changes nothing in it: its
    # server is still there, so another model's server leaves it.
    _age(path[layers_embedder.model_id], STALE_POOLS_SECONDS + 3600)
    restarted = training()
    restarted.of(NAMESPACE, TEXTS[:2])
    assert restarted.embedded == 0  # read, not written again
    training("recent-model").of(NAMESPACE, TEXTS[:2])
    assert path[layers_embedder.model_id].exists()


def test_a_deleted_namespaces_pools_are_removed_at_the_next_start(
    sqlite_url: str, make_app: Callable[..., App], layers_embedder: Embedder, tmp_path: Path
) -> None:
    """routebook deletes no namespace; one deleted in the store by hand left its pools file
    (270 MB at the largest sample) in its snapshot folder for good."""
    layers = {"head_check_seconds": 3600, "head_features": "layers", "embedder": layers_embedder}
    app = make_app(sqlite_url, **layers)
    wait_until(lambda: app.heads.trainings >= 1, 60, "the first training")
    app.namespaces.create("gone", "", app.namespaces.get("default").catalog)
    app.examples.upsert("gone", [ExampleInput(text, None, "small") for text in TEXTS])
    app.heads.refresh("gone", force=True)
    folder = store_folder(tmp_path / "snapshots", store_id(app.store))
    files = PoolsFiles(folder, layers_embedder.model_id)
    files.write(
        "recently-gone", KeptPools([], np.zeros((0, layers_dim_of(layers_embedder)), np.float16))
    )
    with app.store.write() as session:
        session.execute(delete(NamespaceRow).where(NamespaceRow.name == "gone"))
    app.close()
    for namespace in ("gone", "default"):
        _age(files.path(namespace), STALE_POOLS_SECONDS + 3600)

    restarted = make_app(sqlite_url, **layers)
    assert not files.path("gone").exists()
    assert files.path("recently-gone").exists()  # another replica's new namespace, maybe
    wait_until(lambda: restarted.heads.trainings >= 1, 60, "the first training")
    kept = restarted.heads.layers
    assert kept is not None and kept.kept("default") > 0 and kept.embedded == 0
