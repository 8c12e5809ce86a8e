"""TrainingLayers (`service/head_layers.py`): a retraining embeds only the texts new to its
sample, and a namespace keeps exactly its last sample's pools. The pools here are a plain
function of the text (what is tested is the bookkeeping; the model's pools are tested in
tests/integration/test_heads.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from routebook.service.head_layers import BATCH, TrainingLayers


class Pools:
    """Pools of width 4 from each text's length and first letter; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return np.array([[len(t), ord(t[0]), 0.1, -len(t) / 3] for t in texts], dtype=np.float32)


def test_only_new_texts_are_embedded_and_the_rest_dropped() -> None:
    pools = Pools()
    kept = TrainingLayers(pools, 4)
    first = kept.of("ns", ["alpha", "beta", "gamma"])
    assert first.shape == (3, 4) and first.dtype == np.float16
    assert first[1].tolist() == [4.0, float(ord("b")), np.float16(0.1), np.float16(-4 / 3)]
    assert kept.embedded == 3 and kept.kept("ns") == 3

    second = kept.of("ns", ["gamma", "delta", "alpha"])
    assert pools.calls[-1] == ["delta"]  # alpha and gamma were kept
    assert np.array_equal(second[0], first[2]) and np.array_equal(second[2], first[0])
    assert kept.embedded == 4 and kept.kept("ns") == 3  # beta left the sample: dropped

    kept.of("other", ["alpha"])
    assert pools.calls[-1] == ["alpha"]  # namespaces keep their own
    assert kept.of("ns", []).shape == (0, 4) and kept.kept("ns") == 0  # an emptied index


def test_copies_are_embedded_once_and_large_samples_in_batches() -> None:
    pools = Pools()
    kept = TrainingLayers(pools, 4)
    texts = [f"text {n}" for n in range(BATCH * 2 + 5)]
    rows = kept.of("ns", [*texts, texts[0], texts[1]])
    assert [len(call) for call in pools.calls] == [BATCH, BATCH, 5]
    assert len(rows) == len(texts) + 2 and np.array_equal(rows[-2], rows[0])


def test_pauses_are_counted_for_the_thread_that_paused() -> None:
    """HeadBook takes a training's pauses out of its duration (`paused`); a training on
    another thread meanwhile must not move its count."""
    kept = TrainingLayers(Pools(), 4)
    kept.pause = 50.0  # a few milliseconds after a chunk of this stand-in
    counted: list[float] = []

    def train() -> None:
        kept.of("ns", [f"text {n}" for n in range(BATCH + 1)])  # two chunks, one pause
        counted.append(kept.paused())

    other = threading.Thread(target=train)
    other.start()
    other.join()
    assert counted[0] > 0 and kept.paused() == 0.0
