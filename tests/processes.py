"""Real `routebook serve` processes for tests that need more than one server, or signals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@contextmanager
def server_process(
    db_url: str, cwd: Path, routes: Path, *, grace_seconds: float = 2, **settings: str
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start `routebook serve` on a free port; yield (process, port) once it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEBOOK_")}
    env.update({f"ROUTEBOOK_{k.upper()}": v for k, v in settings.items()})
    env["ROUTEBOOK_DECISION_LOG"] = ""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "routebook",
            "serve",
            "--port",
            "0",
            "--grace-seconds",
            str(grace_seconds),
            "--routes",
            str(routes),
            "--db",
            db_url,
        ],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _wait_for_port(process)
        _wait_serving(port)
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_for_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        found = re.search(r"serving on .*:(\d+)$", line.strip())
        if found:
            return int(found.group(1))
    raise AssertionError(f"the server never said it was serving (exit code {process.poll()})")


def _wait_serving(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
