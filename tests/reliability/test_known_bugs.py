"""Server bugs the reliability tests found, now fixed at the boundary (server/validate.py and
the interceptor's store-error mapping); these cases keep them fixed.

Each case sends one request that the server should refuse cleanly (INVALID_ARGUMENT or
NOT_FOUND with a message) and asserts that; today it answers INTERNAL (an unhandled
exception), or, when an error message echoes a huge field back, the client sees
RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" instead of the real status.
A malformed id (a NUL, or 20,000 characters) is INVALID_ARGUMENT rather than NOT_FOUND.
The fuzz in test_fuzz.py keeps these inputs out of its generators (and names this file).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.v1 import router_pb2 as pb
from tests.conftest import Served

TOKEN = "bugs-admin-token"
ADMIN = (("authorization", f"Bearer {TOKEN}"),)
HUGE = "z" * 20000
IA = grpc.StatusCode.INVALID_ARGUMENT


def user(content: str) -> list[pb.Message]:
    return [pb.Message(role="user", content=content)]


def model(**fields: Any) -> admin_pb.CatalogModel:
    return admin_pb.CatalogModel(**{"name": "m", "provider": "p", "context_window": 10, **fields})


def new_name() -> str:
    return f"bug-{uuid.uuid4().hex[:8]}"


def refusal(served: Served, rpc: str, request: Any) -> tuple[grpc.StatusCode, str]:
    service: Any = served.router if rpc in ("Decide", "RecordOutcome") else _admin(served)
    try:
        getattr(service, rpc)(request, metadata=ADMIN, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _admin(served: Served) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]


# (rpc, request, the status it should get)
ON_BOTH: dict[str, tuple[str, Any, grpc.StatusCode]] = {
    # int(page_token) >= 2**63 reaches the SQL driver: OverflowError (SQLite) / DataError (PG).
    "ListExamples page_token 2**63": (
        "ListExamples",
        admin_pb.ListExamplesRequest(namespace="default", page_token=str(2**63)),
        IA,
    ),
    # expected_version is uint64; >= 2**63 cannot fit the store's integer: refused as such.
    "UpdateCatalog expected_version 2**64-1": (
        "UpdateCatalog",
        admin_pb.UpdateCatalogRequest(
            namespace="default", expected_version=2**64 - 1, catalog=[model(name="small")]
        ),
        IA,
    ),
    # Error messages that quote a field in full: a 20,000-character value makes the
    # grpc-message trailer exceed the 16 KiB metadata limit, and the client gets
    # RESOURCE_EXHAUSTED "Stream removed" instead of the refusal.
    "Decide model_override huge": (
        "Decide",
        pb.DecideRequest(messages=user("hi"), model_override=HUGE),
        IA,
    ),
    "RecordOutcome decision_id huge": (
        "RecordOutcome",
        pb.RecordOutcomeRequest(outcome_id="a", decision_id=HUGE, model="small", quality=1),
        IA,
    ),
    "RecordOutcome model huge": (
        "RecordOutcome",
        pb.RecordOutcomeRequest(outcome_id="a", messages=user("hi"), model=HUGE, quality=1),
        IA,
    ),
    "UpsertExamples best_model huge": (
        "UpsertExamples",
        admin_pb.UpsertExamplesRequest(
            namespace="default", examples=[admin_pb.ExampleInput(text="x", best_model=HUGE)]
        ),
        IA,
    ),
    "GetReindexJob job_id huge": ("GetReindexJob", admin_pb.GetReindexJobRequest(job_id=HUGE), IA),
    "Reindex index_kind huge": (
        "Reindex",
        admin_pb.ReindexRequest(namespace="default", index_kind=HUGE),
        IA,
    ),
}

# PostgreSQL only: NUL characters in text columns, strings longer than their column, and
# uint32 values above the int32 columns; SQLite stores all of these.
ON_POSTGRES: dict[str, tuple[str, Any, grpc.StatusCode]] = {
    "CreateNamespace description with NUL": (
        "CreateNamespace",
        admin_pb.CreateNamespaceRequest(description="a\x00b", catalog=[model()]),
        IA,
    ),
    "CreateNamespace provider with NUL": (
        "CreateNamespace",
        admin_pb.CreateNamespaceRequest(catalog=[model(provider="p\x00")]),
        IA,
    ),
    "CreateNamespace provider of 100 characters": (
        "CreateNamespace",
        admin_pb.CreateNamespaceRequest(catalog=[model(provider="p" * 100)]),
        IA,
    ),
    "CreateNamespace context_window 2**32-1": (
        "CreateNamespace",
        admin_pb.CreateNamespaceRequest(catalog=[model(context_window=2**32 - 1)]),
        IA,
    ),
    "RecordOutcome input_tokens 2**32-1": (
        "RecordOutcome",
        pb.RecordOutcomeRequest(
            messages=user("tokens question"), model="small", quality=1, input_tokens=2**32 - 1
        ),
        IA,
    ),
    "RecordOutcome outcome_id with NUL": (
        "RecordOutcome",
        pb.RecordOutcomeRequest(
            outcome_id="a\x00b", messages=user("nul id"), model="small", quality=1
        ),
        IA,
    ),
    "RecordOutcome tenant with NUL": (
        "RecordOutcome",
        pb.RecordOutcomeRequest(messages=user("nul tenant"), model="small", quality=1, tenant="\0"),
        IA,
    ),
    "RecordOutcome decision_id with NUL": (
        "RecordOutcome",
        pb.RecordOutcomeRequest(decision_id="a\x00b", model="small", quality=1),
        IA,
    ),
    "ListExamples text_prefix with NUL": (
        "ListExamples",
        admin_pb.ListExamplesRequest(namespace="default", text_prefix="a\x00"),
        IA,
    ),
    "ListExamples model with NUL": (
        "ListExamples",
        admin_pb.ListExamplesRequest(namespace="default", model="a\x00"),
        IA,
    ),
    "GetReindexJob job_id with NUL": (
        "GetReindexJob",
        admin_pb.GetReindexJobRequest(job_id="a\x00"),
        IA,
    ),
}


# SQLite only: LIKE patterns are limited to 50,000 bytes ("LIKE or GLOB pattern too complex").
ON_SQLITE: dict[str, tuple[str, Any, grpc.StatusCode]] = {
    "ListExamples text_prefix of 60,000 characters": (
        "ListExamples",
        admin_pb.ListExamplesRequest(namespace="default", text_prefix="x" * 60_000),
        IA,
    ),
}


def _fill(request: Any) -> Any:
    """Unique names and outcome ids, so every case is independent."""
    if isinstance(request, admin_pb.CreateNamespaceRequest) and not request.name:
        request.name = new_name()
    if isinstance(request, pb.RecordOutcomeRequest) and not request.outcome_id:
        request.outcome_id = uuid.uuid4().hex
    return request


def _check(served: Served, case: tuple[str, Any, grpc.StatusCode]) -> None:
    rpc, request, wanted = case
    code, details = refusal(served, rpc, _fill(request))
    assert code == wanted and details, f"{rpc} answered {code.name}: {details[:200]!r}"


@pytest.mark.parametrize("case", list(ON_BOTH))
def test_refused_cleanly(case: str, db_url: str, serve: Callable[..., Served]) -> None:
    _check(serve(db_url, admin_token=TOKEN), ON_BOTH[case])


@pytest.mark.parametrize("case", list(ON_SQLITE))
def test_refused_cleanly_on_sqlite(
    case: str, sqlite_url: str, serve: Callable[..., Served]
) -> None:
    _check(serve(sqlite_url, admin_token=TOKEN), ON_SQLITE[case])


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(ON_POSTGRES))
def test_refused_cleanly_on_postgres(
    case: str, postgres_url: str, serve: Callable[..., Served]
) -> None:
    _check(serve(postgres_url, admin_token=TOKEN), ON_POSTGRES[case])


@pytest.mark.postgres
def test_a_decide_with_a_nul_tenant_does_not_stop_later_decisions_being_stored(
    postgres_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(postgres_url, admin_token=TOKEN)
    try:
        served.router.Decide(pb.DecideRequest(messages=user("where is my order?"), tenant="a\0b"))
    except grpc.RpcError as exc:  # refusing it would be fine too
        assert exc.code() == IA
    later = served.router.Decide(pb.DecideRequest(messages=user("refund please")), timeout=10)
    engine = create_engine(postgres_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as connection:
                stored = connection.execute(
                    text("SELECT count(*) FROM decisions WHERE id = :d"), {"d": later.decision_id}
                ).scalar_one()
            if stored or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    assert stored == 1, "a valid decision was never written"
