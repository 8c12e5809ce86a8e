"""A namespace's kept layer pools on disk, so that a restarted server does not embed them again.

Why: the pools of a head's training sample (`service/head_layers.py`) take the model minutes
to embed at the largest sample (50,000 texts), and a restart lost them. They are a cache by
text: a text's pools depend only on the text and the model, so any complete file of the
right model is correct, whichever server (replica, earlier process) wrote it last.

One file per namespace and embedding model, in the store's snapshot folder::

    <snapshot_dir>/store-<id>/<namespace>/layers-<sha256 of the model id, 16 hex>.npz

The model id (float32 and int8 give different pools) is in the name, so a server never opens
another model's file, and inside it, checked on reading. The file is an uncompressed npz,
read without pickle: `digests` (n, 32) uint8, the sha256 of each text (uint8, not numpy's
fixed-width bytes, which drop a digest's trailing zero bytes when read back), `pools` (n,
width) float16, `model_id` and `format`. It is written to a temporary file, fsynced, and
renamed over the old one, so a reader sees the old file or the new one. A file that cannot be
used (truncated, damaged: npz members carry a CRC, of another model or width) is ignored with
a warning, and the texts are embedded again.

The file is rewritten whole after each training that changed the sample (270 MB, 0.3 s at
the largest): appending would need a format of its own and a compaction, and trainings are
spaced out by `service/heads.py` (at least ten times a training's work apart).

Files no server uses any more are removed once untouched for `STALE_POOLS_SECONDS` (a week),
each as big as its sample: at each training of a namespace, another model's file beside its
own, and at a server's start, those and the files of namespaces no longer in the store. A
server touches its own file at each training, so a replica still serving the old model in a
rolling upgrade keeps its file as long as its namespace trains once a week (at worst a
replica restarted on a model whose file went embeds its sample again: it is a cache); and a
file just written by another replica for a namespace this server has not seen yet is recent.
routebook has no way to delete a namespace: one deleted in the store by hand leaves its
folder, whose index snapshots stay (nothing loads them any more) and whose pools go. Temp
files of killed writes go after `STALE_TEMP_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numpy.lib.npyio import NpzFile

from routebook.index.snapshot import namespace_folder

log = logging.getLogger(__name__)

#: Age past which a pools file's temp file is a leftover of a killed write, not one under way.
STALE_TEMP_SECONDS = 600.0
#: Age past which a pools file no server uses is removed: another model's, or a namespace's
#: that left the store. A server touches its own at each training (the module docstring says
#: what that keeps).
STALE_POOLS_SECONDS = 7 * 24 * 3600.0

FORMAT = 1
DIGEST_BYTES = 32


@dataclass(frozen=True, slots=True)
class KeptPools:
    """Layer pools by text: row i of `rows` is the pools of the text whose sha256 is
    `digests[i]`."""

    digests: list[bytes]
    rows: npt.NDArray[np.float16]


@dataclass(frozen=True, slots=True)
class PoolsFiles:
    """Where one store's namespaces keep their training texts' pools of one model."""

    folder: Path  # the store's folder in snapshot_dir (`index.snapshot.store_folder`)
    model_id: str

    @property
    def name(self) -> str:
        """This model's file name in each namespace's folder."""
        return f"layers-{hashlib.sha256(self.model_id.encode('utf-8')).hexdigest()[:16]}.npz"

    def path(self, namespace: str) -> Path:
        return namespace_folder(self.folder, namespace) / self.name

    def tidy(self, namespace: str) -> None:
        """At each training of the namespace: mark its file in use (its modification time),
        and remove what is stale beside it (`_remove_unused`)."""
        try:
            path = self.path(namespace)
        except ValueError:
            return
        with contextlib.suppress(OSError):  # none yet, or not ours to touch: nothing to mark
            os.utime(path)
        _remove_unused(path.parent, path.name)

    def sweep(self, namespaces: Collection[str]) -> None:
        """Remove the stale pools of every namespace folder of the store, those of folders of
        none of `namespaces` (the store's, read at start) included: routebook deletes no
        namespace, but one deleted in the store by hand leaves its folder behind."""
        try:
            folders = [entry for entry in self.folder.iterdir() if entry.is_dir()]
        except OSError:  # no folder yet (nothing kept), or unreadable: nothing to sweep
            return
        for folder in folders:
            if not folder.name.startswith("."):
                _remove_unused(folder, self.name if folder.name in namespaces else None)

    def read(self, namespace: str, width: int) -> KeptPools | None:
        """The namespace's kept pools (rows of `width`); None when there is no usable file
        (said in the log)."""
        try:
            path = self.path(namespace)
        except ValueError as exc:
            log.warning("namespace %r: its layer pools are not kept on disk: %s", namespace, exc)
            return None
        try:
            # Our own handle: np.load leaves its own open when a damaged file fails to load.
            with path.open("rb") as handle:
                npz = np.load(handle, allow_pickle=False)
                if not isinstance(npz, NpzFile):
                    raise ValueError("not an npz file")
                pools = self._checked(
                    str(npz["model_id"][()]),
                    int(npz["format"][()]),
                    npz["digests"],
                    npz["pools"],
                    width,
                )
        except FileNotFoundError:
            log.info("namespace %s: no layer pools kept at %s yet", namespace, path)
            return None
        except Exception as exc:  # a cache: whatever is wrong with it, its texts are embedded
            log.warning(
                "namespace %s: ignoring the layer pools kept at %s (its texts are embedded "
                "again): %s",
                namespace,
                path,
                exc,
            )
            return None
        log.info("namespace %s: read the layer pools of %d texts", namespace, len(pools.digests))
        return pools

    def _checked(
        self,
        model_id: str,
        version: int,
        digests: npt.NDArray[np.uint8],
        rows: npt.NDArray[np.float16],
        width: int,
    ) -> KeptPools:
        if version != FORMAT:
            raise ValueError(f"format {version}, this version of routebook reads {FORMAT}")
        if model_id != self.model_id:
            raise ValueError(f"made with model {model_id!r}, not {self.model_id!r}")
        if digests.dtype != np.uint8 or digests.ndim != 2 or digests.shape[1] != DIGEST_BYTES:
            raise ValueError(f"digests are {digests.dtype} {digests.shape}, not (n, 32) uint8")
        if rows.dtype != np.float16 or rows.shape != (len(digests), width):
            raise ValueError(
                f"pools are {rows.dtype} {rows.shape}, not float16 ({len(digests)}, {width})"
            )
        blob = digests.tobytes()
        return KeptPools(
            [blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES)], rows
        )

    def write(self, namespace: str, pools: KeptPools) -> None:
        """Replace the namespace's file with `pools`; a failure is logged, not raised: the
        pools are still in memory, and only a restart would embed them again."""
        try:
            path = self.path(namespace)
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                with temp.open("wb") as out:
                    np.savez(
                        out,
                        format=np.array(FORMAT),
                        model_id=np.array(self.model_id),
                        digests=np.frombuffer(b"".join(pools.digests), dtype=np.uint8).reshape(
                            -1, DIGEST_BYTES
                        ),
                        pools=pools.rows,
                    )
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, path)
            finally:
                temp.unlink(missing_ok=True)
        except (OSError, ValueError) as exc:
            log.warning("namespace %s: could not keep its layer pools on disk: %s", namespace, exc)


def _remove_unused(folder: Path, keep: str | None) -> None:
    """Delete from a namespace's folder the pools files other than `keep` that no server used
    for `STALE_POOLS_SECONDS` (each as big as its sample, and nothing else removes them), and
    the temp files of killed writes. Only old ones: a replica sharing the folder may be
    using another model's file, or writing a temp file right now (a write takes a second)."""
    now = time.time()
    stale = [(f, STALE_POOLS_SECONDS) for f in folder.glob("layers-*.npz") if f.name != keep]
    stale += [(f, STALE_TEMP_SECONDS) for f in folder.glob(".layers-*.npz.*.tmp")]
    for path, most in stale:
        try:
            age = now - path.stat().st_mtime
            if age > most:
                path.unlink(missing_ok=True)
                log.info("removed %s, unused for %.1f hours", path, age / 3600)
        except OSError:  # gone meanwhile, or not ours to remove: the next training tries again
            continue
