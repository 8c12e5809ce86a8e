"""`routebook bench`: how fast is Decide, and what does it cost, at a given index size?

It fills a namespace in a fresh store with real text (the datasets under ../shared/datasets,
varied deterministically to reach the size; their vectors from the model, or with
`fill_vectors="derived"` made from the base texts' vectors, see `bench_fill`), starts a real
server on loopback, and measures Decide latency and throughput at several concurrencies over
gRPC, a repeated (cached) query, RecordOutcome throughput, index search alone (with recall@10
against exact search when the index is approximate), the server's RSS and start-up time from a
snapshot.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from routebook.decide.head import MIN_MODEL_EXAMPLES
from routebook.embed import Embedder
from routebook.errors import ConfigError, InvalidArgument, Unavailable

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


#: Longest wait for a namespace's head before the load starts (none comes when heads are off).
HEAD_WAIT_S = 300.0


@dataclass(slots=True)
class LatencyRow:
    concurrency: int
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_per_s: float
    #: CPU time per call of the load generator (this process), and of the server process when
    #: it runs on this machine (else None): on a shared machine both count against throughput.
    client_cpu_ms: float = 0.0
    server_cpu_ms: float | None = None
    #: Mean latency seen by the client, beside the server's own means below.
    mean_ms: float = 0.0
    #: Mean wall time per Decide inside the server (from its metrics, when the bench started
    #: it), and of its embed and search stages; the rest of the client's latency is gRPC and
    #: waiting for a worker thread.
    server_ms: float | None = None
    embed_ms: float | None = None
    search_ms: float | None = None


@dataclass(slots=True)
class BenchResult:
    size: int
    index_kind: str
    store: str = "sqlite"
    decide: list[LatencyRow] = field(default_factory=list)
    cached_p50_ms: float = 0.0
    record_outcome_per_s: float = 0.0
    search_p50_ms: float = 0.0
    search_p99_ms: float = 0.0
    recall_at_10: float | None = None
    #: The server process's resident memory after the load, and its peak.
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    #: From starting `routebook serve` on the filled store to health SERVING (imports, model,
    #: index from its snapshot, catch-up).
    startup_s: float = 0.0
    #: Loading the namespaces from their snapshots alone (in the bench process).
    startup_from_snapshot_s: float = 0.0
    #: After SERVING, until Decide answers with the namespace's learned head; None when no
    #: head came (heads off, a namespace too small for one, or not within HEAD_WAIT_S).
    head_ready_s: float | None = None
    #: Filling the namespace, embedding included.
    fill_s: float = 0.0
    #: Where the fill's vectors came from: "model" (every text embedded) or "derived" (only
    #: the distinct base texts embedded; their variations' vectors derived, see `bench_fill`).
    fill_vectors: str = "model"
    #: The model id the fill and the server embedded with (e.g. "all-MiniLM-L6-v2+int8.2:384").
    embedding_model: str = "unknown"
    #: Texts written by the fill, and how many of them the model embedded.
    fill_texts: int = 0
    fill_model_texts: int = 0
    query_chars_mean: float = 0.0


#: The shared datasets' files whose texts `real_texts` reads, and the key of the text.
DATASET_FILES = (
    ("clinc150/train.jsonl", "text"),
    ("banking77/train.jsonl", "text"),
    ("routellm/mmlu.dev_index.jsonl", "prompt"),
    ("routellm/gsm8k.dev_index.jsonl", "prompt"),
)


def real_texts(datasets: Path) -> list[str]:
    """Query-like texts from the shared datasets, deduplicated, in a fixed order."""
    texts: dict[str, None] = {}
    for name, key in DATASET_FILES:
        path = datasets / name
        if not path.exists():
            continue
        # split("\n"), not splitlines(): texts may hold U+2028 and friends.
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                texts[str(json.loads(line)[key])[:500]] = None
    if not texts:
        expected = ", ".join(name for name, _key in DATASET_FILES)
        raise ConfigError(f"no dataset texts under {datasets}: it holds none of {expected}")
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


def rss_mb(pid: int | str = "self", field_name: str = "VmRSS") -> float:
    """Resident memory of a process in MB (VmHWM for the peak), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_cpu_s(pid: int | str = "self") -> float:
    """User plus system CPU seconds of a process, all threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class DecideSeconds:
    """Running totals of a server's Decide histograms, read from its /metrics."""

    count: float
    total_s: float
    embed_s: float
    search_s: float

    def minus(self, earlier: DecideSeconds) -> DecideSeconds:
        return DecideSeconds(
            self.count - earlier.count,
            self.total_s - earlier.total_s,
            self.embed_s - earlier.embed_s,
            self.search_s - earlier.search_s,
        )


