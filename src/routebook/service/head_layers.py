"""The layer pools of the texts a namespace's head trains on, embedded once and kept.

Why: with `head_features = "layers"` the success head reads every hidden layer's mean pool
(2,688 floats for MiniLM) where the index keeps only the final 384-float vector. Keeping every
example's pools beside the index would cost 7 times its memory; embedding the whole training
sample again at each retraining would cost the cores a minute per 10,000 examples. So the pools
of a namespace's training texts are kept here, by text hash, as float16 (5.4 KB a text; the
largest sample, `head_max_examples` = 50,000, holds 270 MB), and a retraining embeds only the
texts that are new since the last one (at `retrain_after` = 200 changes, about a second).
Texts that left the sample are dropped.

They are also kept on disk (`service/head_layers_file.py`), rewritten after each training that
changed them, so the first training after a restart embeds only what changed meanwhile, not the
whole sample again. A long embedding saves its progress every `CHECKPOINT_SECONDS` and when the
server stops (which ends it at the next chunk), so a restart in the middle of one goes on from
there instead of starting over.

Embedding for a training must leave Decide room: a model call alone runs on every core, and
Decide's calls then share them with it. So a training embeds on one thread
(`embed.protocol.background_layers`; Decide's calls meanwhile run on one thread each too) in
chunks, and after each chunk pauses as long as the chunk took (`PAUSE`): at most half of one
core, whatever the sample's size. The one thread alone hardly moved Decide's p50 (15.0
against 15.2 ms, 1,000 texts, one run each); the pause is what gives Decide its time back.
The price is a first embedding that takes about twice as long, once per namespace and model,
while the server routes without a head as it did before. Measured on 2 shared cores with
`scripts/bench_head_embedding.py --examples 3000` (a restart embedding 2,969 MMLU prompts,
Decide calls one at a time): Decide p50 / p99 11.9 / 36 ms during a 110 s embedding and
training before, 7.3-7.7 / 27-30 ms during a 192-228 s one now, 7.2-7.6 / 16-20 ms idle.
The pauses are counted per thread (`paused`), so that the head's duty cycle
(`service/heads.py`) waits for the work, not for them.

float16 rounds a pool by at most 1 part in 2,000, far below what moves a regression with the
penalty the head uses; the query at Decide is read in float32 from the same forward pass.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence

import numpy as np
import numpy.typing as npt

from routebook.service.head_layers_file import KeptPools, PoolsFiles

log = logging.getLogger(__name__)

#: Texts embedded per model call for a training (and between two pauses).
BATCH = 64
#: Rows copied at a time from the kept pools into a new sample's.
COPY_BLOCK = 4096
#: Seconds of pause after each chunk embedded for a training, per second the chunk took.
PAUSE = 1.0
#: Seconds between two saves of a long embedding's progress to the pools file, so a server
#: stopped or killed meanwhile does not start it over.
CHECKPOINT_SECONDS = 60.0


class TrainingStopped(Exception):
    """The server is stopping: a training's embedding ended early (its progress is kept)."""


LayerRows = npt.NDArray[np.float32]
EmbedLayers = Callable[[Sequence[str]], LayerRows]


