"""Micro-batching: concurrent embed calls are coalesced into one model call.

The model's cost per call is mostly fixed overhead on a CPU, so embedding 16 short queries at
once costs far less than 16 calls. One worker thread runs the model: it takes every query that
queued while the previous batch ran. It waits (at most `max_wait`) for more to join only when
there is company, i.e. the previous batch held more than one query: a lone query at concurrency 1
goes to the model at once instead of paying the wait for nothing.

When the inner embedder gives layers, `embed_with_layers` is batched the same way: a batch with
a caller that asked for layers runs `inner.embed_with_layers`, and every caller gets its rows of
both (vectors from either call are the same).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routebook.embed.protocol import Embedder, EmbedderInFront, layered

Vectors = npt.NDArray[np.float32]
#: One caller's rows: its vectors, and its layers when the batch was run with them.
Rows = tuple[Vectors, Vectors | None]


@dataclass(frozen=True)
class _Call:
    texts: list[str]
    wants_layers: bool
    future: Future[Rows]


class MicroBatcher(EmbedderInFront):
    """An Embedder that batches concurrent calls to another Embedder."""

    def __init__(
        self, inner: Embedder, max_batch: int = 32, max_wait_ms: float = 2.0, workers: int = 1
    ) -> None:
        super().__init__(inner)
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[_Call] = queue.Queue()
        self.batches = 0  # model calls made, for metrics, tests and benchmarks
        self.texts = 0  # texts those calls embedded: texts / batches is the mean batch size
        self._count_lock = threading.Lock()
        self._last_batch_size = 0
        # Several workers: under load, batches run side by side (the onnx embedder gives
        # overlapping calls one thread each, which embeds more per second than one wide call).
        for number in range(workers):
            threading.Thread(target=self._run, name=f"embed-batcher-{number}", daemon=True).start()

    @property
    def waiting_calls(self) -> int:
        """Calls queued for the model and not yet taken by a worker: a load signal."""
        return self._queue.qsize()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) >= self._max_batch:  # already a batch: no reason to wait for company
            vectors = self.inner.embed(texts)
            self._count(len(texts))
            return vectors
        vectors, _ = self._queued(texts, wants_layers=False)
        return vectors

    def embed_with_layers(self, texts: Sequence[str]) -> tuple[Vectors, Vectors]:
        inner = layered(self.inner)  # a clear TypeError when there are none
        if len(texts) >= self._max_batch:
            both = inner.embed_with_layers(texts)
            self._count(len(texts))
            return both
        vectors, layers = self._queued(texts, wants_layers=True)
        assert layers is not None  # a batch with a caller that wants layers is run with them
        return vectors, layers

    def _queued(self, texts: Sequence[str], *, wants_layers: bool) -> Rows:
        call = _Call(list(texts), wants_layers, Future())
        self._queue.put(call)
        return call.future.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            pending = [first]
            count = len(first.texts)
            while count < self._max_batch:  # whatever queued meanwhile rides along
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                pending.append(item)
                count += len(item.texts)
            if self._last_batch_size > 1:  # under load: wait a little for stragglers
                deadline = _now() + self._max_wait
                while count < self._max_batch:
                    remaining = deadline - _now()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                    pending.append(item)
                    count += len(item.texts)
            self._last_batch_size = count
            self._embed(pending)

    def _embed(self, pending: list[_Call]) -> None:
        texts = [text for call in pending for text in call.texts]
        layers: Vectors | None = None
        try:
            if any(call.wants_layers for call in pending):
                vectors, layers = layered(self.inner).embed_with_layers(texts)
            else:
                vectors = self.inner.embed(texts)
        except BaseException as exc:  # hand the failure to every waiting caller
            for call in pending:
                call.future.set_exception(exc)
            return
        self._count(len(texts))
        start = 0
        for call in pending:
            end = start + len(call.texts)
            call.future.set_result(
                (vectors[start:end], None if layers is None else layers[start:end])
            )
            start = end

    def _count(self, texts: int) -> None:
        with self._count_lock:
            self.batches += 1
            self.texts += texts


def _now() -> float:
    return time.monotonic()
