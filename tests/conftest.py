"""Session fixtures: the real embedding model (loaded once), SQLite files and fresh PostgreSQL
schemas, a migrated store, and a real gRPC server on a free loopback port."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from routebook.config import Settings, load_settings
from routebook.embed import Embedder
from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.server.app import RunningServer, build_server
from routebook.v1 import router_pb2_grpc
from routebook.wiring import App, build, load_embedder

TESTS = Path(__file__).parent
TEST_ROUTES = TESTS / "data" / "routes"
POSTGRES_URL = os.environ.get(
    "ROUTEBOOK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass settings explicitly; a stray ROUTEBOOK_* variable must not leak in."""
    for key in list(os.environ):
        if key.startswith("ROUTEBOOK_") and key != "ROUTEBOOK_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The embedder a server builds by default (the onnx backend), loaded once per session."""
    return load_embedder(load_settings({}))


@pytest.fixture(scope="session")
def layers_embedder() -> Embedder:
    """The default embedder as `head_features = "layers"` builds it: it also gives the mean pool
    of every layer. Loaded once per session."""
    return load_embedder(load_settings({"head_features": "layers"}))


@pytest.fixture(scope="session")
def torch_embedder() -> SentenceTransformerEmbedder:
    """The sentence-transformers backend, for tests that compare the two."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'routebook.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the shared test database, dropped afterwards."""
    schema = f"rb_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


def make_settings(db_url: str, **overrides: object) -> Settings:
    return load_settings({"database_url": db_url, "routes_dir": TEST_ROUTES, **overrides})


@pytest.fixture
def make_app(embedder: Embedder, tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def _make(db_url: str, **overrides: object) -> App:
        overrides.setdefault("snapshot_dir", tmp_path / "snapshots")
        model = overrides.pop("embedder", embedder)
        app = build(make_settings(db_url, **overrides), embedder=model)  # type: ignore[arg-type]
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.close()


class Served:
    """A running server with a channel and stub to it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.running: RunningServer = build_server(app, host="127.0.0.1", port=0)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.router = router_pb2_grpc.RouterStub(self.channel)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def stop(self) -> None:
        self.channel.close()
        self.running.stop(0.5).wait()


@pytest.fixture
def serve(make_app: Callable[..., App]) -> Iterator[Callable[..., Served]]:
    servers: list[Served] = []

    def _serve(db_url: str, **overrides: object) -> Served:
        served = Served(make_app(db_url, **overrides))
        servers.append(served)
        return served

    yield _serve
    for served in servers:
        served.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
