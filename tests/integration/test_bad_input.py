"""Every bad input gets a clear status and message, and the server keeps answering after it."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from routebook.embed import Embedder
from routebook.v1 import router_pb2 as pb
from routebook.wiring import App
from tests.conftest import Served


def user(text: str) -> list[pb.Message]:
    return [pb.Message(role="user", content=text)]


BAD_DECIDES = {
    "no messages": (pb.DecideRequest(), grpc.StatusCode.INVALID_ARGUMENT, "messages is empty"),
    "empty query": (
        pb.DecideRequest(messages=user("")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no user message",
    ),
    "whitespace query": (
        pb.DecideRequest(messages=user(" \n\t ")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no user message",
    ),
    "over the length limit": (
        pb.DecideRequest(messages=user("x" * 501)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "the limit is 500",
    ),
    "unknown namespace": (
        pb.DecideRequest(namespace="nope", messages=user("hello")),
        grpc.StatusCode.NOT_FOUND,
        "namespace 'nope' does not exist",
    ),
    "unknown role": (
        pb.DecideRequest(messages=[pb.Message(role="robot", content="hi")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "role",
    ),
    "quality target above 1": (
        pb.DecideRequest(messages=user("hello"), quality_target=1.5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "quality_target",
    ),
    "quality target NaN": (
        pb.DecideRequest(messages=user("hello"), quality_target=float("nan")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "quality_target",
    ),
    "NUL in query": (
        pb.DecideRequest(messages=user("hi\x00there")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NUL",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DECIDES))
def test_bad_decide_is_refused_clearly(
    case: str, db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url, max_query_chars=500)
    request, code, words = BAD_DECIDES[case]
    with pytest.raises(grpc.RpcError) as caught:
        served.router.Decide(request, timeout=10)
    assert caught.value.code() == code
    assert words in caught.value.details()
    still = served.router.Decide(pb.DecideRequest(messages=user("where is my order?")), timeout=10)
    assert still.model == "small"


def record(**fields: object) -> pb.RecordOutcomeRequest:
    return pb.RecordOutcomeRequest(**fields)  # type: ignore[arg-type]


BAD_RECORDS = {
    "unknown model": (
        record(outcome_id="a", messages=user("hello"), model="gpt-99", quality=1.0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown model 'gpt-99'",
    ),
    "quality above 1": (
        record(outcome_id="a", messages=user("hello"), model="small", quality=1.01),
        grpc.StatusCode.INVALID_ARGUMENT,
        "quality must be in [0, 1]",
    ),
    "quality below 0": (
        record(outcome_id="a", messages=user("hello"), model="small", quality=-0.1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "quality must be in [0, 1]",
    ),
    "quality NaN": (
        record(outcome_id="a", messages=user("hello"), model="small", quality=float("nan")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "quality must be in [0, 1]",
    ),
    "no quality nor success": (
        record(outcome_id="a", messages=user("hello"), model="small"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "give quality",
    ),
    "no outcome id": (
        record(messages=user("hello"), model="small", quality=1.0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outcome_id",
    ),
    "no subject": (
        record(outcome_id="a", model="small", quality=1.0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "decision_id",
    ),
    "unknown decision": (
        record(outcome_id="a", decision_id="f" * 32, model="small", quality=1.0),
        grpc.StatusCode.NOT_FOUND,
        "is unknown",
    ),
    "unknown namespace": (
        record(outcome_id="a", namespace="nope", messages=user("hi"), model="small", quality=1.0),
        grpc.StatusCode.NOT_FOUND,
        "namespace 'nope'",
    ),
    "negative cost": (
        record(outcome_id="a", messages=user("hi"), model="small", quality=1.0, cost_usd=-1.0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cost_usd",
    ),
    # Two of these summed overflow a tenant's spend (PostgreSQL then refused its Decides).
    "cost beyond any call": (
        record(outcome_id="a", messages=user("hi"), model="small", quality=1.0, cost_usd=1e308),
        grpc.StatusCode.INVALID_ARGUMENT,
        "more than one call can cost",
    ),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_record_is_refused_and_writes_nothing(
    case: str, db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url)
    request, code, words = BAD_RECORDS[case]
    before = row_counts(served)
    with pytest.raises(grpc.RpcError) as caught:
        served.router.RecordOutcome(request, timeout=10)
    assert caught.value.code() == code
    assert words in caught.value.details()
    assert row_counts(served) == before
    # Nothing was kept under the refused call's outcome id either: a good record under it is new.
    ok = served.router.RecordOutcome(
        record(outcome_id="a", messages=user("hello"), model="small", quality=1.0), timeout=10
    )
    assert not ok.duplicate
    assert row_counts(served)["outcomes"] == before["outcomes"] + 1


def row_counts(served: Served) -> dict[str, int]:
    with served.app.store.engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("outcomes", "examples", "model_failures", "decisions")
        }


def test_oversize_message_is_refused_by_the_transport(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, max_message_bytes=64 * 1024)
    with pytest.raises(grpc.RpcError) as caught:
        served.router.Decide(pb.DecideRequest(messages=user("y" * 100_000)), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still = served.router.Decide(pb.DecideRequest(messages=user("where is my order?")), timeout=10)
    assert still.model == "small"


def test_health_and_reflection(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url)
    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "routebook.v1.Router"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    # No admin_token: every Admin call is refused, so its health is not SERVING.
    admin = health_pb2.HealthCheckRequest(service="routebook.v1.Admin")
    assert health.Check(admin, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    enabled = health_pb2_grpc.HealthStub(serve(sqlite_url, admin_token="adm").channel)
    assert enabled.Check(admin, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    replies = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"routebook.v1.Router", "grpc.health.v1.Health"} <= names


def test_a_port_in_use_is_a_config_error_not_a_traceback(
    sqlite_url: str, make_app: Callable[..., object]
) -> None:
    import socket

    from routebook.errors import ConfigError
    from routebook.server.app import build_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            build_server(make_app(sqlite_url), host="127.0.0.1", port=port)  # type: ignore[arg-type]
        busy_metrics = make_app(sqlite_url, metrics_port=port)
        with pytest.raises(ConfigError, match=f"cannot serve metrics on .*:{port}"):
            build_server(busy_metrics, host="127.0.0.1", port=0)  # type: ignore[arg-type]


def test_a_routes_dir_given_without_route_files_is_an_error(
    sqlite_url: str, make_app: Callable[..., object], tmp_path: Path
) -> None:
    """A mistyped routes_dir was only warned about, and the server served an empty store:
    every Decide NOT_FOUND."""
    from routebook.errors import ConfigError

    typo = re.escape(str(tmp_path / "rotues"))
    with pytest.raises(ConfigError, match=f"routes folder {typo} does not exist"):
        make_app(sqlite_url, routes_dir=tmp_path / "rotues")  # a typo
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty holds no route files"):
        make_app(sqlite_url, routes_dir=tmp_path / "empty")


@pytest.mark.parametrize("default_folder", ["absent", "empty"])
def test_the_default_routes_folder_may_be_absent_or_empty_with_a_warning(
    sqlite_url: str,
    embedder: Embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    default_folder: str,
) -> None:
    """Namespaces may come through the Admin API: with routes_dir left at its default, a
    missing or empty routes/ starts an empty store, and says so."""
    from routebook.config import load_settings
    from routebook.wiring import build

    monkeypatch.chdir(tmp_path)
    if default_folder == "empty":
        (tmp_path / "routes").mkdir()
    settings = load_settings({"database_url": sqlite_url, "snapshot_dir": tmp_path / "snaps"})
    with caplog.at_level("WARNING", logger="routebook"):
        app = build(settings, embedder=embedder)
    app.close()
    warned = [r.getMessage() for r in caplog.records if "routes_dir" in r.getMessage()]
    said = "does not exist" if default_folder == "absent" else "holds no route files"
    assert len(warned) == 1 and f"{tmp_path / 'routes'} {said}" in warned[0], warned


def test_routes_dir_may_name_one_route_file(
    sqlite_url: str, serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    """`routes sync --routes FILE` loads a file, but on first start a routes_dir that named a
    file was warned about as "not a folder" and the server served an empty store."""
    one = Path(__file__).parents[1] / "data" / "policy_routes" / "guarded.yaml"
    with caplog.at_level("WARNING", logger="routebook"):
        served = serve(sqlite_url, routes_dir=one)
    assert not [r for r in caplog.records if "routes_dir" in r.getMessage()]
    assert [info.name for info in served.app.directory.refresh()] == ["guarded"]
    answer = served.router.Decide(
        pb.DecideRequest(namespace="guarded", messages=[pb.Message(role="user", content="hi")])
    )
    assert answer.model and answer.namespace == "guarded"


def test_a_malformed_body_is_invalid_argument_not_internal(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """grpcio's own parse failure answered INTERNAL ("Exception deserializing request!")."""
    served = serve(sqlite_url, admin_token="adm")
    for method in ("/routebook.v1.Router/Decide", "/routebook.v1.Admin/UpsertExamplesStream"):
        raw = served.channel.unary_unary(method)  # bytes in, bytes out
        if method.endswith("Stream"):
            raw = served.channel.stream_unary(method)  # type: ignore[assignment]
        for body in (b"\x0a\x05\xff\xfe", b"\xff\xff\xff", b"\x0a\x80"):
            payload = iter([body]) if method.endswith("Stream") else body
            with pytest.raises(grpc.RpcError) as caught:
                raw(payload, timeout=10, metadata=[("authorization", "Bearer adm")])
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "not a valid message" in (caught.value.details() or "")
    assert served.router.Decide(pb.DecideRequest(messages=user("where is my order?"))).model