class TrainingLayers:
    """Per namespace: the float16 layer pools (`width` floats a text) of the texts its head
    last trained on, by text hash; with `files`, also on disk, read from there the first time
    a namespace asks."""

    def __init__(
        self, embed_layers: EmbedLayers, width: int, files: PoolsFiles | None = None
    ) -> None:
        self._embed_layers = embed_layers
        self._width = width
        self._files = files
        self._kept: dict[str, KeptPools] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._paused = threading.local()  # per thread: what `paused` reads
        self.embedded = 0  # texts embedded so far, for tests and logs
        #: Pause per second of embedding; 0 where nothing waits for the cores (a one-shot
        #: `routebook decide`, which waits for the head itself).
        self.pause = PAUSE

    def stop(self) -> None:
        """End any embedding under way at its next chunk, keeping what it embedded."""
        self._stopping.set()

    def paused(self) -> float:
        """Seconds the calling thread has spent in pauses between chunks, all its calls
        together: a caller that times its work takes the difference out (the head's duty
        cycle counts the work, not the pacing)."""
        seconds: float = getattr(self._paused, "seconds", 0.0)
        return seconds

    def of(self, namespace: str, texts: Sequence[str]) -> npt.NDArray[np.float16]:
        """The pools of `texts` in order (float16, as kept, read-only), embedding only texts
        not kept yet; the namespace then keeps exactly these texts' pools."""
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        if self._files is not None:
            self._files.tidy(namespace)
        with self._lock:
            before = self._kept.get(namespace)
        if before is None and self._files is not None:
            before = self._files.read(namespace, self._width)
        if before is None:
            before = KeptPools([], np.zeros((0, self._width), dtype=np.float16))
        text_of = dict(zip(keys, texts, strict=True))  # a text's copies are embedded once
        position = {key: n for n, key in enumerate(text_of)}
        rows = np.empty((len(text_of), self._width), dtype=np.float16)
        reused = [(position[key], n) for n, key in enumerate(before.digests) if key in position]
        # In blocks: one fancy-indexed copy of the whole sample would be a third matrix of it.
        for start in range(0, len(reused), COPY_BLOCK):
            into, source = zip(*reused[start : start + COPY_BLOCK], strict=True)
            rows[list(into)] = before.rows[list(source)]
        known = set(before.digests)
        missing = [key for key in text_of if key not in known]
        at = [position[key] for key in missing]
        digests = list(text_of)

        def keep_progress(done: int) -> None:
            """Save the pools reused and the first `done` embedded ones, as a sample."""
            if self._files is not None:
                filled = sorted([into for into, _ in reused] + at[:done])
                self._files.write(namespace, KeptPools([digests[i] for i in filled], rows[filled]))

        self._embed(namespace, [text_of[key] for key in missing], rows, at, keep_progress)
        rows.flags.writeable = False  # handed to the training as is: nobody may change it
        kept = KeptPools(list(text_of), rows)
        with self._lock:
            self._kept[namespace] = kept
        if self._files is not None and (missing or len(reused) < len(before.digests)):
            self._files.write(namespace, kept)
        if len(text_of) == len(keys):
            return rows
        return rows[[position[key] for key in keys]]

    def _embed(
        self,
        namespace: str,
        texts: list[str],
        rows: npt.NDArray[np.float16],
        at: list[int],
        keep_progress: Callable[[int], None],
    ) -> None:
        """Put `texts`' pools in `rows` at `at`, in chunks with pauses between them (the module
        docstring says why), saving progress now and then; TrainingStopped when the server
        stops meanwhile, after saving it."""
        if not texts:
            return
        started = saved = time.monotonic()
        paused = self.paused()
        took = 0.0
        for start in range(0, len(texts), BATCH):
            waited = time.monotonic()
            stopping = self._stopping.wait(self.pause * took)
            self._paused.seconds = self.paused() + time.monotonic() - waited
            if stopping:
                keep_progress(start)
                raise TrainingStopped(f"stopped after {start} of {len(texts)} texts")
            began = time.monotonic()
            chunk = texts[start : start + BATCH]
            rows[at[start : start + BATCH]] = self._embed_layers(chunk)
            took = time.monotonic() - began
            self.embedded += len(chunk)
            if began - saved >= CHECKPOINT_SECONDS and start + BATCH < len(texts):
                keep_progress(start + BATCH)
                saved = time.monotonic()
        log.info(
            "namespace %s: embedded the layer pools of %d texts for its head in %.1f s "
            "(%.1f s of it pausing)",
            namespace,
            len(texts),
            time.monotonic() - started,
            self.paused() - paused,
        )

    def sweep(self, namespaces: Collection[str]) -> None:
        """Remove stale pools files from disk, of namespaces not among `namespaces` (the
        store's) too (`PoolsFiles.sweep`)."""
        if self._files is not None:
            self._files.sweep(namespaces)

    def kept(self, namespace: str) -> int:
        with self._lock:
            kept = self._kept.get(namespace)
        return len(kept.digests) if kept is not None else 0
