"""Index search alone, at any size: build time, search latency, recall@10, memory, snapshots.

Why a module of its own: the figures that decide the index kind at a million examples (issue
#7) come from the index without the server, the model or gRPC, and embedding a million texts
takes the shared CPU most of an hour. So the vectors are made from real embeddings: each of
the cached sentence embeddings (`embedcache`) is copied with a little seeded gaussian noise and
renormalised, which keeps the neighbourhood structure of real text (clusters of paraphrases,
intents, subjects) at any size; queries are real embeddings held out of the copies. Facts carry
texts of realistic length made from real text, so their memory is what a server's would be.

Start-up and memory are measured in a fresh process (`python -m routebook.jobs.bench_index
load …`) that only reads the snapshot, as a server does at start, so nothing the bench itself
holds (the vectors, the exact answers) inflates the RSS.

Usage from `routebook bench`::

    real = real_embeddings()
    base, queries = split_queries(real, 1000)
    vectors = synthetic_vectors(base, 1_000_000)
    facts = synthetic_facts(1_000_000, texts)
    result = bench_index(vectors, queries, facts, kind="ivf")
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from routebook.domain import ExampleFacts, ObservedOutcome, Source
from routebook.index import NamespaceIndex
from routebook.index.kinds import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, IndexKind, parse_kind
from routebook.index.snapshot import SnapshotMeta, load_snapshot, save_snapshot
from routebook.jobs.embedcache import default_cache_dir

Vectors = npt.NDArray[np.float32]

BENCH_MODEL_ID = "bench-synthetic"
_NAMESPACE = "bench"
_ROUTES = tuple(f"route-{i:02d}" for i in range(24))
_MODELS = ("small", "medium", "large")
_PREFIXES = ("", "hi, ", "quick question: ", "please help: ", "hello there, ", "urgent: ")
_SUFFIXES = (
    " thanks!",
    " (asked again today)",
    " please answer briefly.",
    " any idea?",
    " thank you so much for your help.",
)
_MIN_TEXT, _MAX_TEXT = 60, 130


@dataclass(frozen=True, slots=True)
class IndexBenchResult:
    """One index measured; times in seconds or milliseconds, sizes in bytes.

    `recall_at_10` is against exact search (1.0 for flat). The start-up and memory figures come
    from a fresh process loading the snapshot; `rss_bytes` is what it holds afterwards (FAISS
    and numpy imported, no model), `peak_rss_bytes` its high-water mark while loading.
    """

    size: int
    kind: str
    k: int
    queries: int
    threads: int
    nprobe: int
    ef_search: int
    build_seconds: float
    search_p50_ms: float
    search_p99_ms: float
    recall_at_10: float
    snapshot_bytes: int
    save_seconds: float
    load_seconds: float | None = None
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    baseline_rss_bytes: int | None = None

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


# -- data ---------------------------------------------------------------------------------


def real_embeddings(cache_dir: Path | None = None) -> Vectors:
    """The vectors of one embedding cache (`embeddings-*.npz`), deduplicated, in a fixed order.

    One cache only, the one holding the most vectors: caches of different models (float32 and
    int8 share a dimension) hold near-copies of the same texts, which mixed would look like
    tight clusters no real index has. Raises FileNotFoundError when there is none: run an
    evaluation first.
    """
    folder = cache_dir or default_cache_dir()
    chunks = []
    for path in sorted(folder.glob("embeddings-*.npz")):
        with np.load(path) as data:
            order = np.argsort(data["keys"])  # by text hash: independent of insertion order
            chunks.append(np.asarray(data["vectors"], dtype=np.float32)[order])
    if not chunks:
        raise FileNotFoundError(f"no cached embeddings (embeddings-*.npz) in {folder}")
    vectors: Vectors = np.unique(max(chunks, key=len), axis=0)
    return vectors


def split_queries(real: Vectors, n_queries: int, *, seed: int = 0) -> tuple[Vectors, Vectors]:
    """(base, queries): `n_queries` real vectors held out from those the index is made of."""
    if not 0 < n_queries < len(real):
        raise ValueError(f"cannot hold out {n_queries} queries from {len(real)} vectors")
    order = np.random.default_rng(seed).permutation(len(real))
    return real[order[n_queries:]], real[order[:n_queries]]


def synthetic_vectors(
    base: Vectors, n: int, *, seed: int = 0, noise: tuple[float, float] = (0.15, 0.45)
) -> Vectors:
    """`n` unit vectors: the base vectors in turn (then at random), each plus gaussian noise of
    norm drawn from `noise`, renormalised. The same arguments give the same vectors."""
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    step = 65_536
    for start in range(0, n, step):
        m = min(step, n - start)
        rng = np.random.default_rng([seed, start])
        rows = np.arange(start, start + m) % len(base)
        if start + m > len(base):  # past one pass over the base: random picks
            rows = np.where(
                np.arange(start, start + m) < len(base), rows, rng.integers(0, len(base), m)
            )
        scale = rng.uniform(*noise, (m, 1)).astype(np.float32) / np.float32(np.sqrt(dim))
        x = base[rows] + scale * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def synthetic_facts(n: int, texts: Sequence[str], *, seed: int = 0) -> list[ExampleFacts]:
    """`n` examples (ids 1…n) with texts of 60 to 130 characters made from `texts`, routes, best
    models and 0 to 3 outcomes, as a busy namespace would hold."""
    if not texts:
        raise ValueError("synthetic_facts needs some real texts to vary")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(texts), n).tolist()
    prefixes = rng.integers(0, len(_PREFIXES), n).tolist()
    suffixes = rng.integers(0, len(_SUFFIXES), n).tolist()
    routes = rng.integers(-1, len(_ROUTES), n).tolist()
    best = rng.integers(-1, len(_MODELS), n).tolist()
    n_outcomes = rng.integers(0, 4, n).tolist()
    qualities = rng.random((n, 3)).tolist()
    counts = rng.integers(1, 20, (n, 3)).tolist()
    facts = []
    for i in range(n):
        text = _PREFIXES[prefixes[i]] + texts[picks[i]].strip()
        suffix = suffixes[i]
        while len(text) < _MIN_TEXT:  # short intents grow by polite padding, as people write
            text += _SUFFIXES[suffix % len(_SUFFIXES)]
            suffix += 1
        facts.append(
            ExampleFacts(
                example_id=i + 1,
                text=text[:_MAX_TEXT],
                route=_ROUTES[routes[i]] if routes[i] >= 0 else None,
                source=Source.HISTORY if i % 4 else Source.REFERENCE,
                best_model=_MODELS[best[i]] if best[i] >= 0 else None,
                outcomes=tuple(
                    ObservedOutcome(_MODELS[j], qualities[i][j], counts[i][j])
                    for j in range(n_outcomes[i])
                ),
            )
        )
    return facts


def dataset_texts(folder: Path, limit: int = 200_000) -> list[str]:
    """The `text` (or `prompt`) fields of the JSON-lines files under `folder`, up to `limit`."""
    found: list[str] = []
    for path in sorted(folder.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                text = record.get("text") or record.get("prompt")
                if isinstance(text, str) and text.strip():
                    found.append(text)
                if len(found) >= limit:
                    return found
    return found


def exact_neighbours(vectors: Vectors, queries: Vectors, k: int) -> npt.NDArray[np.int64]:
    """Rows of `vectors` nearest each query by inner product, by brute force (all threads)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    _sims, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows.astype(np.int64)