def decide_seconds(metrics_url: str) -> DecideSeconds:
    """Sum the server's Decide time histograms over namespaces. A URL that gives no metrics
    is an error that names it (it was a urllib traceback, after the load had started)."""
    import http.client
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    fix = "give --metrics the server's metrics URL, http://HOST:METRICS_PORT/metrics"
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as reply:
            families = list(text_string_to_metric_families(reply.read().decode()))
    except ValueError as exc:  # not a URL, or not Prometheus text
        raise InvalidArgument(f"--metrics {metrics_url!r}: {str(exc)[:200]}; {fix}") from None
    except (OSError, http.client.HTTPException) as exc:
        why = exc.reason if type(exc) is urllib.error.URLError else exc
        raise Unavailable(f"cannot read the metrics at {metrics_url}: {why}; {fix}") from None
    sums = {"count": 0.0, "total": 0.0, "embed": 0.0, "search": 0.0}
    for family in families:
        for sample in family.samples:
            if sample.name == "routebook_decide_latency_seconds_count":
                sums["count"] += sample.value
            elif sample.name == "routebook_decide_latency_seconds_sum":
                sums["total"] += sample.value
            elif sample.name == "routebook_decide_stage_seconds_sum":
                sums[sample.labels["stage"]] += sample.value
    return DecideSeconds(sums["count"], sums["total"], sums["embed"], sums["search"])


