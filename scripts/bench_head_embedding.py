"""Decide latency while a restarted server's layers head embeds its training sample.

Fills a SQLite store once (MMLU dev_index prompts, labelled from their outcomes), then starts
`routebook serve` with `head_features = "layers"` as a child process, which trains each head
at start. A client in this process sends Decide calls one at a time (fresh short queries, so
no cache hits) from the moment the server serves until its head has trained, then 15 s more
for the idle baseline. It prints p50/p99 of three windows, split by the server's log times:
until the pools are embedded (or read), the head's fit after that (from the last pools log
line to "head trained on"), and idle after; then the server's own log lines on the training.
Unless `--keep-pools`, the pools files an earlier run left are deleted first, so the server
embeds the whole sample; with it, it reads them (a second restart), and what is measured is
mostly the fit.

    PYTHONPATH=src .venv/bin/python scripts/bench_head_embedding.py --examples 3000

The store is kept in --workdir between runs (--fresh fills a new one), so runs against two
versions of the source (PYTHONPATH, e.g. a `git archive` of an older commit's src and
migrations) compare on the same data. The queries are banking77's dev_test texts, each with
a number appended; the examples the first 3,000 MMLU dev_index prompts (long: most fill the
256 tokens the model reads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np

ROUTES = Path(__file__).resolve().parents[1] / "tests" / "data" / "routes"
IDLE_S = 15.0
#: The server's log lines that end the pools' part of a training (embedded, or read from the
#: file, or found missing with nothing to embed): the fit comes next.
POOLS_DONE = ("embedded the layer pools of", "read the layer pools of", "no layer pools kept")


def settings(workdir: Path, precision: str) -> dict[str, str]:
    return {
        "database_url": f"sqlite:///{workdir / 'store.db'}",
        "routes_dir": str(ROUTES),
        "snapshot_dir": str(workdir / "snapshots"),
        "head_features": "layers",
        "head_check_seconds": "3600",
        "embed_precision": precision,
        "decision_log": "",
    }


def fill(workdir: Path, precision: str, count: int, datasets: Path) -> None:
    """A store whose default namespace holds `count` MMLU prompts labelled from outcomes."""
    if (workdir / "store.db").exists():
        return
    from routebook.config import load_settings
    from routebook.service.examples import ExampleInput
    from routebook.wiring import build

    rows = [
        json.loads(line)
        for line in (datasets / "routellm" / "mmlu.dev_index.jsonl").read_text().split("\n")
        if line.strip()
    ][:count]
    items = [
        ExampleInput(
            row["prompt"],
            None,
            "small" if row["outcomes"]["mixtral-8x7b-instruct-v0.1"] else "frontier",
        )
        for row in rows
    ]
    app = build(load_settings({**settings(workdir, precision), "head_enabled": False}))
    try:
        app.examples.upsert("default", items)
    finally:
        app.close()


def queries(datasets: Path) -> list[str]:
    path = datasets / "banking77" / "train.dev_test.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().split("\n") if line.strip()]


def run(workdir: Path, precision: str, keep_pools: bool, datasets: Path) -> None:
    from routebook.jobs.bench import served
    from routebook.v1 import router_pb2 as pb
    from routebook.v1 import router_pb2_grpc

    if not keep_pools:
        for pools in (workdir / "snapshots").rglob("layers-*"):
            pools.unlink()
    log_path = workdir / "server.log"  # where `served` sends the server's output
    with served(settings(workdir, precision), workdir) as server:
        channel = grpc.insecure_channel(server.target)
        router = router_pb2_grpc.RouterStub(channel)
        calls: list[tuple[float, float]] = []  # (wall clock at the start, ms)
        trained_at: float | None = None
        started = time.monotonic()
        for n, query in enumerate(queries(datasets) * 20):
            request = pb.DecideRequest(messages=[pb.Message(role="user", content=f"{query} ({n})")])
            at = time.time()
            begin = time.perf_counter()
            router.Decide(request, timeout=30)
            calls.append((at, (time.perf_counter() - begin) * 1000))
            if trained_at is None and "head trained on" in log_path.read_text():
                trained_at = time.monotonic()
            if trained_at is not None and time.monotonic() - trained_at > IDLE_S:
                break
        channel.close()
    assert trained_at is not None, "the head did not train"
    lines = log_path.read_text().split("\n")
    fit_from = logged_at(next(ln for ln in reversed(lines) if any(s in ln for s in POOLS_DONE)))
    fit_to = logged_at(next(ln for ln in lines if "head trained on" in ln))
    windows = {
        "pools (embedding or reading)": [ms for at, ms in calls if at < fit_from],
        f"fit ({fit_to - fit_from:.1f} s)": [ms for at, ms in calls if fit_from <= at < fit_to],
        "idle after": [ms for at, ms in calls if at >= fit_to],
    }
    for name, values in windows.items():
        if values:
            print(
                f"{name}: {len(values)} Decide calls, p50 {np.percentile(values, 50):.1f} ms, "
                f"p99 {np.percentile(values, 99):.1f} ms"
            )
    print(f"serving to head trained: {trained_at - started:.1f} s")
    for line in lines:
        if "routebook.service.head" in line:
            print(line)


def logged_at(line: str) -> float:
    """The wall-clock time of a server log line (`cli.py`'s format: local time, ms)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-head-embedding"))
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--precision", choices=("float32", "int8"), default="float32")
    parser.add_argument("--keep-pools", action="store_true")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--fresh", action="store_true", help="Fill a new store first.")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    fill(args.workdir, args.precision, args.examples, args.datasets)
    run(args.workdir, args.precision, args.keep_pools, args.datasets)


if __name__ == "__main__":
    main()