# -- measuring ----------------------------------------------------------------------------


def bench_index(
    vectors: Vectors,
    queries: Vectors,
    facts: Sequence[ExampleFacts] | None = None,
    *,
    kind: IndexKind | str = IndexKind.IVF,
    k: int = 10,
    nprobe: int = DEFAULT_NPROBE,
    ef_search: int = DEFAULT_EF_SEARCH,
    threads: int = 1,
    snapshot_dir: Path | None = None,
    measure_load: bool = True,
) -> IndexBenchResult:
    """Build an index of `kind` over `vectors` (example i+1 is row i), time `k`-NN searches of
    `queries` one at a time through `NamespaceIndex.search` (facts included, as Decide does),
    compare with exact search, save a snapshot and, with `measure_load`, load it in a fresh
    process for start-up time and RSS.

    FAISS runs on `threads` OpenMP threads for the build and the searches (the server uses
    `faiss_threads`, 1 by default); the exact answers use every core.
    """
    kind = parse_kind(kind)
    n, dim = vectors.shape
    if facts is None:
        facts = [
            ExampleFacts(i + 1, f"example {i + 1}", None, Source.HISTORY, None) for i in range(n)
        ]
    if len(facts) != n:
        raise ValueError(f"{len(facts)} facts for {n} vectors")
    exact = exact_neighbours(vectors, queries, k) + 1 if kind is not IndexKind.FLAT else None
    previous_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        started = time.perf_counter()
        index = NamespaceIndex.build(dim, kind, facts, vectors, nprobe=nprobe, ef_search=ef_search)
        build_seconds = time.perf_counter() - started
        built_kind = index.kind  # flat when there were too few vectors to train IVF
        latencies, found = _search_all(index, queries, k)
    finally:
        faiss.omp_set_num_threads(previous_threads)
    recall = 1.0
    if exact is not None:
        hits = sum(len(set(f) & set(e)) for f, e in zip(found, exact.tolist(), strict=True))
        recall = hits / (k * len(queries))
    with tempfile.TemporaryDirectory(prefix="bench-index-") as scratch:
        folder = snapshot_dir or Path(scratch)
        started = time.perf_counter()
        path = save_snapshot(index, folder, _meta(index))
        save_seconds = time.perf_counter() - started
        snapshot_bytes = sum(p.stat().st_size for p in path.iterdir())
        del index
        loaded = _load_in_fresh_process(path, dim, nprobe, ef_search) if measure_load else {}
    return IndexBenchResult(
        size=n,
        kind=str(built_kind),
        k=k,
        queries=len(queries),
        threads=threads,
        nprobe=nprobe,
        ef_search=ef_search,
        build_seconds=build_seconds,
        search_p50_ms=float(np.percentile(latencies, 50)),
        search_p99_ms=float(np.percentile(latencies, 99)),
        recall_at_10=recall,
        snapshot_bytes=snapshot_bytes,
        save_seconds=save_seconds,
        load_seconds=loaded.get("load_seconds"),
        rss_bytes=_int_or_none(loaded.get("rss_bytes")),
        peak_rss_bytes=_int_or_none(loaded.get("peak_rss_bytes")),
        baseline_rss_bytes=_int_or_none(loaded.get("baseline_rss_bytes")),
    )


