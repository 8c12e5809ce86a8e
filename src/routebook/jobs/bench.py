"""`routebook bench`: how fast is Decide, and what does it cost, at a given index size?

It fills a namespace in a fresh store with real text (the datasets under ../shared/datasets,
varied deterministically to reach the size), starts a real server on loopback, and measures
Decide latency and throughput at several concurrencies over gRPC, a repeated (cached) query,
RecordOutcome throughput, index search alone (with recall@10 against exact search when the
index is approximate), the server's RSS and start-up time from a snapshot.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from routebook.embed import Embedder

VARIATIONS = (
    "",
    "hi, ",
    "quick question: ",
    "please help: ",
    "urgent - ",
    "hello team, ",
    "one more thing: ",
    "sorry to bother you, ",
)
SUFFIXES = (
    "",
    " thanks",
    " asap",
    " (again)",
    " please",
    " thank you!",
    " for my account",
    " today",
)


@dataclass(slots=True)
class LatencyRow:
    concurrency: int
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_per_s: float


@dataclass(slots=True)
class BenchResult:
    size: int
    index_kind: str
    decide: list[LatencyRow] = field(default_factory=list)
    cached_p50_ms: float = 0.0
    record_outcome_per_s: float = 0.0
    search_p50_ms: float = 0.0
    search_p99_ms: float = 0.0
    recall_at_10: float | None = None
    rss_mb: float = 0.0
    startup_from_snapshot_s: float = 0.0
    fill_s: float = 0.0
    query_chars_mean: float = 0.0


def real_texts(datasets: Path) -> list[str]:
    """Query-like texts from the shared datasets, deduplicated, in a fixed order."""
    texts: dict[str, None] = {}
    for name, key in (
        ("clinc150/train.jsonl", "text"),
        ("banking77/train.jsonl", "text"),
        ("routellm/mmlu.dev_index.jsonl", "prompt"),
        ("routellm/gsm8k.dev_index.jsonl", "prompt"),
    ):
        path = datasets / name
        if not path.exists():
            continue
        # split("\n"), not splitlines(): texts may hold U+2028 and friends.
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                texts[str(json.loads(line)[key])[:500]] = None
    if not texts:
        raise FileNotFoundError(f"no dataset texts under {datasets}")
    return list(texts)


def varied(texts: Sequence[str], size: int) -> Iterator[str]:
    """`size` distinct texts: the real ones, then deterministic variations of them."""
    produced = 0
    for prefix in VARIATIONS:
        for suffix in SUFFIXES:
            for text in texts:
                if produced == size:
                    return
                yield f"{prefix}{text}{suffix}"
                produced += 1


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(call: Callable[[int], None], requests: int, concurrency: int) -> LatencyRow:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        call(i)
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            latencies.append(elapsed)

    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - wall
    return LatencyRow(
        concurrency,
        requests,
        percentile(latencies, 50),
        percentile(latencies, 95),
        percentile(latencies, 99),
        requests / wall,
    )


def run_bench(
    size: int,
    datasets: Path,
    concurrencies: Sequence[int] = (1, 8, 32, 64),
    requests: int = 400,
    catalog_file: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    embedder: Embedder | None = None,
) -> BenchResult:
    import grpc

    from routebook.config import load_settings
    from routebook.embed.sentence import SentenceTransformerEmbedder
    from routebook.index import NamespaceIndex
    from routebook.routefiles import load_route_file
    from routebook.server.app import build_server
    from routebook.service.examples import ExampleInput
    from routebook.v1 import router_pb2 as pb
    from routebook.v1 import router_pb2_grpc
    from routebook.wiring import build

    texts = real_texts(datasets)
    # Fresh texts for every concurrency level, so no level is served from the cache; sampled
    # across all the datasets (short intents and long benchmark prompts alike), seeded.
    needed = requests * len(concurrencies)
    sample = random.Random(20261124).sample(texts, min(needed, len(texts)))
    queries = [f"could you tell me: {t}" for t in sample]
    if len(queries) < needed:
        raise ValueError(f"{len(queries)} query texts for {needed} requests: lower --requests")
    fill = list(varied(texts, size))
    workdir = Path(tempfile.mkdtemp(prefix="routebook-bench-"))
    routes = catalog_file or Path(__file__).resolve().parents[3] / "routes" / "default.yaml"
    catalog = load_route_file(routes)
    settings = load_settings(
        {
            "database_url": f"sqlite:///{workdir / 'bench.db'}",
            "routes_dir": workdir / "none",
            "snapshot_dir": workdir / "snapshots",
            "decision_log": "",
            "port": 0,
            "workers": max(concurrencies) + 8,
        }
    )
    model = embedder if embedder is not None else SentenceTransformerEmbedder()
    app = build(settings, embedder=model)
    app.examples.sync_routes([(routes, catalog)])
    best = catalog.to_catalog().names[0]

    started = time.perf_counter()
    for start in range(0, len(fill), 10_000):
        chunk = fill[start : start + 10_000]
        app.examples.upsert(catalog.namespace, [ExampleInput(t, None, best) for t in chunk])
        progress(f"filled {min(start + 10_000, len(fill))}/{len(fill)}")
    fill_s = time.perf_counter() - started
    status = app.reindexer.run(app.reindexer.start(None, None), None, None, reembed=False)
    progress(f"snapshot generation {status.generation}")
    app.close()

    started = time.perf_counter()
    app = build(settings, embedder=model)
    startup = time.perf_counter() - started
    index = app.registry.get(catalog.namespace)
    result = BenchResult(
        size=len(index),
        index_kind=str(index.kind),
        fill_s=fill_s,
        startup_from_snapshot_s=startup,
        query_chars_mean=statistics.fmean(len(q) for q in queries),
    )

    running = build_server(app, host="127.0.0.1", port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    router = router_pb2_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]

    def decide(text: str) -> pb.DecideResponse:
        request = pb.DecideRequest(
            namespace=catalog.namespace, messages=[pb.Message(role="user", content=text)]
        )
        response: pb.DecideResponse = router.Decide(request, timeout=60)
        return response

    decisions: list[str] = []

    def decide_into(batch: list[str]) -> Callable[[int], None]:
        return lambda i: decisions.append(decide(batch[i]).decision_id)

    def decide_cached(_i: int) -> None:
        decide(queries[0])

    for level, concurrency in enumerate(concurrencies):
        batch = queries[level * requests : (level + 1) * requests]
        row = measure(decide_into(batch), len(batch), concurrency)
        result.decide.append(row)
        progress(f"decide c={concurrency}: p50 {row.p50_ms:.1f} ms, {row.throughput_per_s:.0f}/s")
    decide(queries[0])
    result.cached_p50_ms = measure(decide_cached, 200, 1).p50_ms

    ids = decisions[:requests]

    def record(i: int) -> None:
        router.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome_id=f"bench-{i}", decision_id=ids[i], model=best, quality=1.0
            ),
            timeout=60,
        )

    result.record_outcome_per_s = measure(record, len(ids), 16).throughput_per_s

    vectors = model.embed(queries[:300])
    search_ms = []
    for vector in vectors:
        started = time.perf_counter()
        index.search(vector, 10)
        search_ms.append((time.perf_counter() - started) * 1000)
    result.search_p50_ms = percentile(search_ms, 50)
    result.search_p99_ms = percentile(search_ms, 99)
    if str(index.kind) != "flat":
        result.recall_at_10 = recall_against_exact(
            index, app, catalog.namespace, vectors, NamespaceIndex
        )
    result.rss_mb = rss_mb()
    channel.close()
    running.stop(1).wait()
    app.close()
    return result


def recall_against_exact(
    index: object, app: object, namespace: str, queries: np.ndarray, flat_type: type
) -> float:
    """Recall@10 of the serving index against exact search over the same stored vectors."""
    from routebook.service.indexing import IndexBuilder

    builder = IndexBuilder(app.store, app.embedder)  # type: ignore[attr-defined]
    info = app.directory.resolve(namespace)  # type: ignore[attr-defined]
    exact = builder.build(info.id, kind="flat").index
    hits = 0
    for vector in queries:
        truth = {n.facts.example_id for n in exact.search(vector, 10)}
        found = {n.facts.example_id for n in index.search(vector, 10)}  # type: ignore[attr-defined]
        hits += len(truth & found)
    return hits / (10 * len(queries))


def as_markdown(result: BenchResult, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Index: {result.size} examples, kind {result.index_kind}; fill {result.fill_s:.0f} s; "
        f"start-up from snapshot {result.startup_from_snapshot_s:.1f} s; "
        f"RSS {result.rss_mb:.0f} MB; query texts {result.query_chars_mean:.0f} characters on "
        "average",
        "",
        "| concurrency | requests | p50 ms | p95 ms | p99 ms | decisions/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.decide:
        lines.append(
            f"| {row.concurrency} | {row.requests} | {row.p50_ms:.1f} | "
            f"{row.p95_ms:.1f} | {row.p99_ms:.1f} | {row.throughput_per_s:.0f} |"
        )
    recall = f"{result.recall_at_10:.3f}" if result.recall_at_10 is not None else "exact (flat)"
    lines += [
        "",
        f"- cached query text, Decide p50: {result.cached_p50_ms:.2f} ms",
        f"- RecordOutcome by decision id, concurrency 16: {result.record_outcome_per_s:.0f}/s",
        f"- index search alone: p50 {result.search_p50_ms:.2f} ms, p99 "
        f"{result.search_p99_ms:.2f} ms; recall@10 {recall}",
    ]
    return "\n".join(lines) + "\n"


def to_json(result: BenchResult) -> str:
    return json.dumps(asdict(result), indent=2)
