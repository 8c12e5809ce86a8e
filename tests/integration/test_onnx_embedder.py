"""The onnx backend gives the torch backend's vectors, exports its graph once, and refuses
models it cannot run instead of embedding them wrongly."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from routebook.embed import Embedder
from routebook.embed.batcher import MicroBatcher
from routebook.embed.onnx import (
    OnnxEmbedder,
    default_model_cache,
    exported_graph,
    open_session,
    quantized_graph,
)
from routebook.embed.sentence import SentenceTransformerEmbedder, bundled_model_path
from routebook.errors import ConfigError
from routebook.wiring import App, build
from tests.conftest import make_settings, wait_until

TEXTS = [
    "where is my parcel?",
    "  leading and trailing spaces  ",
    "Ünïcödé, 文字 and an emoji 🎉",
    "word " * 400,  # past the 256-token limit: truncated the same way
    "",
    "\ttabs\nand newlines ",
    "Explain how a compiler turns source code into machine code, step by step.",
]


def test_onnx_and_torch_give_the_same_vectors(
    embedder: Embedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    assert isinstance(embedder, OnnxEmbedder)  # the server's default backend
    assert embedder.model_id == torch_embedder.model_id
    onnx_vectors = embedder.embed(TEXTS)
    torch_vectors = torch_embedder.embed(TEXTS)
    assert onnx_vectors.shape == torch_vectors.shape == (len(TEXTS), 384)
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-5
    assert np.allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_the_graph_is_exported_once_per_cache(tmp_path: Path, embedder: Embedder) -> None:
    cache = tmp_path / "onnx"
    OnnxEmbedder(cache_dir=cache)
    graphs = list(cache.glob("*.onnx"))
    assert len(graphs) == 1 and not list(cache.glob(".*"))  # no temporary left behind
    exported_at = graphs[0].stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=cache)
    assert graphs[0].stat().st_mtime_ns == exported_at
    assert np.abs(again.embed(TEXTS[:2]) - embedder.embed(TEXTS[:2])).max() < 1e-6


def _model_copy(tmp_path: Path) -> Path:
    source = bundled_model_path()
    copy = tmp_path / "model-copy"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    (copy / "model.safetensors").symlink_to(source / "model.safetensors")
    return copy


def test_a_model_that_does_not_pool_by_mean_is_refused(tmp_path: Path) -> None:
    copy = _model_copy(tmp_path)
    pooling = copy / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"mean pooling only.*embed_backend"):
        OnnxEmbedder(copy, cache_dir=tmp_path / "cache")


def test_a_model_is_known_by_its_contents_and_always_gives_unit_vectors(
    tmp_path: Path, embedder: Embedder
) -> None:
    """The model id follows the files that make the vectors, not the folder's name: a byte-
    for-byte copy is the bundled model, and one whose pipeline differs (here: no Normalize
    step) is another model whose vectors never mix with the bundled one's. Either way the
    vectors are unit length, as the torch backend makes them."""
    source = bundled_model_path()
    copy = tmp_path / "elsewhere" / "model"  # the same folder name keeps the cached graph
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    (copy / "model.safetensors").symlink_to(source / "model.safetensors")
    assert OnnxEmbedder(copy).model_id == embedder.model_id == "all-MiniLM-L6-v2:384"

    modules = json.loads((copy / "modules.json").read_text())
    (copy / "modules.json").write_text(
        json.dumps([m for m in modules if "Normalize" not in m["type"]])
    )
    renamed = tmp_path / "renamed" / "model"
    shutil.copytree(copy, renamed, symlinks=True)
    unnormalized = OnnxEmbedder(renamed)
    assert unnormalized.model_id.startswith("model@") and unnormalized.model_id.endswith(":384")
    vectors = unnormalized.embed(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors - embedder.embed(TEXTS)).max() < 1e-5


def test_a_folder_without_a_fast_tokenizer_is_refused(tmp_path: Path) -> None:
    copy = _model_copy(tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        OnnxEmbedder(copy, cache_dir=tmp_path / "cache")


def test_overlapping_calls_use_one_thread_each_and_give_the_same_vectors(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(embedder, OnnxEmbedder)
    wide, narrow = embedder._session, embedder._narrow
    assert narrow.get_session_options().intra_op_num_threads == 1
    assert wide.get_session_options().intra_op_num_threads == 0  # 0: one thread per core
    alone = embedder.embed(TEXTS)
    # Which session ran each model call (the real run, watched on its way through).
    used: list[str] = []
    real_run = embedder._run

    def watched(session: object, texts: list[str]) -> np.ndarray:
        used.append("narrow" if session is narrow else "wide")
        return real_run(session, texts)

    monkeypatch.setattr(embedder, "_run", watched)
    embedder.embed(TEXTS[:1])
    assert used == ["wide"]  # a call alone gets every core
    used.clear()

    def held_until_overlapped(session: object, texts: list[str]) -> np.ndarray:
        # The first call of the round waits until a second is in flight: overlap is certain,
        # whatever the scheduler does.
        if not used:
            wait_until(lambda: embedder._in_flight >= 2, 30, "a second call in flight")
        return watched(session, texts)

    monkeypatch.setattr(embedder, "_run", held_until_overlapped)
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(4)

    def one(position: int) -> None:
        start.wait()
        for _ in range(5):  # overlapping calls: the narrow session serves all but one
            results[position] = embedder.embed(TEXTS)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for vectors in results.values():
        assert np.abs(vectors - alone).max() < 1e-5
    assert "narrow" in used  # calls that overlapped ran on one thread each


def test_two_batch_workers_hand_every_caller_its_own_rows(embedder: Embedder) -> None:
    batcher = MicroBatcher(embedder, max_batch=4, max_wait_ms=5, workers=2)
    plain = embedder.embed(TEXTS)
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(TEXTS))

    def one(position: int) -> None:
        start.wait()
        results[position] = batcher.embed([TEXTS[position]])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(TEXTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(len(TEXTS)))
    for position, vector in results.items():
        assert np.abs(vector - plain[position]).max() < 1e-5


@pytest.fixture(scope="module")
def int8_embedder() -> OnnxEmbedder:
    return OnnxEmbedder(precision="int8")


def test_int8_vectors_are_close_to_float32_under_an_id_of_their_own(
    embedder: Embedder, int8_embedder: OnnxEmbedder
) -> None:
    assert int8_embedder.model_id == "all-MiniLM-L6-v2+int8.2:384"
    assert int8_embedder.model_id != embedder.model_id
    full = embedder.embed(TEXTS)
    quantized = int8_embedder.embed(TEXTS)
    assert quantized.shape == full.shape
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(full * quantized, axis=1)
    assert cosines.min() > 0.95, cosines
    assert not np.allclose(full, quantized, atol=1e-4)  # really another graph


def test_an_int8_vector_does_not_depend_on_its_batch(int8_embedder: OnnxEmbedder) -> None:
    similar = ["where is my order?", "track my package please", "has my order shipped yet"]
    alone = int8_embedder.embed(similar[:1])
    batched = int8_embedder.embed(similar)
    assert np.abs(alone[0] - batched[0]).max() < 1e-6


def test_int8_keeps_the_nearest_neighbour(embedder: Embedder, int8_embedder: OnnxEmbedder) -> None:
    corpus = [
        "where is my parcel?",
        "I want my money back for this order",
        "how do I reset my password",
        "write a poem about the sea",
        "what is the capital of France",
    ]
    queries = [
        "my package has not arrived",
        "refund please",
        "forgot my login",
        "a sonnet about waves",
        "Paris is the capital of which country?",
    ]
    for model in (embedder, int8_embedder):
        nearest = np.argmax(model.embed(queries) @ model.embed(corpus).T, axis=1)
        assert nearest.tolist() == [0, 1, 2, 3, 4]


def test_the_int8_graph_is_quantized_once(
    tmp_path: Path, int8_embedder: OnnxEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    from routebook.embed.onnx import default_model_cache, exported_graph

    cache = tmp_path / "onnx"
    cache.mkdir()
    graph = exported_graph(bundled_model_path(), default_model_cache(), ids_only=True)
    shutil.copy(graph, cache / graph.name)  # skip the export: only quantization is tested here
    with caplog.at_level(logging.INFO):
        OnnxEmbedder(cache_dir=cache, precision="int8")
        # The quantizer's line-per-tensor log stays out of the server's log, and only it.
        assert [r.getMessage() for r in caplog.records if r.name == "root"] == []
        logging.getLogger("routebook.test").info("logging works again after quantizing")
    assert caplog.records[-1].getMessage() == "logging works again after quantizing"
    quantized = list(cache.glob("*-int8.onnx"))
    assert len(quantized) == 1 and not list(cache.glob(".*"))
    made_at = quantized[0].stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=cache, precision="int8")
    assert quantized[0].stat().st_mtime_ns == made_at
    assert np.abs(again.embed(TEXTS[:2]) - int8_embedder.embed(TEXTS[:2])).max() < 1e-6


def test_the_ids_only_graph_gives_the_full_graphs_vectors(
    embedder: Embedder, int8_embedder: OnnxEmbedder
) -> None:
    """int8 runs a graph without attention mask and token types (one text per run, so the mask
    is all ones): exported in float32 it must give the full graph's vectors."""
    import onnxruntime as ort  # type: ignore[import-untyped]
    from tokenizers import Tokenizer

    from routebook.embed.onnx import default_model_cache, exported_graph

    graph = exported_graph(bundled_model_path(), default_model_cache(), ids_only=True)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids"]
    tokenizer = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.no_padding()  # the file pads to 128 tokens
    for text, expected in zip(TEXTS, embedder.embed(TEXTS), strict=True):
        ids = np.array([tokenizer.encode(text.strip()).ids], dtype=np.int64)
        (hidden,) = session.run(None, {"input_ids": ids})
        vector = hidden[0].mean(axis=0)
        assert np.abs(vector / np.linalg.norm(vector) - expected).max() < 1e-5