def _search_all(
    index: NamespaceIndex, queries: Vectors, k: int
) -> tuple[npt.NDArray[np.float64], list[list[int]]]:
    latencies = np.empty(len(queries), dtype=np.float64)
    found: list[list[int]] = []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        neighbours = index.search(query, k)
        latencies[i] = (time.perf_counter() - started) * 1000
        found.append([n.facts.example_id for n in neighbours])
    return latencies, found


def _meta(index: NamespaceIndex) -> SnapshotMeta:
    return SnapshotMeta(
        namespace=_NAMESPACE,
        generation=index.generation,
        embedding_model_id=BENCH_MODEL_ID,
        dim=index.dim,
        high_water_example_id=0,
        high_water_outcome_id=0,
        kind=str(index.kind),
        count=len(index),
    )


def _load_in_fresh_process(path: Path, dim: int, nprobe: int, ef_search: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        __name__,
        "load",
        str(path),
        str(dim),
        str(nprobe),
        str(ef_search),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    loaded: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def memory_status() -> dict[str, int]:
    """This process's VmRSS and VmHWM (peak) from /proc, in bytes (empty off Linux)."""
    wanted = {"VmRSS": "rss_bytes", "VmHWM": "peak_rss_bytes"}
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in wanted:
                    found[wanted[key]] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def _load_main(path: str, dim: str, nprobe: str, ef_search: str) -> None:
    """Child process: load the snapshot as a server would and print timings and memory."""
    faiss.omp_set_num_threads(1)
    baseline = memory_status().get("rss_bytes", 0)
    started = time.perf_counter()
    index, _meta = load_snapshot(
        Path(path), BENCH_MODEL_ID, int(dim), nprobe=int(nprobe), ef_search=int(ef_search)
    )
    seconds = time.perf_counter() - started
    report: dict[str, float] = {"load_seconds": seconds, "baseline_rss_bytes": baseline}
    report.update(memory_status())
    report["examples"] = len(index)
    print(json.dumps(report))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "load":
        _load_main(*sys.argv[2:])
    else:
        raise SystemExit(f"usage: python -m {__name__} load PATH DIM NPROBE EF_SEARCH")
    os._exit(0)  # skip tearing down a large index: the figures are printed


def run_index_bench(
    size: int, datasets: Path, kind: str = "ivf", queries: int = 1000
) -> IndexBenchResult:
    """`routebook bench --index-only`: an index of `size` made from the cached real embeddings."""
    base, held_out = split_queries(real_embeddings(), queries)
    vectors = synthetic_vectors(base, size)
    facts = synthetic_facts(size, dataset_texts(datasets))
    return bench_index(vectors, held_out, facts, kind=kind)


def index_markdown(result: IndexBenchResult, command: str) -> str:
    mb = 1024 * 1024
    load = "not measured" if result.load_seconds is None else f"{result.load_seconds:.1f} s"
    rss = "" if result.rss_bytes is None else f"{result.rss_bytes / mb:.0f} MB"
    peak = "" if result.peak_rss_bytes is None else f"{result.peak_rss_bytes / mb:.0f} MB"
    return "\n".join(
        [
            f"Command: `{command}`",
            "",
            "| examples | kind | build | search p50 | search p99 | recall@10 | snapshot | "
            "snapshot save | snapshot load | RSS after load (peak) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {result.size:,} | {result.kind} (nprobe {result.nprobe}) | "
            f"{result.build_seconds:.0f} s | {result.search_p50_ms:.2f} ms | "
            f"{result.search_p99_ms:.2f} ms | {result.recall_at_10:.3f} | "
            f"{result.snapshot_bytes / mb:.0f} MB | {result.save_seconds:.1f} s | {load} | "
            f"{rss} ({peak}) |",
            "",
        ]
    )
