"""The vectors `routebook bench` fills its namespace with: from the model, or derived.

`model` (the default) embeds every fill text through the model, as a real load would: about
190 texts/s on a 2-core machine, so a million examples take about 95 minutes. `derived`
embeds only the distinct dataset texts through the model (the first pass of `varied()`); each
later text, a prefix/suffix variation of base text `j % len(base)`, is stored with that base
text's vector plus a little seeded gaussian noise, renormalised: the generator of
`bench --index-only` (`bench_index.synthetic_vectors`), with the same noise, so recall at 1M is
comparable between the two benches. The stored texts are the real varied texts; queries sent to
the server are embedded by the server's model as always.

The fill runs through the ordinary write path (`ExampleService.upsert`, which embeds each new
row and stores it with its vector) with a `FillEmbedder` in place of the model: it reports the
model's id and dimension, so the server accepts the store and the snapshot, and answers the
texts of the chunk being written with the vectors prepared for them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from routebook.embed import Embedder
from routebook.embed.protocol import EmbedderInFront
from routebook.jobs.bench_index import Vectors, synthetic_vectors

if TYPE_CHECKING:
    from routebook.wiring import App

FILL_VECTORS = ("model", "derived")
#: Norm of the gaussian noise added to a base vector, drawn uniformly from this range: the
#: default of `bench_index.synthetic_vectors`. The cosine of a variant to its base is then
#: about 0.95 on average (0.92 at the 5th percentile, 0.89 at worst), near what the model itself
#: gives a prefix/suffix variation of a text (mean 0.94 measured on 150 dataset texts).
DERIVED_NOISE = (0.15, 0.45)
#: Fill texts written (and their vectors prepared) at once.
FILL_CHUNK = 10_000
#: Base texts embedded through the model at once (progress is reported between batches).
BASE_BATCH = 1_000


class FillEmbedder(EmbedderInFront):
    """An Embedder that passes for `inner` (same model id and dimension) and answers the texts
    handed to `expect` with the vectors given for them; any other text goes to `inner`.

    `model_texts` counts the texts that went to `inner`, so a caller can check that the fill
    itself never reached the model."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self._expected: dict[str, Vectors] = {}
        self.model_texts = 0

    def expect(self, texts: Sequence[str], vectors: Vectors) -> None:
        """The vectors of `texts` (row i for text i) until the next call. Texts are matched as
        the store keeps them: stripped."""
        if len(texts) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors for {len(texts)} texts")
        self._expected = {t.strip(): v for t, v in zip(texts, vectors, strict=True)}

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = []
        for row, text in enumerate(texts):
            vector = self._expected.get(text.strip())
            if vector is None:
                missing.append(row)
            else:
                out[row] = vector
        if missing:
            self.model_texts += len(missing)
            out[missing] = self.inner.embed([texts[row] for row in missing])
        return out


def fill_chunks(texts: Iterator[str], chunk: int = FILL_CHUNK) -> Iterator[list[str]]:
    """`texts` in lists of `chunk`, without holding more than one list."""
    while batch := list(itertools.islice(texts, chunk)):
        yield batch


def base_vectors(
    model: Embedder,
    texts: Sequence[str],
    progress: Callable[[str], None] = lambda _m: None,
) -> Vectors:
    """The model's vectors of `texts`, row i for text i, embedded `BASE_BATCH` at a time."""
    out = np.empty((len(texts), model.dim), dtype=np.float32)
    for start in range(0, len(texts), BASE_BATCH):
        out[start : start + BASE_BATCH] = model.embed(texts[start : start + BASE_BATCH])
        progress(f"embedded base texts {min(start + BASE_BATCH, len(texts))}/{len(texts)}")
    return out


def derived_vectors(
    base: Vectors,
    start: int,
    count: int,
    *,
    noise: tuple[float, float] = DERIVED_NOISE,
) -> Vectors:
    """Vectors of fill texts `start` … `start + count - 1` of `varied(texts, …)`, where `base`
    holds the model's vectors of `texts`: text j is a variation of base text `j % len(base)`.
    The first pass (j < len(base)) is the base text itself, so it gets the model's vector as
    is; every later one gets it plus noise (`synthetic_vectors`), renormalised. The noise is
    seeded by `start`: the same arguments give the same vectors."""
    if start < 0:
        raise ValueError(f"start {start} is negative")
    positions = np.arange(start, start + count)
    out: Vectors = base[positions % len(base)]  # a copy: fancy indexing
    later = positions >= len(base)
    if later.any():
        out[later] = synthetic_vectors(out[later], int(later.sum()), seed=start, noise=noise)
    return out


@dataclass(frozen=True, slots=True)
class Filled:
    #: Texts written, how many of them the model embedded, and the time it all took.
    texts: int
    model_texts: int
    seconds: float


def fill_namespace(
    app: App,
    filler: FillEmbedder,
    namespace: str,
    best_model: str,
    texts: Sequence[str],
    size: int,
    fill_vectors: str = "model",
    progress: Callable[[str], None] = lambda _m: None,
) -> Filled:
    """Write `varied(texts, size)` into `namespace` of `app` (built with `filler` as its
    embedder), `FILL_CHUNK` at a time, each example with `best_model` and no route.

    With "derived", the base texts (the first pass) are embedded by the model first and every
    chunk's vectors are prepared from them; a fill text reaching the model is then an error,
    raised at once rather than after an hour of embedding."""
    from routebook.jobs.bench import varied
    from routebook.service.examples import ExampleInput

    if fill_vectors not in FILL_VECTORS:
        raise ValueError(f"fill_vectors {fill_vectors!r}: use one of {', '.join(FILL_VECTORS)}")
    derived = fill_vectors == "derived"
    started = time.perf_counter()
    reached_model = filler.model_texts
    base = base_vectors(filler.inner, texts[:size], progress) if derived else None
    written = 0
    for chunk in fill_chunks(varied(texts, size)):
        if base is not None:
            filler.expect(chunk, derived_vectors(base, written, len(chunk)))
        app.examples.upsert(namespace, [ExampleInput(t, None, best_model) for t in chunk])
        written += len(chunk)
        if derived and filler.model_texts > reached_model:
            raise RuntimeError(
                f"{filler.model_texts - reached_model} fill texts reached the model instead of "
                "their derived vectors"
            )
        progress(f"filled {written}/{size}")
    filler.expect([], np.zeros((0, filler.dim), np.float32))
    model_texts = filler.model_texts - reached_model + (0 if base is None else len(base))
    return Filled(written, model_texts, time.perf_counter() - started)