def test_the_slow_skip_layer_norm_fusion_is_left_out(
    tmp_path: Path, int8_embedder: OnnxEmbedder
) -> None:
    """ONNX Runtime fuses Add + LayerNormalization into SkipLayerNormalization by default; its
    kernel was 6-9 times slower (docs/benchmarks.md, change 10), so the embedder's sessions
    must not get it."""
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    graph = quantized_graph(
        exported_graph(bundled_model_path(), default_model_cache(), ids_only=True)
    )

    def op_types(path: Path) -> set[str]:
        return {node.op_type for node in onnx.load(str(path)).graph.node}

    default_options = ort.SessionOptions()
    default_options.optimized_model_filepath = str(tmp_path / "default.onnx")
    ort.InferenceSession(str(graph), default_options, providers=["CPUExecutionProvider"])
    assert "SkipLayerNormalization" in op_types(tmp_path / "default.onnx")  # what is avoided

    open_session(graph, 1, optimized_copy=tmp_path / "served.onnx")
    served = op_types(tmp_path / "served.onnx")
    assert "SkipLayerNormalization" not in served
    assert "LayerNormalization" in served


def test_int8_needs_the_onnx_backend() -> None:
    from routebook.config import load_settings
    from routebook.wiring import load_embedder

    settings = load_settings({"embed_backend": "torch", "embed_precision": "int8"})
    with pytest.raises(ConfigError, match="needs embed_backend"):
        load_embedder(settings)
    with pytest.raises(ConfigError, match="float32 or int8"):
        OnnxEmbedder(precision="int4")


