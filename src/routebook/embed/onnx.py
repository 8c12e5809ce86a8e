"""The serving embedder: the same MiniLM weights, run by ONNX Runtime instead of torch.

Why: on two CPU cores torch spends most of a single short query in Python and thread hand-offs
(measured: one query 28 ms with torch on one thread against 9 ms with ONNX Runtime, both under
the same load; with two torch threads on a busy machine, close to a second). ONNX Runtime runs
the exported graph in C++ and gives the same vectors (largest difference measured: 1.2e-7), so
vectors from either backend mix in one index and the model id stays the same.

The graph is exported once from the local safetensors (torch is only imported for that), kept
in a cache folder keyed by the weights' hash, and loaded from there by every later start. Only
models whose sentence-transformers pipeline is Transformer → mean pooling (→ Normalize) are
supported; any other model folder gets a ConfigError telling to use `embed_backend = "torch"`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.embed.sentence import (
    CHUNK_CHARS,
    length_chunks,
    model_folder,
    model_id_for,
)
from routebook.errors import ConfigError

Vectors = npt.NDArray[np.float32]

#: Bump when the export below changes, so old cached graphs are not reused.
EXPORT_VERSION = 2

#: ONNX Runtime fusions left out. Its fused SkipLayerNormalization kernel (1.32, CPU) takes 6 to
#: 9 times as long as the LayerNormalization and Add it replaces (measured alone on 1 x 30 x 384:
#: 75 µs against 13 µs): without it an int8 text takes 2.9 ms instead of 3.3 ms on the bench's
#: queries. float32 vectors come out the same to the bit; int8 ones round differently (cosine
#: 0.9997 on average to the fused graph's, equally close to float32), hence INT8_VARIANT.
UNFUSED = ["SkipLayerNormFusion"]

#: The model id suffix of int8 vectors; ".2" since the unfused graph above changed their rounding.
INT8_VARIANT = "int8.2"


def default_model_cache() -> Path:
    """`$ROUTEBOOK_CACHE_DIR/onnx`, else `$XDG_CACHE_HOME/routebook/onnx`, else ~/.cache/…"""
    explicit = os.environ.get("ROUTEBOOK_CACHE_DIR")
    if explicit:
        return Path(explicit) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routebook" / "onnx"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return value


def max_seq_length(model_path: Path) -> int:
    """The token limit sentence-transformers applies (its config, else the tokenizer's)."""
    config = model_path / "sentence_bert_config.json"
    if config.is_file():
        value = _read_json(config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return 512


def check_mean_pooling(model_path: Path) -> None:
    """ConfigError unless the pipeline pools by mean (then, with or without a Normalize step,
    its vectors are normalised here as the torch backend normalises them)."""
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        raise ConfigError(
            f"{model_path} has no modules.json: the onnx backend needs a sentence-transformers "
            'folder; set embed_backend = "torch"'
        )
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ConfigError(
            f"{model_path}'s pipeline is {' → '.join(kinds)}; the onnx backend supports "
            'Transformer → Pooling (→ Normalize) only: set embed_backend = "torch"'
        )
    pooling = _read_json(model_path / modules[1]["path"] / "config.json")
    other_modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if other_modes != ["pooling_mode_mean_tokens"]:
        raise ConfigError(
            f"{model_path} pools with {other_modes}; the onnx backend supports mean pooling "
            'only: set embed_backend = "torch"'
        )


def weights_digest(model_path: Path) -> str:
    digest = hashlib.sha256(f"export-v{EXPORT_VERSION}".encode())
    for name in sorted(os.listdir(model_path)):
        if name.endswith((".safetensors", ".bin", "config.json")):
            with (model_path / name).open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def exported_graph(
    model_path: Path, cache_dir: Path, *, ids_only: bool = False, layers: bool = False
) -> Path:
    """The ONNX file for these weights, exporting it first if the cache has none.

    `ids_only` exports a graph for one text per run: token ids are its only input, since an
    unpadded text's attention mask is all ones and its token types all zeros. Dropping them
    drops the mask arithmetic from every layer (same vectors, 13% less time per int8 run).

    `layers` exports a graph whose outputs are every hidden state (`hidden_state_0`, the
    embedding output, to `hidden_state_L`, the last layer's) instead of the last one alone. It
    is a file of its own (suffix `-layers`), so the layer-less graphs are the same files as
    before; the last output is the same tensor as the layer-less graph's only one.
    """
    suffix = ("-ids" if ids_only else "") + ("-layers" if layers else "")
    target = cache_dir / f"{model_path.name}-{weights_digest(model_path)}{suffix}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        _export(model_path, partial, ids_only=ids_only, layers=layers)
        partial.replace(target)  # atomic: two servers exporting at once both end with one file
    finally:
        partial.unlink(missing_ok=True)
    return target


def quantized_graph(graph: Path) -> Path:
    """The int8 version of an exported graph, quantizing it first if the cache has none.

    Dynamic quantization with per-channel int8 weights: on CPUs with int8 dot products (VNNI)
    a model call takes about half the time. Per-tensor weights were twice as far from the
    float32 vectors (cosine 0.957 against 0.992 on the bench's queries), so per-channel it is.
    """
    target = graph.with_name(f"{graph.stem}-int8.onnx")
    if target.is_file():
        return target
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    partial = graph.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    # The quantizer logs a line per tensor at INFO on the root logger, and a warning advising
    # pre-processing meant for image models: noise in the server's log on the first start.
    # Only this one-off step is silenced, errors excepted.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            graph,
            partial,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Shape inference cannot type the exported attention's outputs; they are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        partial.replace(target)
    finally:
        logging.disable(logging.NOTSET)
        partial.unlink(missing_ok=True)
    return target


def _export(model_path: Path, destination: Path, *, ids_only: bool, layers: bool) -> None:
    # Deferred: torch and transformers cost seconds and hundreds of MB; only an export needs them.
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # Padded batches: the eager attention masks by adding a large negative number, where the
    # exported SDPA path builds the mask through Where/IsNaN ops and a costlier softmax; eager
    # is 7% faster on the bench's queries in batches of 16 (7.6-7.8 against 8.1-8.4 ms per
    # text), and its hidden states differ by at most 3e-6. The ids-only graph has no mask and
    # keeps SDPA: eager would gain 3% there but move int8's rounding (cosine 0.9965 at worst).
    model = AutoModel.from_pretrained(
        str(model_path),
        local_files_only=True,
        attn_implementation="sdpa" if ids_only else "eager",
    ).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.inner(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]

    class IdsOnly(LastHiddenState):
        def forward(self, ids: Any) -> Any:  # type: ignore[override]
            return self.inner(input_ids=ids)[0]

    class EveryHiddenState(LastHiddenState):
        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.inner(
                input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
            ).hidden_states

    class IdsOnlyEveryHiddenState(LastHiddenState):
        def forward(self, ids: Any) -> Any:  # type: ignore[override]
            return self.inner(input_ids=ids, output_hidden_states=True).hidden_states

    wrappers = {
        (False, False): LastHiddenState,
        (True, False): IdsOnly,
        (False, True): EveryHiddenState,
        (True, True): IdsOnlyEveryHiddenState,
    }
    example = torch.ones((2, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    inputs = ["input_ids"] if ids_only else ["input_ids", "attention_mask", "token_type_ids"]
    outputs = (
        [f"hidden_state_{i}" for i in range(model.config.num_hidden_layers + 1)]
        if layers
        else ["last_hidden_state"]
    )
    # The TorchScript exporter (dynamo=False) needs no onnxscript; torch 2.13 warns it is legacy.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrappers[ids_only, layers](model),
            (example,) if ids_only else (example, example, torch.zeros_like(example)),
            str(destination),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: axes for name in [*inputs, *outputs]},
            opset_version=17,
            dynamo=False,
        )


def open_session(graph: Path, intra_op_threads: int, *, optimized_copy: Path | None = None) -> Any:
    """An ONNX Runtime session as the embedder runs it; `optimized_copy` saves the graph as
    ONNX Runtime rewrote it (to check which fusions it applied)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads  # 0: one per core
    options.inter_op_num_threads = 1
    # Idle worker threads must not spin: gRPC threads need the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if optimized_copy is not None:
        options.optimized_model_filepath = str(optimized_copy)
    return ort.InferenceSession(
        str(graph), options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
    )


class OnnxEmbedder:
    """Tokenizes with the model's own tokenizer.json and runs the exported graph.

    With `layers` it runs the graph that outputs every hidden state, and `embed_with_layers`
    gives their mean pools beside the vectors (a LayerEmbedder); `embed` reads only the last
    output of that graph, so its vectors are the layer-less graph's."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cache_dir: Path | None = None,
        threads: int = 0,
        batch_size: int = 64,
        precision: str = "float32",
        layers: bool = False,
    ) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        path = model_folder(model_path)
        if not (path / "tokenizer.json").is_file():
            raise ConfigError(
                f"{path} has no tokenizer.json: the onnx backend needs a fast tokenizer; "
                'set embed_backend = "torch"'
            )
        check_mean_pooling(path)
        if precision not in ("float32", "int8"):
            raise ConfigError(f"embed_precision must be float32 or int8, not {precision!r}")
        # Dynamic quantization scales activations by the range of the whole batch, so an int8
        # vector would depend on the texts it was batched with (measured: cosine 0.988 between
        # a text embedded alone and among 13 others). One text per run keeps a text's vector
        # its own, at 6% of the throughput (237 against 253 texts/s on one thread), and lets
        # int8 run the graph that takes token ids only.
        self._one_per_run = precision == "int8"
        graph = exported_graph(
            path, cache_dir or default_model_cache(), ids_only=self._one_per_run, layers=layers
        )
        if precision == "int8":
            graph = quantized_graph(graph)

        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_seq_length(path))
        pad_token = str(_read_json(path / "tokenizer_config.json").get("pad_token") or "[PAD]")
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer

        # A call with the model to itself runs on every core (one query: 6.6 ms against 9.1 ms
        # on one thread); calls that overlap run on one thread each, which embeds more per
        # second than one call on two threads (218/s against 185/s on the bench's queries).
        self._session = open_session(graph, threads)
        self._narrow = open_session(graph, 1) if threads != 1 else self._session
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._batch_size = 1 if self._one_per_run else batch_size
        outputs = self._session.get_outputs()
        self._outputs: list[str] = [output.name for output in outputs]
        self._dim = int(outputs[-1].shape[-1])
        self._layers_dim = sum(int(output.shape[-1]) for output in outputs) if layers else 0
        # int8 vectors are close to float32 ones but not the same: they get an id of their own,
        # so an index is never built from one and searched with the other.
        self._model_id = model_id_for(path, self._dim, INT8_VARIANT if precision == "int8" else "")

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def layers_dim(self) -> int:
        return self._layers_dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        with self._session_for_call() as session:
            for chunk in length_chunks(texts, self._batch_size, CHUNK_CHARS):
                out[chunk] = self._run(session, [texts[i].strip() for i in chunk])
        return out

    def embed_with_layers(self, texts: Sequence[str]) -> tuple[Vectors, Vectors]:
        if not self._layers_dim:
            raise TypeError(
                f"this OnnxEmbedder ({self._model_id}) was built without layers=True: "
                "it gives no layers"
            )
        with self._session_for_call() as session:
            return self._with_layers(session, texts)

    def background_layers(self, texts: Sequence[str]) -> Vectors:
        """The layer pools of `texts` for background work (a head's training), on one thread:
        a call alone would take every core for as long as it runs, and Decide with them."""
        if not self._layers_dim:
            raise TypeError(f"this OnnxEmbedder ({self._model_id}) gives no layers")
        with self._session_for_call(background=True):
            return self._with_layers(self._narrow, texts)[1]

    def _with_layers(self, session: Any, texts: Sequence[str]) -> tuple[Vectors, Vectors]:
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        layers = np.empty((len(texts), self._layers_dim), dtype=np.float32)
        for chunk in length_chunks(texts, self._batch_size, CHUNK_CHARS):
            pools = self._pools(session, [texts[i].strip() for i in chunk], self._outputs)
            layers[chunk] = pools
            out[chunk] = self._normalized(pools[:, -self._dim :].copy())
        return out, layers

    @contextlib.contextmanager
    def _session_for_call(self, *, background: bool = False) -> Iterator[Any]:
        """The wide session for a call alone, the one-thread one for calls that overlap (with
        each other or with a `background` call, which runs on one thread itself)."""
        with self._in_flight_lock:
            alone = self._in_flight == 0 and not background
            self._in_flight += 1
        try:
            yield self._session if alone else self._narrow
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _run(self, session: Any, texts: list[str]) -> Vectors:
        return self._normalized(self._pools(session, texts, self._outputs[-1:]))

    def _pools(self, session: Any, texts: list[str], outputs: list[str]) -> Vectors:
        """The attention-masked mean over tokens of each of `outputs`, side by side."""
        hidden: list[npt.NDArray[np.float32]]
        if self._one_per_run:
            (text,) = texts
            ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
            hidden = session.run(outputs, {"input_ids": ids})
            return np.concatenate([unpadded.mean(axis=1) for unpadded in hidden], axis=1)
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        hidden = session.run(
            outputs, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        weights = mask[..., None].astype(np.float32)
        counts = weights.sum(axis=1).clip(1e-9)
        return np.concatenate([(state * weights).sum(axis=1) / counts for state in hidden], axis=1)

    @staticmethod
    def _normalized(pooled: Vectors) -> Vectors:
        """Unit length always, as the Embedder protocol promises and the torch backend gives
        (`normalize_embeddings=True`), whether or not the model's own pipeline normalises."""
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return np.asarray(pooled, dtype=np.float32)