def test_idle_reflection_streams_cannot_hold_every_worker(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """One unauthenticated caller with 32 idle reflection streams used to hold all 32 worker
    threads: every Decide then waited out its deadline."""
    served = serve(sqlite_url, workers=8)  # 2 reflection slots
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    release = threading.Event()

    def idle() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        release.wait(30)
        return
        yield

    streams = [stub.ServerReflectionInfo(idle(), timeout=30) for _ in range(8)]
    try:
        refused = 0
        decided = served.router.Decide(
            pb.DecideRequest(messages=user("where is my order?")), timeout=5
        )
        assert decided.model == "small"
        release.set()
        for stream in streams:
            try:
                list(stream)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                refused += 1
        assert refused == 6  # all but the two slots
    finally:
        release.set()
        for stream in streams:
            stream.cancel()
    # the slots are free again
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    assert any(reply.list_services_response.service for reply in replies)


def test_unknown_enum_values_and_spaced_namespaces_are_refused(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    with pytest.raises(grpc.RpcError) as caught:
        served.router.Decide(pb.DecideRequest(namespace="default ", messages=user("hi")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "namespace 'default ' has spaces around it" in (caught.value.details() or "")
    before = row_counts(served)
    with pytest.raises(grpc.RpcError) as caught:
        served.router.RecordOutcome(
            record(outcome_id="e", messages=user("hi"), model="small", failure=99), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "failure is 99, not a value of FailureKind" in (caught.value.details() or "")
    assert row_counts(served) == before


def test_serve_routes_takes_a_file(tmp_path: Path) -> None:
    """`serve --routes` refused a file (click's file_okay=False) that `routes sync` takes."""
    from click.testing import CliRunner

    from routebook import cli

    one = Path(__file__).parents[1] / "data" / "policy_routes" / "guarded.yaml"
    result = CliRunner().invoke(cli.main, ["serve", "--routes", str(one), "--port", "70000"])
    assert result.exit_code == 1, result.output  # got past the options to the settings
    assert "setting 'port' = 70000" in result.output


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        (
            "input_usd_per_mtok",
            1e308,
            "input_usd_per_mtok is 1e+308; give a number from 0 to 1e+06",
        ),
        ("output_usd_per_mtok", 2e6, "output_usd_per_mtok is 2000000.0; give a number from 0 to"),
        ("latency_ms", 1e12, "latency_ms is 1000000000000.0; give a number from 0 to 8.64e+07"),
        ("context_window", 2**31, "context_window is 2147483648; at most 2147483647"),
    ],
)
def test_a_catalog_number_past_its_bound_is_refused(
    sqlite_url: str, serve: Callable[..., Served], field: str, value: float, said: str
) -> None:
    """The Admin API took a price of 1e308, whose cost is infinite: that model was then "the
    cheapest", and its decisions were logged with Infinity, which is not JSON."""
    from routebook.v1 import admin_pb2 as admin_pb
    from routebook.v1 import admin_pb2_grpc

    served = serve(sqlite_url, admin_token="adm")
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    numbers = {
        "input_usd_per_mtok": 0.1,
        "output_usd_per_mtok": 0.4,
        "latency_ms": 300.0,
        "context_window": 8000,
        field: value,
    }
    model = admin_pb.CatalogModel(name="m", provider="p", **numbers)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateNamespace(
            admin_pb.CreateNamespaceRequest(name="bounded", catalog=[model]),
            metadata=[("authorization", "Bearer adm")],
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert said in (caught.value.details() or ""), caught.value.details()


@pytest.mark.parametrize(
    ("field", "stored", "said"),
    [
        ("context_window", 5_000_000_000, "context_window is 5000000000; give a number from 1 to"),
        ("context_window", -5, "context_window is -5; give a number from 1 to 2147483647"),
        ("input_usd_per_mtok", 1e308, "input_usd_per_mtok is 1e+308; give a number from 0 to"),
    ],
)
def test_a_catalog_stored_before_the_bounds_is_refused_with_the_fix(
    sqlite_url: str, serve: Callable[..., Served], field: str, stored: float, said: str
) -> None:
    """A catalog stored before catalogs were bounded made GetNamespace INTERNAL (a context
    window the contract's uint32 cannot carry) or show a price no write path takes any more.
    It is refused, naming the namespace, model, number and both ways to replace it; the
    UpdateCatalog it names then works."""
    from routebook.v1 import admin_pb2 as admin_pb
    from routebook.v1 import admin_pb2_grpc

    served = serve(sqlite_url, admin_token="adm")
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    metadata = [("authorization", "Bearer adm")]
    get = admin_pb.GetNamespaceRequest(name="default")
    good = admin.GetNamespace(get, metadata=metadata, timeout=10)
    with served.app.store.engine.begin() as connection:  # as an older routebook stored it
        connection.execute(
            text(f"UPDATE catalog_models SET {field} = :v WHERE name = 'frontier'"), {"v": stored}
        )
    with pytest.raises(grpc.RpcError) as caught:
        admin.GetNamespace(get, metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    details = caught.value.details() or ""
    assert details.startswith(
        f"namespace 'default': its stored catalog (version {good.catalog_version}) was stored "
        "before catalogs were bounded and is out of bounds: model 'frontier': "
    ), details
    assert said in details, details
    assert "run `routebook routes sync`" in details
    assert f"UpdateCatalog with expected_version {good.catalog_version}" in details
    assert served.router.Decide(pb.DecideRequest(messages=user("where is my order?"))).model
    updated = admin.UpdateCatalog(
        admin_pb.UpdateCatalogRequest(
            namespace="default", expected_version=good.catalog_version, catalog=good.catalog
        ),
        metadata=metadata,
        timeout=10,
    )
    assert list(updated.catalog) == list(good.catalog)
    assert admin.GetNamespace(get, metadata=metadata, timeout=10) == updated


def test_a_bind_failure_says_why(sqlite_url: str, make_app: Callable[..., App]) -> None:
    """Every failed bind read "is the port in use?", also for a host that does not resolve."""
    import socket

    from routebook.errors import ConfigError
    from routebook.server.app import build_server

    app = make_app(sqlite_url)
    with pytest.raises(ConfigError, match=r"host '10\.0\.0\.999' does not resolve"):
        build_server(app, host="10.0.0.999", port=0)
    with pytest.raises(ConfigError, match=r"192\.0\.2\.1 is not an address of this machine"):
        build_server(app, host="192.0.2.1", port=0)  # TEST-NET-1: never local
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} is in use"):
            build_server(app, host="127.0.0.1", port=port)