def test_switching_precision_needs_a_reindex(
    make_app: Callable[..., App], sqlite_url: str, tmp_path: Path, int8_embedder: OnnxEmbedder
) -> None:
    first = make_app(sqlite_url)  # float32, the session's embedder
    status = first.reindexer.run(first.reindexer.start(None, None), None, None)
    assert status.state == "succeeded"
    first.close()
    stale = r"all-MiniLM-L6-v2\+int8\.2:384.*run `routebook reindex`"
    with pytest.raises(ConfigError, match=stale):
        make_app(sqlite_url, embedder=int8_embedder)
    # `routebook reindex` builds its app without loading the indexes, then re-embeds everything.
    settings = make_settings(sqlite_url, snapshot_dir=tmp_path / "snapshots")
    reindexing = build(settings, embedder=int8_embedder, load_routes=False, load_indexes=False)
    try:
        status = reindexing.reindexer.run(reindexing.reindexer.start(None, None), None, None)
        assert status.state == "succeeded"
    finally:
        reindexing.close()
    served = make_app(sqlite_url, embedder=int8_embedder)
    vector = int8_embedder.embed(["my parcel has not arrived yet"])[0]
    (top,) = served.registry.get("default").search(vector, 1)
    assert top.facts.text == "my parcel has not arrived yet"
    assert top.similarity > 0.9999  # the stored vector is the int8 one (float32's: about 0.99)