def measure(
    call: Callable[[int], None],
    requests: int,
    concurrency: int,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> LatencyRow:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        call(i)
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            latencies.append(elapsed)

    server_cpu = process_cpu_s(server_pid) if server_pid is not None else 0.0
    stages = decide_seconds(metrics_url) if metrics_url is not None else None
    client_cpu = time.process_time()
    wall = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - wall
    client_cpu = time.process_time() - client_cpu
    if server_pid is not None:
        server_cpu = process_cpu_s(server_pid) - server_cpu
    row = LatencyRow(
        concurrency,
        requests,
        percentile(latencies, 50),
        percentile(latencies, 95),
        percentile(latencies, 99),
        requests / wall,
        client_cpu * 1000 / requests,
        server_cpu * 1000 / requests if server_pid is not None else None,
        statistics.fmean(latencies),
    )
    if metrics_url is not None and stages is not None:
        spent = decide_seconds(metrics_url).minus(stages)
        if spent.count > 0:
            row.server_ms = spent.total_s * 1000 / spent.count
            row.embed_ms = spent.embed_s * 1000 / spent.count
            row.search_ms = spent.search_s * 1000 / spent.count
    return row


def query_texts(texts: Sequence[str], count: int) -> list[str]:
    """Fresh query texts, seeded, across all the datasets (short intents and long prompts)."""
    sample = random.Random(20261124).sample(list(texts), min(count, len(texts)))
    if len(sample) < count:
        raise ConfigError(f"{len(sample)} query texts for {count} requests: lower --requests")
    return [f"could you tell me: {t}" for t in sample]


def run_bench(
    size: int,
    datasets: Path,
    concurrencies: Sequence[int] = (1, 8, 32, 64),
    requests: int = 400,
    catalog_file: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    embedder: Embedder | None = None,
    database_url: str | None = None,
    workdir: Path | None = None,
    fill_vectors: str = "model",
    server_settings: dict[str, str] | None = None,
) -> BenchResult:
    """Fill a store, start `routebook serve` on it as a process of its own, and measure.

    The server runs in its own process, as in production: a load generator in the same process
    would compete with it for the GIL and measure itself. `fill_vectors` is "model" (every fill
    text embedded by the model) or "derived" (see `bench_fill`). `server_settings` (e.g.
    {"embed_precision": "int8"}) configure both the fill and the server, as `serve` would read
    them; the bench's own store, routes and snapshot folder take precedence.
    """
    from routebook.config import load_settings
    from routebook.index import NamespaceIndex
    from routebook.jobs.bench_fill import FILL_VECTORS, FillEmbedder, fill_namespace
    from routebook.routefiles import load_route_file
    from routebook.wiring import build, load_embedder

    if fill_vectors not in FILL_VECTORS:
        raise ValueError(f"fill_vectors {fill_vectors!r}: use one of {', '.join(FILL_VECTORS)}")
    texts = real_texts(datasets)
    # Fresh texts for every concurrency level, so no level is served from the cache.
    queries = query_texts(texts, requests * len(concurrencies))
    workdir = workdir or Path(tempfile.mkdtemp(prefix="routebook-bench-"))
    routes = catalog_file or Path(__file__).resolve().parents[3] / "routes" / "default.yaml"
    catalog = load_route_file(routes)
    values = {
        **(server_settings or {}),
        "database_url": database_url or f"sqlite:///{workdir / 'bench.db'}",
        "snapshot_dir": str(workdir / "snapshots"),
        "decision_log": "",
    }
    # In this process heads stay off: their background training would share the cores with the
    # fill and with "index search alone". The server process trains its own.
    settings = load_settings({**values, "port": 0, "head_enabled": False})
    model = embedder if embedder is not None else load_embedder(settings)
    filler = FillEmbedder(model)
    app = build(settings, embedder=filler, load_routes=False)  # the catalog file's, below
    app.examples.sync_routes([(routes, catalog)])
    best = catalog.to_catalog().names[0]

    filled = fill_namespace(
        app, filler, catalog.namespace, best, texts, size, fill_vectors, progress
    )
    reached_model = filler.model_texts
    status = app.reindexer.run(app.reindexer.start(None, None), None, None, reembed=False)
    if fill_vectors == "derived" and filler.model_texts > reached_model:
        raise RuntimeError(
            f"the reindex embedded {filler.model_texts - reached_model} examples through the "
            "model: the derived fill did not store their vectors"
        )
    progress(
        "snapshot "
        + ", ".join(f"{p.namespace} generation {p.generation}" for p in status.published)
    )
    app.close()

    started = time.perf_counter()
    app = build(settings, embedder=model)
    loaded_s = time.perf_counter() - started
    index = app.registry.get(catalog.namespace)
    result = BenchResult(
        size=len(index),
        index_kind=str(index.kind),
        store=settings.database_url.split(":", 1)[0].split("+", 1)[0],
        fill_s=filled.seconds,
        fill_vectors=fill_vectors,
        embedding_model=model.model_id,
        fill_texts=filled.texts,
        fill_model_texts=filled.model_texts,
        startup_from_snapshot_s=loaded_s,
        query_chars_mean=statistics.fmean(len(q) for q in queries),
    )
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
    app.close()
    progress(f"search alone: p99 {result.search_p99_ms:.2f} ms")
    # The fill is labelled, without routes: the server trains a success head from this many.
    heads_come = load_settings(values).head_enabled and result.size >= MIN_MODEL_EXAMPLES

    with served(values, workdir) as server:
        result.startup_s = server.startup_s
        progress(f"server serving after {server.startup_s:.1f} s")
        load_target(
            server.target,
            catalog.namespace,
            queries,
            concurrencies,
            requests,
            result,
            progress,
            # No wait for a head that cannot come (heads off, or too few examples for one).
            head_wait_s=HEAD_WAIT_S if heads_come else 0.0,
            server_pid=server.pid,
            metrics_url=server.metrics_url,
        )
        result.rss_mb = rss_mb(server.pid)
        result.peak_rss_mb = rss_mb(server.pid, "VmHWM")
    return result


def run_against(
    target: str,
    namespace: str,
    datasets: Path,
    concurrencies: Sequence[int] = (1, 8, 32, 64),
    requests: int = 400,
    progress: Callable[[str], None] = lambda _m: None,
    metrics_url: str | None = None,
) -> BenchResult:
    """Load a server that is already running and filled (`--target`): latency and throughput
    only (and, given its `metrics_url`, the time spent inside it); its size, memory and
    start-up are not visible from here. Outcomes are recorded for the decisions the bench
    made, under outcome ids starting with `bench-`."""
    if metrics_url is not None:
        decide_seconds(metrics_url)  # a wrong URL is said now, not after the load has begun
    queries = query_texts(real_texts(datasets), requests * len(concurrencies))
    result = BenchResult(
        size=0,
        index_kind="unknown",
        store="unknown",
        fill_vectors="unknown",
        query_chars_mean=statistics.fmean(len(q) for q in queries),
    )
    load_target(
        target,
        namespace,
        queries,
        concurrencies,
        requests,
        result,
        progress,
        metrics_url=metrics_url,
    )
    return result


def load_target(
    target: str,
    namespace: str,
    queries: Sequence[str],
    concurrencies: Sequence[int],
    requests: int,
    result: BenchResult,
    progress: Callable[[str], None] = lambda _m: None,
    head_wait_s: float = 0.0,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> None:
    """Decide at each concurrency, a cached query, then RecordOutcome at 16, over gRPC.

    With `head_wait_s`, first wait (that long at most) for Decide to carry the namespace's
    learned head: a server trains it in the background after start, and that training would
    otherwise share the cores with the load."""
    import grpc

    from routebook.v1 import router_pb2 as pb
    from routebook.v1 import router_pb2_grpc

    channel = grpc.insecure_channel(target)
    router = router_pb2_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]

    def decide(text: str) -> pb.DecideResponse:
        request = pb.DecideRequest(
            namespace=namespace, messages=[pb.Message(role="user", content=text)]
        )
        response: pb.DecideResponse = router.Decide(request, timeout=60)
        return response

    decisions: list[tuple[str, str]] = []  # (decision id, the model it chose)

    def decide_into(batch: Sequence[str]) -> Callable[[int], None]:
        def one(i: int) -> None:
            response = decide(batch[i])
            decisions.append((response.decision_id, response.model))

        return one

    def decide_cached(_i: int) -> None:
        decide(queries[0])

    try:
        started = time.perf_counter()
        has_head = decide(queries[-1]).HasField("head")  # the first call warms up too
        while not has_head and time.perf_counter() - started < head_wait_s:
            time.sleep(0.5)
            has_head = decide(queries[-1]).HasField("head")
        if has_head:
            result.head_ready_s = time.perf_counter() - started
            progress(f"learned head ready after {result.head_ready_s:.1f} s")
        else:
            progress("measured without a learned head")
        for level, concurrency in enumerate(concurrencies):
            batch = queries[level * requests : (level + 1) * requests]
            row = measure(decide_into(batch), len(batch), concurrency, server_pid, metrics_url)
            result.decide.append(row)
            progress(
                f"decide c={concurrency}: p50 {row.p50_ms:.1f} ms, {row.throughput_per_s:.0f}/s"
            )
        decide(queries[0])
        result.cached_p50_ms = measure(decide_cached, 200, 1).p50_ms
        stamp = uuid.uuid4().hex[:8]

        def record(i: int) -> None:
            router.RecordOutcome(
                pb.RecordOutcomeRequest(
                    outcome_id=f"bench-{stamp}-{i}",
                    decision_id=decisions[i][0],
                    model=decisions[i][1],
                    quality=1.0,
                ),
                timeout=60,
            )

        result.record_outcome_per_s = measure(record, len(decisions), 16).throughput_per_s
        progress(f"record outcome c=16: {result.record_outcome_per_s:.0f}/s")
    except grpc.RpcError as exc:  # e.g. --target down or mistyped: a line, not a traceback
        raise Unavailable(
            f"the server at {target} answered {exc.code().name}: {exc.details()}"
        ) from None
    finally:
        channel.close()


@dataclass(frozen=True, slots=True)
class ServedProcess:
    pid: int
    target: str
    startup_s: float
    metrics_url: str


@contextmanager
def served(values: dict[str, str], workdir: Path) -> Iterator[ServedProcess]:
    """`routebook serve` as a child process on a free port, configured by environment."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBOOK_")}
    env.update({f"ROUTEBOOK_{k.upper()}": v for k, v in values.items()})
    # Port 0 for both: the server picks free ports and says which (probing for a free port
    # here and passing it on would race anything else starting on this machine).
    env.update(ROUTEBOOK_METRICS_PORT="0", ROUTEBOOK_METRICS_HOST="127.0.0.1")
    log_path = workdir / "server.log"
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "routebook", "serve", "--port", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port, metrics_port = _announced_ports(process, log_path)
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with {process.returncode}: "
                        f"{log_path.read_text()[-2000:]}"
                    )
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        yield ServedProcess(
            process.pid,
            target,
            time.perf_counter() - started,
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _announced_ports(process: subprocess.Popen[bytes], log_path: Path) -> tuple[int, int]:
    """The gRPC and metrics ports the server printed once it listened."""
    while True:
        text = log_path.read_text(errors="replace")
        serving = re.search(r"serving on \S+:(\d+)\s*$", text, re.MULTILINE)
        metrics = re.search(r"metrics on http://\S+:(\d+)/metrics", text)
        if serving and metrics:
            return int(serving.group(1)), int(metrics.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {text[-2000:]}")
        time.sleep(0.05)


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
    lines = [f"Command: `{command}`", ""]
    if result.size:
        lines += [
            f"Index: {result.size} examples, kind {result.index_kind}, store {result.store}, "
            f"embedding model {result.embedding_model}; "
            f"fill {result.fill_s:.0f} s; server start-up to SERVING {result.startup_s:.1f} s "
            f"(snapshot load alone {result.startup_from_snapshot_s:.1f} s; "
            + (
                "no learned head"
                if result.head_ready_s is None
                else f"learned head ready {result.head_ready_s:.1f} s later"
            )
            + "); server RSS "
            f"{result.rss_mb:.0f} MB (peak {result.peak_rss_mb:.0f} MB)",
            "",
            fill_line(result),
            "",
        ]
    lines += [
        f"Query texts: {result.query_chars_mean:.0f} characters on average.",
        "",
        "| concurrency | requests | p50 ms | p95 ms | p99 ms | decisions/s "
        "| CPU ms per Decide: server / client "
        "| mean ms: client / in the server (its embed / search) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result.decide:
        server = f"{row.server_cpu_ms:.2f}" if row.server_cpu_ms is not None else "—"
        inside = (
            f"{row.server_ms:.1f} ({row.embed_ms:.1f} / {row.search_ms:.2f})"
            if row.server_ms is not None and row.embed_ms is not None and row.search_ms is not None
            else "—"
        )
        lines.append(
            f"| {row.concurrency} | {row.requests} | {row.p50_ms:.1f} | "
            f"{row.p95_ms:.1f} | {row.p99_ms:.1f} | {row.throughput_per_s:.0f} "
            f"| {server} / {row.client_cpu_ms:.2f} | {row.mean_ms:.1f} / {inside} |"
        )
    recall = f"{result.recall_at_10:.3f}" if result.recall_at_10 is not None else "exact (flat)"
    lines += [
        "",
        f"- cached query text, Decide p50: {result.cached_p50_ms:.2f} ms",
        f"- RecordOutcome by decision id, concurrency 16: {result.record_outcome_per_s:.0f}/s",
    ]
    if result.size:
        lines.append(
            f"- index search alone: p50 {result.search_p50_ms:.2f} ms, p99 "
            f"{result.search_p99_ms:.2f} ms; recall@10 {recall}"
        )
    return "\n".join(lines) + "\n"


def fill_line(result: BenchResult) -> str:
    """Where the fill's vectors came from, in a sentence."""
    if result.fill_vectors == "derived":
        from routebook.jobs.bench_fill import DERIVED_NOISE

        low, high = DERIVED_NOISE
        derived = result.fill_texts - result.fill_model_texts
        if derived <= 0:
            return (
                f"Fill vectors: **derived** (`--fill-vectors derived`), {result.fill_s:.0f} s; "
                f"all {result.fill_texts:,} fill texts are distinct dataset texts, embedded by "
                "the model: no vector was derived (--size is within the datasets' texts)."
            )
        return (
            f"Fill vectors: **derived** (`--fill-vectors derived`), {result.fill_s:.0f} s: "
            f"{result.fill_model_texts:,} distinct dataset texts embedded by the model; the "
            f"other {derived:,} fill texts (prefix/suffix variations of them, stored as text) "
            f"got their base text's vector plus seeded gaussian noise of norm {low} to {high}, "
            "renormalised, not their own embedding. Queries are embedded by the server's model."
        )
    return (
        f"Fill vectors: model, {result.fill_s:.0f} s: the model embedded "
        f"{result.fill_model_texts:,} of the {result.fill_texts:,} fill texts."
    )


def to_json(result: BenchResult) -> str:
    return json.dumps(asdict(result), indent=2)
