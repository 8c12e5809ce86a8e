"""The mean pool of every layer comes from the same forward pass as the vector, and changes
nothing about the vector: not its floats, not its model id. Every embedder in front of the model
(batcher, cache) hands the layers through unchanged."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from routebook.config import load_settings
from routebook.embed import Embedder
from routebook.embed.batcher import MicroBatcher
from routebook.embed.cache import CachedEmbedder
from routebook.embed.onnx import OnnxEmbedder, default_model_cache, exported_graph, open_session
from routebook.embed.protocol import (
    EmbedderInFront,
    LayerEmbedder,
    background_layers,
    layered,
    layers_dim_of,
)
from routebook.embed.sentence import SentenceTransformerEmbedder, bundled_model_path
from routebook.wiring import load_embedder
from tests.conftest import wait_until

MINILM_LAYERS = 7 * 384  # the embedding output and each of the 6 layers

TEXTS = [
    "where is my parcel?",
    "where is my parcel? it is late",  # same chunk as the first, so the first one is padded
    "  leading and trailing spaces  ",
    "Ünïcödé, 文字 and an emoji 🎉",
    "word " * 400,  # past the 256-token limit: truncated
    "",
    "Explain how a compiler turns source code into machine code, step by step.",
]


def _block(layers: np.ndarray, index: int) -> np.ndarray:
    return layers[:, index * 384 : (index + 1) * 384]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def torch_layers() -> LayerEmbedder:
    settings = load_settings({"embed_backend": "torch", "head_features": "layers"})
    model = load_embedder(settings)
    assert isinstance(model, SentenceTransformerEmbedder)
    return layered(model)


@pytest.fixture(scope="module")
def int8_plain() -> OnnxEmbedder:
    return OnnxEmbedder(precision="int8")


@pytest.fixture(scope="module")
def int8_layers() -> OnnxEmbedder:
    return OnnxEmbedder(precision="int8", layers=True)


def test_head_features_layers_builds_an_embedder_with_every_layer(
    layers_embedder: Embedder, embedder: Embedder
) -> None:
    assert isinstance(layers_embedder, OnnxEmbedder)
    assert layers_embedder.layers_dim == layers_dim_of(layers_embedder) == MINILM_LAYERS
    assert layers_embedder.model_id == embedder.model_id == "all-MiniLM-L6-v2:384"
    assert layers_dim_of(embedder) == 0  # head_features = "vector", the default


def test_layers_come_with_the_vectors_the_plain_embedder_gives(
    layers_embedder: Embedder, embedder: Embedder
) -> None:
    vectors, layers = layered(layers_embedder).embed_with_layers(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert layers.shape == (len(TEXTS), MINILM_LAYERS) and layers.dtype == np.float32
    assert np.array_equal(vectors, layers_embedder.embed(TEXTS))
    assert np.abs(vectors - embedder.embed(TEXTS)).max() < 1e-6
    # The last layer's pool, normalised, is the vector; the pools are raw, not unit rows.
    assert np.abs(_unit(_block(layers, 6)) - vectors).max() < 1e-6
    assert not np.allclose(np.linalg.norm(_block(layers, 6), axis=1), 1.0, atol=0.1)
    empty_vectors, empty_layers = layered(layers_embedder).embed_with_layers([])
    assert empty_vectors.shape == (0, 384) and empty_layers.shape == (0, MINILM_LAYERS)


def test_padding_does_not_reach_the_layers(layers_embedder: Embedder) -> None:
    """A text padded inside a batch pools only its own tokens, in every layer."""
    model = layered(layers_embedder)
    _, batched = model.embed_with_layers(TEXTS[:2])
    _, alone = model.embed_with_layers(TEXTS[:1])
    assert np.abs(batched[0] - alone[0]).max() < 1e-5


def test_the_layers_graph_is_a_file_of_its_own(layers_embedder: Embedder) -> None:
    """The layer-less graphs stay the files they were (same name, one output)."""
    cache, model = default_model_cache(), bundled_model_path()
    for ids_only in (False, True):
        plain = exported_graph(model, cache, ids_only=ids_only)
        every = exported_graph(model, cache, ids_only=ids_only, layers=True)
        assert every.name == plain.name.replace(".onnx", "-layers.onnx")
        assert [o.name for o in open_session(plain, 1).get_outputs()] == ["last_hidden_state"]
        names = [o.name for o in open_session(every, 1).get_outputs()]
        assert names == [f"hidden_state_{i}" for i in range(7)]


def test_torch_and_onnx_give_the_same_layers(
    torch_layers: LayerEmbedder,
    torch_embedder: SentenceTransformerEmbedder,
    layers_embedder: Embedder,
) -> None:
    assert torch_layers.layers_dim == MINILM_LAYERS
    torch_vectors, torch_pools = torch_layers.embed_with_layers(TEXTS)
    assert np.array_equal(torch_vectors, torch_layers.embed(TEXTS))
    assert np.abs(torch_vectors - torch_embedder.embed(TEXTS)).max() < 1e-6
    onnx_vectors, onnx_pools = layered(layers_embedder).embed_with_layers(TEXTS)
    assert np.abs(torch_vectors - onnx_vectors).max() < 1e-5
    assert np.abs(torch_pools - onnx_pools).max() < 1e-4
    # Seven different states, not one repeated: each layer moves the pool.
    for index in range(6):
        assert np.abs(_block(torch_pools, index) - _block(torch_pools, index + 1)).max() > 0.1


def test_int8_layers_leave_the_int8_vectors_as_they_were(
    int8_plain: OnnxEmbedder, int8_layers: OnnxEmbedder, layers_embedder: Embedder
) -> None:
    assert int8_layers.model_id == int8_plain.model_id == "all-MiniLM-L6-v2+int8.2:384"
    assert int8_layers.layers_dim == MINILM_LAYERS
    vectors, layers = int8_layers.embed_with_layers(TEXTS)
    assert np.array_equal(vectors, int8_plain.embed(TEXTS))
    assert np.array_equal(vectors, int8_layers.embed(TEXTS))
    assert np.abs(_unit(_block(layers, 6)) - vectors).max() < 1e-6
    _, full = layered(layers_embedder).embed_with_layers(TEXTS)
    for index in range(7):
        cosines = np.sum(_unit(_block(layers, index)) * _unit(_block(full, index)), axis=1)
        assert cosines.min() > 0.97, (index, cosines)
    assert not np.allclose(layers, full, atol=1e-3)  # really the quantized graph


def test_without_layers_asking_for_them_is_a_type_error(embedder: Embedder) -> None:
    assert layers_dim_of(embedder) == 0
    for model in (embedder, CachedEmbedder(embedder), MicroBatcher(embedder)):
        assert layers_dim_of(model) == 0
        with pytest.raises(TypeError, match="gives no layers"):
            layered(model).embed_with_layers(TEXTS[:1])


def test_wrappers_pass_for_the_model_they_wrap(layers_embedder: Embedder) -> None:
    stacked = CachedEmbedder(MicroBatcher(EmbedderInFront(layers_embedder)))
    assert layers_dim_of(stacked) == MINILM_LAYERS
    vectors, layers = stacked.embed_with_layers(TEXTS)
    expected_vectors, expected_layers = layered(layers_embedder).embed_with_layers(TEXTS)
    assert np.abs(vectors - expected_vectors).max() < 1e-6
    assert np.abs(layers - expected_layers).max() < 1e-5


def test_cached_layers_are_the_models_to_the_bit(layers_embedder: Embedder) -> None:
    cached = CachedEmbedder(layers_embedder, capacity=4)
    first_vectors, first_layers = cached.embed_with_layers(TEXTS[:3])
    again_vectors, again_layers = cached.embed_with_layers(TEXTS[:3])
    assert (cached.hits, cached.misses) == (3, 3)
    assert np.array_equal(first_vectors, again_vectors)
    assert np.array_equal(first_layers, again_layers)
    fresh_vectors, fresh_layers = layered(layers_embedder).embed_with_layers(TEXTS[:3])
    assert np.abs(again_vectors - fresh_vectors).max() < 1e-6
    assert np.abs(again_layers - fresh_layers).max() < 1e-5
    # A text first asked for its vector alone is cached with its layers all the same.
    vector = cached.embed(TEXTS[3:4])
    assert vector.flags.c_contiguous and vector.shape == (1, 384)
    vectors, layers = cached.embed_with_layers(TEXTS[3:4])
    assert (cached.hits, cached.misses) == (4, 4)
    assert np.array_equal(vectors, vector)
    assert layers.flags.c_contiguous and layers.shape == (1, MINILM_LAYERS)
    _, model_layers = layered(layers_embedder).embed_with_layers(TEXTS[3:4])
    assert np.abs(layers - model_layers).max() < 1e-5


class _Gated(EmbedderInFront):
    """The real model, but its first call waits for a gate: callers pile up meanwhile, as they
    do under load, without the test depending on how fast threads happen to be scheduled."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls: list[tuple[str, int]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._wait("embed", texts)
        return self.inner.embed(texts)

    def embed_with_layers(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        self._wait("layers", texts)
        return layered(self.inner).embed_with_layers(texts)

    def _wait(self, kind: str, texts: Sequence[str]) -> None:
        self.calls.append((kind, len(texts)))
        self.entered.set()
        assert self.gate.wait(timeout=30)


def test_batched_layers_are_each_callers_own(layers_embedder: Embedder) -> None:
    """Callers asking for layers and callers asking for vectors share one batch, run with
    layers; each gets its own rows, as embedding its text alone gives them."""
    gated = _Gated(layers_embedder)
    batcher = MicroBatcher(gated, max_batch=32, max_wait_ms=50)
    results: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def one(position: int) -> None:
        if position % 2:  # odd positions want the vector only
            results[position] = (batcher.embed([TEXTS[position]])[0], None)
        else:
            vectors, layers = batcher.embed_with_layers([TEXTS[position]])
            results[position] = (vectors[0], layers[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(TEXTS))]
    threads[0].start()
    assert gated.entered.wait(timeout=30)  # the first text is in the model, alone
    for t in threads[1:]:
        t.start()
    wait_until(lambda: batcher.waiting_calls == len(TEXTS) - 1, 30, "the others to queue")
    gated.gate.set()
    for t in threads:
        t.join()
    assert gated.calls == [("layers", 1), ("layers", len(TEXTS) - 1)]
    model = layered(layers_embedder)
    for position, (vector, layers) in results.items():
        alone_vectors, alone_layers = model.embed_with_layers([TEXTS[position]])
        assert np.abs(vector - alone_vectors[0]).max() < 1e-6, position
        if layers is not None:
            assert np.abs(layers - alone_layers[0]).max() < 1e-5, position
    # A batch where nobody asks for layers does not compute them.
    batcher.embed(TEXTS[:2])
    assert gated.calls[-1] == ("embed", 2)
    # A call of max_batch texts or more goes to the model at once, layers included.
    vectors, layers = batcher.embed_with_layers(TEXTS * 5)
    assert vectors.shape == (5 * len(TEXTS), 384)
    assert gated.calls[-1] == ("layers", 5 * len(TEXTS))
    assert layers.shape == (5 * len(TEXTS), MINILM_LAYERS)


def test_background_layers_are_the_models_pools_on_one_thread(
    layers_embedder: Embedder, torch_layers: LayerEmbedder, embedder: Embedder
) -> None:
    """A head's training embeds through the one-thread session (the onnx backend) or, where
    the embedder has none, through embed_with_layers: the same pools either way."""
    assert isinstance(layers_embedder, OnnxEmbedder)
    pools = background_layers(layers_embedder)(TEXTS)
    _, expected = layered(layers_embedder).embed_with_layers(TEXTS)
    assert pools.shape == expected.shape and np.abs(pools - expected).max() < 1e-5
    _, torch_pools = torch_layers.embed_with_layers(TEXTS)
    assert np.array_equal(background_layers(torch_layers)(TEXTS), torch_pools)
    with pytest.raises(TypeError, match="gives no layers"):
        background_layers(embedder)
