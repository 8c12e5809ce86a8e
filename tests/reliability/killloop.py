"""Kill loop: SIGKILL a real `routebook serve` process at random moments while writers run, and
check after every restart that no acknowledged write was lost and none is stored twice.

    python -m tests.reliability.killloop --db sqlite:////tmp/kl.db --cycles 50
    python -m tests.reliability.killloop --db postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --fresh-schema --cycles 50

Each cycle starts the server (it must come up on its own: no manual repair), runs two writers
(RecordOutcome by messages with a unique outcome_id and text; Admin UpsertExamples with a unique
text) and kills the process with SIGKILL after a random delay; one cycle in five kills it while
it is still starting. After each restart it:

- retries every write that was not acknowledged (same outcome_id / same text): retries are
  idempotent, and once answered they count as acknowledged;
- reads the store directly (SQLAlchemy): every acknowledged outcome_id is in `outcomes` once,
  every acknowledged text is in `examples` once (history for outcomes, reference for upserts);
- checks the index: GetStats index_size equals the store's example count for the namespace
  (nothing missing, nothing twice), and a Decide on each text acknowledged in the last cycle
  finds its example id among the neighbours with similarity ~1.

It prints: cycles, acknowledged, found, lost, duplicated, index_missing, index_size_mismatch,
unacknowledged_retried, and exits 1 unless lost, duplicated and both index counts are 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc, router_pb2_grpc
from routebook.v1 import router_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
TEST_ROUTES = ROOT / "tests" / "data" / "routes"
TOKEN = "killloop-admin-token"
ADMIN = (("authorization", f"Bearer {TOKEN}"),)
NAMESPACE = "default"
WORDS = (
    "parcel",
    "invoice",
    "refund",
    "kernel",
    "mutex",
    "latency",
    "summary",
    "shoes",
    "delivery",
    "matrix",
    "proof",
    "tensor",
    "garden",
    "violin",
    "harbour",
    "copper",
    "lantern",
    "glacier",
    "meadow",
    "orbit",
    "pepper",
    "quartz",
    "saddle",
    "thunder",
    "velvet",
    "walnut",
    "zephyr",
)


@dataclass
class Write:
    kind: str  # "outcome" or "example"
    text: str
    outcome_id: str = ""
    model: str = "small"
    acknowledged: bool = False
    example_id: int = 0
    cycle: int = 0


@dataclass
class Tally:
    cycles: int = 0
    acknowledged: int = 0
    found: int = 0
    lost: int = 0
    duplicated: int = 0
    index_missing: int = 0
    index_size_mismatch: int = 0
    unacknowledged_retried: int = 0
    kills_during_start: int = 0
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.index_missing or self.index_size_mismatch)

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"}


class Server:
    """One `routebook serve` process; its stderr goes to a file so it can never block."""

    def __init__(self, db_url: str, workdir: Path, routes: Path) -> None:
        self.log_path = workdir / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBOOK_")}
        env.update(
            ROUTEBOOK_ADMIN_TOKEN=TOKEN,
            ROUTEBOOK_DECISION_LOG="",
            ROUTEBOOK_SNAPSHOT_DIR=str(workdir / "snapshots"),
            HF_HUB_OFFLINE="1",
        )
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "routebook", "serve", "--port", "0"),
                *("--grace-seconds", "2", "--routes", str(routes), "--db", db_url),
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
        )
        self.port = 0

    def wait_serving(self, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"serving on .*:(\d+)\s*$", self.log_path.read_text(), re.M)
            if found:
                self.port = int(found.group(1))
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.tail()}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"server did not start within {timeout}s:\n{self.tail()}")
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True
            )
            if status.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError(f"health is {status.status}")
        return self.port

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        self.log.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


def sentence(rng: random.Random, tag: str) -> str:
    return f"{' '.join(rng.choices(WORDS, k=6))} {tag}"


def send(write: Write, channel: grpc.Channel, timeout: float = 15) -> bool:
    """Send one write; True when the server acknowledged it."""
    return refusal(write, channel, timeout) is None


def refusal(write: Write, channel: grpc.Channel, timeout: float = 15) -> str | None:
    """Send one write; None when the server acknowledged it, else the status and message."""
    try:
        if write.kind == "outcome":
            response = router_pb2_grpc.RouterStub(channel).RecordOutcome(
                pb.RecordOutcomeRequest(
                    outcome_id=write.outcome_id,
                    namespace=NAMESPACE,
                    messages=[pb.Message(role="user", content=write.text)],
                    model=write.model,
                    quality=0.75,
                ),
                timeout=timeout,
            )
            write.example_id = response.example_id
        else:
            answer = admin_pb2_grpc.AdminStub(channel).UpsertExamples(
                admin_pb.UpsertExamplesRequest(
                    namespace=NAMESPACE,
                    examples=[admin_pb.ExampleInput(text=write.text, best_model=write.model)],
                ),
                metadata=ADMIN,
                timeout=timeout,
            )
            write.example_id = answer.example_ids[0]
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    write.acknowledged = True
    return None


def retry(write: Write, port: int, cycle: int, tally: Tally) -> None:
    """Send an unacknowledged write again after a restart: it must be answered now."""
    write.cycle = cycle
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        why = refusal(write, channel, timeout=60)
    if why is None:
        tally.unacknowledged_retried += 1
        return
    tally.problems.append(f"cycle {cycle}: the retry of {write.kind} {write.text!r} got {why}")
    raise RuntimeError(f"cycle {cycle}: the retry of {write} after a restart got {why}")


def writer(
    kind: str, port: int, cycle: int, rng: random.Random, stop: threading.Event, out: list[Write]
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        n = 0
        while not stop.is_set():
            n += 1
            tag = f"{kind[0]}{cycle}x{n}x{uuid.uuid4().hex[:10]}"
            write = Write(
                kind=kind,
                text=sentence(rng, tag),
                outcome_id=f"kl-{uuid.uuid4().hex}" if kind == "outcome" else "",
                model=rng.choice(["small", "mid", "frontier"]),
                cycle=cycle,
            )
            out.append(write)
            if not send(write, channel):
                # Refused or cut off: the server is going down. Stop writing this cycle.
                return


def verify(engine: Engine, port: int, writes: list[Write], cycle: int, tally: Tally) -> None:
    acked = [w for w in writes if w.acknowledged]
    with engine.connect() as connection:
        namespace_id = connection.execute(
            text("SELECT id FROM namespaces WHERE name = :n"), {"n": NAMESPACE}
        ).scalar_one()
        outcome_counts = dict(
            connection.execute(
                text("SELECT outcome_id, count(*) FROM outcomes GROUP BY outcome_id")
            ).all()
        )
        example_counts: dict[tuple[str, str], int] = {}
        for source, body, count in connection.execute(
            text(
                "SELECT source, text, count(*) FROM examples WHERE namespace_id = :ns "
                "GROUP BY source, text"
            ),
            {"ns": namespace_id},
        ):
            example_counts[(source, body)] = count
        stored = connection.execute(
            text("SELECT count(*) FROM examples WHERE namespace_id = :ns"), {"ns": namespace_id}
        ).scalar_one()
    found = lost = duplicated = 0
    for w in acked:
        if w.kind == "outcome":
            n_outcome = outcome_counts.get(w.outcome_id, 0)
            n_example = example_counts.get(("history", w.text), 0)
            n = min(n_outcome, n_example)
            twice = n_outcome > 1 or n_example > 1
        else:
            n = example_counts.get(("reference", w.text), 0)
            twice = n > 1
        if n == 0:
            lost += 1
            tally.problems.append(f"cycle {cycle}: lost {w.kind} {w.outcome_id or w.text!r}")
        else:
            found += 1
        if twice:
            duplicated += 1
            tally.problems.append(f"cycle {cycle}: twice {w.kind} {w.outcome_id or w.text!r}")
    tally.acknowledged, tally.found, tally.lost, tally.duplicated = (
        len(acked),
        found,
        lost,
        duplicated,
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        # The index may still be catching up with writes retried a moment ago: give it a second.
        deadline = time.monotonic() + 10
        while True:
            stats = admin.GetStats(
                admin_pb.GetStatsRequest(namespace=NAMESPACE), metadata=ADMIN, timeout=30
            ).namespaces[0]
            if stats.index_size == stored or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if stats.index_size != stored:
            tally.index_size_mismatch += 1
            tally.problems.append(
                f"cycle {cycle}: index has {stats.index_size} examples, the store {stored}"
            )
        if hasattr(admin_pb, "CheckIndexRequest"):  # the server's own index/store comparison
            check = admin.CheckIndex(
                admin_pb.CheckIndexRequest(namespace=NAMESPACE), metadata=ADMIN, timeout=60
            ).namespaces[0]
            if check.missing or check.extra:
                tally.index_size_mismatch += 1
                tally.problems.append(
                    f"cycle {cycle}: CheckIndex missing {list(check.missing)[:10]} "
                    f"extra {list(check.extra)[:10]}"
                )
        router = router_pb2_grpc.RouterStub(channel)
        for w in acked:
            if w.cycle < cycle - 1:
                continue  # older writes were checked in the index after an earlier restart
            answer = router.Decide(
                pb.DecideRequest(
                    namespace=NAMESPACE, messages=[pb.Message(role="user", content=w.text)]
                ),
                timeout=30,
            )
            if not any(
                n.example_id == w.example_id and n.similarity > 0.99 for n in answer.neighbours
            ):
                tally.index_missing += 1
                tally.problems.append(f"cycle {cycle}: example {w.example_id} not in the index")


def run(db_url: str, cycles: int, seed: int, workdir: Path, routes: Path = TEST_ROUTES) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    writes: list[Write] = []
    engine = create_engine(db_url)
    server: Server | None = None
    try:
        for cycle in range(1, cycles + 1):
            server = Server(db_url, workdir, routes)
            if cycle > 1 and rng.random() < 0.2:
                # Kill it while it starts (migrations, route files, index loading).
                time.sleep(rng.uniform(0.5, 6.0))
                server.kill()
                tally.kills_during_start += 1
                server = Server(db_url, workdir, routes)
            port = server.wait_serving()
            if cycle > 1:
                for w in writes:
                    if not w.acknowledged:
                        retry(w, port, cycle, tally)
                verify(engine, port, writes, cycle, tally)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=writer,
                    args=(kind, port, cycle, random.Random(rng.random()), stop, writes),
                )
                for kind in ("outcome", "example")
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.2, 2.5))
            server.kill()
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            tally.cycles = cycle
        # A last start and check, after the last kill; then a clean stop.
        server = Server(db_url, workdir, routes)
        port = server.wait_serving()
        for w in writes:
            if not w.acknowledged:
                retry(w, port, cycles + 1, tally)
        verify(engine, port, writes, cycles + 1, tally)
        code = server.stop()
        if code != 0:
            tally.problems.append(f"the final SIGTERM stop exited {code}")
    finally:
        if server is not None:
            server.kill()  # no-op on a process that already exited; closes its log
        engine.dispose()
    return tally


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new PostgreSQL schema for the run, dropped afterwards."""
    schema = f"rb_kill_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield parsed.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of the store")
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--fresh-schema", action="store_true", help="PostgreSQL: own schema")
    args = parser.parse_args(argv)
    started = time.monotonic()
    schema = fresh_schema(args.db) if args.fresh_schema else contextlib.nullcontext(args.db)
    with tempfile.TemporaryDirectory(prefix="killloop-") as folder, schema as url:
        tally = run(url, args.cycles, args.seed, Path(folder))
    result = {"seed": args.seed, **tally.summary(), "seconds": round(time.monotonic() - started)}
    print(json.dumps(result))
    for problem in tally.problems[:50]:
        print(problem, file=sys.stderr)
    return 0 if tally.ok() and not tally.problems else 1


if __name__ == "__main__":
    sys.exit(main())
