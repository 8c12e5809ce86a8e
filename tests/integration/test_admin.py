"""The Admin API over real gRPC: authentication, namespaces and catalogs, examples, stats and
reindexing while Decide runs."""

from __future__ import annotations

import gc
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from routebook import cli
from routebook.errors import ConfigError
from routebook.server.app import build_server
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc, router_pb2_grpc
from routebook.v1 import router_pb2 as pb
from routebook.wiring import App
from tests.conftest import Served, wait_until

TOKEN = "s3cret-admin-token"
ADMIN = [("authorization", f"Bearer {TOKEN}")]
MODELS = [
    admin_pb.CatalogModel(
        name="cheap",
        provider="p",
        input_usd_per_mtok=0.1,
        output_usd_per_mtok=0.2,
        latency_ms=100,
        context_window=8000,
    ),
    admin_pb.CatalogModel(
        name="strong",
        provider="p",
        input_usd_per_mtok=5,
        output_usd_per_mtok=15,
        latency_ms=900,
        context_window=100000,
        tags={"region": "eu"},
    ),
]


def admin_stub(served: Served) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def ask(served: Served, text: str, **fields: object) -> pb.DecideResponse:
    request = pb.DecideRequest(messages=[pb.Message(role="user", content=text)], **fields)
    response: pb.DecideResponse = served.router.Decide(request, timeout=10)
    return response


def test_admin_needs_the_token(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url, admin_token=TOKEN)
    admin = admin_stub(served)
    request = admin_pb.GetStatsRequest()
    assert code_of(lambda: admin.GetStats(request, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    wrong = [("authorization", "Bearer nope")]
    assert code_of(lambda: admin.GetStats(request, metadata=wrong, timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    with pytest.raises(grpc.RpcError) as caught:
        admin.GetStats(request, metadata=wrong, timeout=5)
    assert "nope" not in caught.value.details() and TOKEN not in caught.value.details()
    stats = admin.GetStats(request, metadata=ADMIN, timeout=5)
    assert stats.namespaces[0].namespace == "default"
    # Router calls need nothing when no API keys are configured; health needs nothing.
    assert ask(served, "where is my order?").model == "small"
    health = health_pb2_grpc.HealthStub(served.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_admin_is_disabled_without_a_configured_token(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    with pytest.raises(grpc.RpcError) as caught:
        admin_stub(served).GetStats(admin_pb.GetStatsRequest(), metadata=ADMIN, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "disabled" in caught.value.details()


def test_router_api_keys_per_namespace(sqlite_url: str, serve: Callable[..., Served]) -> None:
    served = serve(sqlite_url, router_api_keys={"default": ["key-default"], "other": ["key-o"]})
    request = pb.DecideRequest(messages=[pb.Message(role="user", content="where is my order?")])

    def with_key(key: str | None) -> Callable[[], object]:
        metadata = [("authorization", f"Bearer {key}")] if key else []
        return lambda: served.router.Decide(request, metadata=metadata, timeout=10)

    assert code_of(with_key(None)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(with_key("made-up")) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(with_key("key-o")) == grpc.StatusCode.PERMISSION_DENIED
    response = with_key("key-default")()
    assert isinstance(response, pb.DecideResponse) and response.model == "small"

    # An outcome by decision_id lands in the decision's namespace: only its keys may report it.
    def report(key: str, outcome_id: str, **fields: object) -> Callable[[], object]:
        outcome = pb.RecordOutcomeRequest(
            outcome_id=outcome_id, decision_id=response.decision_id, model="small", **fields
        )
        metadata = [("authorization", f"Bearer {key}")]
        return lambda: served.router.RecordOutcome(outcome, metadata=metadata, timeout=30)

    # Naming its own namespace gets the other key past the call's check, not past this one.
    with pytest.raises(grpc.RpcError) as refused:
        report("key-o", "cross-1", quality=1.0, namespace="other")()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "namespace 'default', where decision" in (refused.value.details() or "")
    failure = report("key-o", "cross-2", failure=pb.FAILURE_KIND_RATE_LIMITED, namespace="other")
    assert code_of(failure) == grpc.StatusCode.PERMISSION_DENIED  # no cooldowns either
    assert code_of(report("key-o", "cross-3", quality=1.0)) == grpc.StatusCode.PERMISSION_DENIED
    recorded = report("key-default", "own-1", quality=1.0)()
    assert isinstance(recorded, pb.RecordOutcomeResponse) and not recorded.duplicate
    # Nor can the other key read the recorded outcome back by retrying its id.
    retry = report("key-o", "own-1", quality=1.0, namespace="other")
    assert code_of(retry) == grpc.StatusCode.PERMISSION_DENIED
    again = report("key-default", "own-1", quality=1.0)()
    assert isinstance(again, pb.RecordOutcomeResponse) and again.duplicate


def test_a_key_for_one_namespace_reports_outcomes_of_its_decisions_by_id(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """RecordOutcome by decision_id carries no namespace (it is the decision's), so the key is
    checked against the decision's namespace, not the default one the empty field names."""
    from routebook.catalog import Catalog, ModelSpec

    served = serve(sqlite_url, router_api_keys={"default": ["key-d"], "other": ["key-o"]})
    served.app.namespaces.create(  # type: ignore[attr-defined]
        "other", "", Catalog([ModelSpec("cheap", "t", 0.1, 0.4, 300, 128_000)])
    )
    metadata = [("authorization", "Bearer key-o")]
    decision = served.router.Decide(
        pb.DecideRequest(
            namespace="other", messages=[pb.Message(role="user", content="where is my order?")]
        ),
        metadata=metadata,
        timeout=10,
    )
    for fields in ({"quality": 1.0}, {"failure": pb.FAILURE_KIND_SERVER_ERROR}):
        recorded = served.router.RecordOutcome(
            pb.RecordOutcomeRequest(
                outcome_id=f"by-id-{len(fields)}-{next(iter(fields))}",
                decision_id=decision.decision_id,
                model="cheap",
                **fields,  # type: ignore[arg-type]
            ),
            metadata=metadata,
            timeout=30,
        )
        assert recorded.namespace == "other" and not recorded.duplicate
    # The key still gets nothing in a namespace it has no right to.
    refused = served.router.RecordOutcome.future(
        pb.RecordOutcomeRequest(
            outcome_id="by-id-default",
            messages=[pb.Message(role="user", content="where is my order?")],
            model="small",
            quality=1.0,
        ),
        metadata=metadata,
        timeout=30,
    )
    assert refused.exception().code() == grpc.StatusCode.PERMISSION_DENIED


def test_namespace_catalog_and_examples_lifecycle(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url, admin_token=TOKEN)
    admin = admin_stub(served)
    created = admin.CreateNamespace(
        admin_pb.CreateNamespaceRequest(name="support", catalog=MODELS), metadata=ADMIN
    )
    assert (created.name, created.catalog_version) == ("support", 1)
    again = admin_pb.CreateNamespaceRequest(name="support", catalog=MODELS)
    assert code_of(lambda: admin.CreateNamespace(again, metadata=ADMIN)) == (
        grpc.StatusCode.ALREADY_EXISTS
    )

    # Examples: added, then the same again (unchanged), then relabelled (updated).
    upsert = admin_pb.UpsertExamplesRequest(
        namespace="support",
        examples=[
            admin_pb.ExampleInput(text="reset my password", route="account", best_model="cheap"),
            admin_pb.ExampleInput(
                text="I forgot my login password", route="account", best_model="cheap"
            ),
            admin_pb.ExampleInput(
                text="prove the Riemann hypothesis", route="math", best_model="strong"
            ),
        ],
    )
    first = admin.UpsertExamples(upsert, metadata=ADMIN)
    assert (first.added, first.updated, first.unchanged) == (3, 0, 0)
    assert admin.UpsertExamples(upsert, metadata=ADMIN).unchanged == 3
    decision = ask(served, "how do I reset my password?", namespace="support")
    assert (decision.strategy, decision.model) == (pb.STRATEGY_SEMANTIC, "cheap")
    assert decision.neighbours[0].example_id in first.example_ids

    bad = admin_pb.UpsertExamplesRequest(
        namespace="support", examples=[admin_pb.ExampleInput(text="x", best_model="gpt-9")]
    )
    assert code_of(lambda: admin.UpsertExamples(bad, metadata=ADMIN)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )

    # Streaming upsert of several batches.
    def batches() -> object:
        for start in range(0, 30, 10):
            yield admin_pb.UpsertExamplesRequest(
                namespace="support",
                examples=[
                    admin_pb.ExampleInput(
                        text=f"what is the status of ticket {n}",
                        route="tickets",
                        best_model="cheap",
                    )
                    for n in range(start, start + 10)
                ],
            )

    streamed = admin.UpsertExamplesStream(batches(), metadata=ADMIN)
    assert streamed.added == 30 and len(streamed.example_ids) == 30

    # Listing: filters and pages.
    page = admin.ListExamples(
        admin_pb.ListExamplesRequest(namespace="support", route="tickets", page_size=20),
        metadata=ADMIN,
    )
    assert len(page.examples) == 20 and page.next_page_token
    rest = admin.ListExamples(
        admin_pb.ListExamplesRequest(
            namespace="support", route="tickets", page_size=20, page_token=page.next_page_token
        ),
        metadata=ADMIN,
    )
    assert len(rest.examples) == 10 and not rest.next_page_token
    prefixed = admin.ListExamples(
        admin_pb.ListExamplesRequest(namespace="support", text_prefix="reset"), metadata=ADMIN
    )
    assert [e.text for e in prefixed.examples] == ["reset my password"]
    # Exact on both stores: SQLite's LIKE ignored case; and no wildcards.
    for other in ("Reset", "RESET my", "res_t", "%set"):
        listed = admin.ListExamples(
            admin_pb.ListExamplesRequest(namespace="support", text_prefix=other), metadata=ADMIN
        )
        assert list(listed.examples) == [], other
    strong = admin.ListExamples(
        admin_pb.ListExamplesRequest(namespace="support", model="strong"), metadata=ADMIN
    )
    assert [e.route for e in strong.examples] == ["math"]

    # Delete: the example leaves the evidence at once.
    gone = first.example_ids[0]
    deleted = admin.DeleteExamples(
        admin_pb.DeleteExamplesRequest(namespace="support", example_ids=[gone, 999_999]),
        metadata=ADMIN,
    )
    assert (deleted.deleted, list(deleted.missing_ids)) == (1, [999_999])
    too_many = admin_pb.DeleteExamplesRequest(namespace="support", example_ids=range(1, 10_002))
    with pytest.raises(grpc.RpcError) as refused:
        admin.DeleteExamples(too_many, metadata=ADMIN)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "example_ids holds 10001 ids; delete at most 10000" in (refused.value.details() or "")
    after = ask(served, "reset my password", namespace="support")
    assert gone not in [n.example_id for n in after.neighbours]

    # Catalog: optimistic concurrency.
    stale = admin_pb.UpdateCatalogRequest(
        namespace="support", expected_version=7, catalog=MODELS[:1]
    )
    assert code_of(lambda: admin.UpdateCatalog(stale, metadata=ADMIN)) == grpc.StatusCode.ABORTED
    unchanged = admin.GetNamespace(admin_pb.GetNamespaceRequest(name="support"), metadata=ADMIN)
    assert [m.name for m in unchanged.catalog] == ["cheap", "strong"]
    assert unchanged.catalog_version == 1
    updated = admin.UpdateCatalog(
        admin_pb.UpdateCatalogRequest(
            namespace="support",
            expected_version=1,
            catalog=[
                MODELS[0],
                admin_pb.CatalogModel(
                    name="mid",
                    provider="p",
                    input_usd_per_mtok=1,
                    output_usd_per_mtok=2,
                    latency_ms=300,
                    context_window=8000,
                ),
            ],
        ),
        metadata=ADMIN,
    )
    assert updated.catalog_version == 2
    assert [e.model for e in ask(served, "hello there", namespace="support").estimates] == [
        "cheap",
        "mid",
    ]

    stats = admin.GetStats(admin_pb.GetStatsRequest(namespace="support"), metadata=ADMIN)
    entry = stats.namespaces[0]
    assert entry.examples == 32 and entry.index_size == 32
    assert dict(entry.examples_by_source) == {"reference": 32}
    assert entry.examples_by_model["cheap"] == 31
    assert stats.embedding_model.startswith("all-MiniLM-L6-v2")


def test_reindex_while_deciding_changes_the_generation_exactly_once(
    db_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(db_url, admin_token=TOKEN)
    admin = admin_stub(served)
    generations: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                generations.append(ask(served, "where is my parcel?").index_generation)
            except grpc.RpcError as exc:  # any failure fails the test below
                failures.append(exc)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        wait_until(lambda: len(generations) >= 3, 60, "decisions before the reindex")
        job = admin.Reindex(admin_pb.ReindexRequest(namespace="default"), metadata=ADMIN)
        deadline = time.monotonic() + 60
        while job.state == admin_pb.JOB_STATE_RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
            job = admin.GetReindexJob(
                admin_pb.GetReindexJobRequest(job_id=job.job_id), metadata=ADMIN
            )
        assert job.state == admin_pb.JOB_STATE_SUCCEEDED, job.error
        assert (job.generation, job.done, job.total) == (1, 14, 14)
        deadline = time.monotonic() + 30
        while (not generations or generations[-1] != 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    changes = sum(1 for a, b in itertools.pairwise(generations) if a != b)
    assert (generations[0], generations[-1], changes) == (0, 1, 1)


def test_reindex_to_hnsw_is_reported_in_stats(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, admin_token=TOKEN, follow_interval_seconds=0.1)
    admin = admin_stub(served)
    job = admin.Reindex(admin_pb.ReindexRequest(index_kind="hnsw"), metadata=ADMIN)
    deadline = time.monotonic() + 60
    while job.state == admin_pb.JOB_STATE_RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
        job = admin.GetReindexJob(admin_pb.GetReindexJobRequest(job_id=job.job_id), metadata=ADMIN)
    assert job.state == admin_pb.JOB_STATE_SUCCEEDED
    deadline = time.monotonic() + 30
    entry = admin.GetStats(admin_pb.GetStatsRequest(), metadata=ADMIN).namespaces[0]
    while entry.index_generation != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        entry = admin.GetStats(admin_pb.GetStatsRequest(), metadata=ADMIN).namespaces[0]
    assert (entry.index_kind, entry.index_generation, entry.index_size) == ("hnsw", 1, 14)
    # RFC 3339 with its offset on both stores (SQLite handed back naive times)
    assert datetime.fromisoformat(entry.last_reindex).utcoffset() == timedelta(0)
    listed = admin.ListExamples(admin_pb.ListExamplesRequest(page_size=1), metadata=ADMIN)
    assert datetime.fromisoformat(listed.examples[0].created_at).utcoffset() == timedelta(0)
    assert ask(served, "where is my order?").model == "small"
    bad = admin_pb.ReindexRequest(index_kind="btree")
    assert code_of(lambda: admin.Reindex(bad, metadata=ADMIN)) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = admin_pb.GetReindexJobRequest(job_id="nope")
    assert code_of(lambda: admin.GetReindexJob(unknown, metadata=ADMIN)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_remote_reindex_says_which_kind_of_index_it_published(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """IVF on 14 examples is a flat index: the job read back over gRPC says so, and the CLI
    says why, where it used to report only "succeeded"."""
    served = serve(sqlite_url, admin_token=TOKEN)
    base = ["admin", "--target", served.target, "--token", TOKEN]
    result = CliRunner().invoke(
        cli.main, [*base, "reindex", "--namespace", "default", "--index-type", "ivf"]
    )
    assert result.exit_code == 0, result.output
    assert "published a flat index, not ivf" in result.output
    job = json.loads(result.output[: result.output.rindex("}") + 1])
    assert (job["indexKind"], job["indexExamples"]) == ("flat", "14")


def test_admin_cli_against_a_server(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve(sqlite_url, admin_token=TOKEN)
    base = ["admin", "--target", served.target, "--token", TOKEN]
    rows = tmp_path / "examples.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps(
                {
                    "text": f"cancel my subscription number {n}",
                    "route": "billing",
                    "best_model": "small",
                }
            )
            for n in range(5)
        )
    )
    runner = CliRunner()
    upserted = runner.invoke(cli.main, [*base, "upsert", "default", str(rows), "--batch", "2"])
    assert upserted.exit_code == 0, upserted.output
    assert "added 5, updated 0, unchanged 0" in upserted.output
    listed = runner.invoke(cli.main, [*base, "list", "default", "--route", "billing"])
    assert len(json.loads(listed.output)["examples"]) == 5
    stats = runner.invoke(cli.main, [*base, "stats"])
    assert json.loads(stats.output)["namespaces"][0]["examples"] == "19"  # int64 as JSON text
    denied = runner.invoke(cli.main, ["admin", "--target", served.target, "--token", "x", "stats"])
    assert denied.exit_code == 1 and "UNAUTHENTICATED" in denied.output

    # A bad line anywhere: nothing is sent, so no earlier batch is left stored.
    bad = tmp_path / "bad.jsonl"
    good = [json.dumps({"text": f"pause my plan {n}", "best_model": "small"}) for n in range(4)]
    bad.write_text("\n".join([*good, '{"text": "no model"}', *good]) + "\n")
    refused = runner.invoke(cli.main, [*base, "upsert", "default", str(bad), "--batch", "2"])
    assert refused.exit_code == 1
    assert "line 5: 'best_model'" in refused.output and "nothing was sent" in refused.output
    paused = runner.invoke(cli.main, [*base, "list", "default", "--prefix", "pause my plan"])
    assert json.loads(paused.output).get("examples", []) == []
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"text": "caf\u00e9", "best_model": "small"}\n'.encode("latin-1"))
    undecodable = runner.invoke(cli.main, [*base, "upsert", "default", str(latin1)])
    assert undecodable.exit_code == 1 and "not UTF-8 text" in undecodable.output


def self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key: (cert, key)."""
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls(sqlite_url: str, serve: Callable[..., Served], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    served = serve(
        sqlite_url, tls_cert_file=cert, tls_key_file=key, router_api_keys={"default": ["k1"]}
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(served.target, credentials) as channel:
        router = router_pb2_grpc.RouterStub(channel)
        request = pb.DecideRequest(messages=[pb.Message(role="user", content="where is my order?")])
        keyed = [("authorization", "Bearer k1")]
        assert router.Decide(request, timeout=10, metadata=keyed).model == "small"
    # The plaintext channel the fixture opened cannot talk to a TLS port.
    assert code_of(lambda: ask(served, "where is my order?")) == grpc.StatusCode.UNAVAILABLE

    # The client and the CLI reach such a server too: TLS with a private CA, and a key.
    from routebook.client import RouterClient

    with RouterClient(served.target, api_key="k1", root_certificates=cert.read_bytes()) as client:
        decision = client.decide("where is my order?", session_id="chat-7")
        assert decision.model == "small"
        recorded = client.record_outcome(
            model="small", quality=1.0, decision_id=decision.decision_id
        )
        assert not recorded.duplicate
    with RouterClient(served.target, root_certificates=cert.read_bytes()) as keyless:
        assert code_of(lambda: keyless.decide("hi")) == grpc.StatusCode.UNAUTHENTICATED
    remote = ["decide", "where is my order?", "--target", served.target, "--tls-ca", str(cert)]
    result = CliRunner().invoke(cli.main, [*remote, "--json"], env={"ROUTEBOOK_API_KEY": "k1"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "small"
    refused = CliRunner().invoke(cli.main, [*remote, "--api-key", "nope"])
    assert refused.exit_code == 1 and "UNAUTHENTICATED" in refused.output


def test_bad_tls_files_are_named_not_blamed_on_the_port(
    sqlite_url: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    """grpc refuses unusable PEM as a failed bind: it used to read "is the port in use?",
    even on port 0."""
    cert, key = self_signed(tmp_path)
    other_cert, other_key = self_signed(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage\n")
    cases = [
        (garbage, key, f"tls_cert_file '{garbage}' is not a PEM certificate"),
        (key, cert, f"tls_cert_file '{key}' is not a PEM certificate"),
        (cert, garbage, "it is not PEM, or it is encrypted"),
        (cert, other_key, f"tls_key_file '{other_key}' is not the unencrypted PEM private key "),
        (other_cert, key, "it is the key of another certificate"),
    ]
    for cert_file, key_file, message in cases:
        app = make_app(sqlite_url, tls_cert_file=cert_file, tls_key_file=key_file)
        with pytest.raises(ConfigError) as caught:
            build_server(app, host="127.0.0.1", port=0)
        assert message in str(caught.value) and "in use" not in str(caught.value)


def test_admin_check_and_drift_commands_reach_a_tls_server(
    sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    """They used to open only plaintext channels, which a TLS server refuses (and which would
    carry the admin token in the clear)."""
    cert, key = self_signed(tmp_path)
    served = serve(sqlite_url, tls_cert_file=cert, tls_key_file=key, admin_token=TOKEN)
    runner = CliRunner()
    reach = ["--target", served.target, "--token", TOKEN]
    secure = [*reach, "--tls-ca", str(cert)]

    plaintext = runner.invoke(cli.main, ["admin", *reach, "stats"])
    assert plaintext.exit_code == 1 and "UNAVAILABLE" in plaintext.output
    stats = runner.invoke(cli.main, ["admin", *secure, "stats"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["namespaces"][0]["namespace"] == "default"
    reindexed = runner.invoke(cli.main, ["admin", *secure, "reindex", "--namespace", "default"])
    assert reindexed.exit_code == 0, reindexed.output
    assert json.loads(reindexed.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    checked = runner.invoke(cli.main, ["check", *secure, "--namespace", "default"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["consistent"] is True
    drift = runner.invoke(cli.main, ["drift", *secure, "--namespace", "default"])
    assert drift.exit_code in (0, 1), drift.output  # 1 is a verdict (drifted), not an error
    assert "default: " in drift.stderr and "UNAVAILABLE" not in drift.output

    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    refused = runner.invoke(cli.main, ["drift", *reach, "--tls-ca", str(not_pem)])
    assert refused.exit_code == 2 and "holds no PEM certificate" in refused.output


def test_reindex_wait_polls_over_one_channel(tmp_path: Path) -> None:
    """`admin reindex --wait` polls every 0.5 s; it used to open a channel per poll, each kept
    until the command ended (hundreds over a long reindex). grpc shares one connection between
    channels to the same target, so what piled up was channels, counted here in this process
    while the server answers each call. The test namespace reindexes before the first poll, so
    an Admin servicer that holds the job RUNNING for two polls stands in for the server."""
    peers: list[str] = []
    channels: list[int] = []

    def note(context: grpc.ServicerContext) -> None:
        peers.append(context.peer())
        channels.append(sum(isinstance(o, grpc.Channel) for o in gc.get_objects()))

    class SlowReindex(admin_pb2_grpc.AdminServicer):
        def Reindex(
            self, request: admin_pb.ReindexRequest, context: grpc.ServicerContext
        ) -> admin_pb.ReindexJob:
            note(context)
            return admin_pb.ReindexJob(job_id="j1", state=admin_pb.JOB_STATE_RUNNING)

        def GetReindexJob(
            self, request: admin_pb.GetReindexJobRequest, context: grpc.ServicerContext
        ) -> admin_pb.ReindexJob:
            note(context)
            done = len(peers) >= 3
            state = admin_pb.JOB_STATE_SUCCEEDED if done else admin_pb.JOB_STATE_RUNNING
            return admin_pb.ReindexJob(job_id=request.job_id, state=state)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    admin_pb2_grpc.add_AdminServicer_to_server(SlowReindex(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        waited = CliRunner().invoke(
            cli.main, ["admin", "--target", f"127.0.0.1:{port}", "reindex", "--wait"]
        )
    finally:
        server.stop(0).wait()
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    assert len(peers) == 3 and len(set(peers)) == 1, peers
    assert channels[0] == channels[1] == channels[2], channels


def test_check_compares_the_index_with_the_store(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    from sqlalchemy import delete, select

    from routebook.store.tables import ExampleRow

    served = serve(sqlite_url, admin_token=TOKEN)
    served.router.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcome_id="chk",
            model="small",
            quality=1.0,
            messages=[pb.Message(role="user", content="a brand new query")],
        ),
        timeout=10,
    )
    runner = CliRunner()
    base = ["admin", "--target", served.target, "--token", TOKEN, "check"]
    agreed = runner.invoke(cli.main, base)
    assert agreed.exit_code == 0, agreed.output
    assert json.loads(agreed.output)["consistent"] is True

    # Delete an example behind the server's back (no tombstone): the check must see it.
    with served.app.store.write() as session:
        victim = session.scalars(
            select(ExampleRow.id).where(ExampleRow.source == "reference").order_by(ExampleRow.id)
        ).first()
        session.execute(delete(ExampleRow).where(ExampleRow.id == victim))
    drifted = runner.invoke(cli.main, base)
    assert drifted.exit_code == 1
    alias = runner.invoke(cli.main, ["check", "--target", served.target, "--token", TOKEN])
    assert alias.exit_code == 1 and f'"{victim}"' in alias.output
    report = json.loads(drifted.output)["namespaces"][0]
    assert report["extra"] == [str(victim)] and report["storeExamples"] == "14"


def test_check_finds_a_relabel_the_server_never_applied(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """A relabel keeps the example's id, so ids and outcomes alone cannot show that this
    server still routes by the old label."""
    from sqlalchemy import select, update

    from routebook.store.tables import ExampleRow

    served = serve(sqlite_url, admin_token=TOKEN)
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    before = admin.CheckIndex(admin_pb.CheckIndexRequest(), metadata=ADMIN, timeout=30)
    assert before.consistent, before
    with served.app.store.write() as session:  # behind the server's back: no tombstone
        relabelled, old_route = session.execute(
            select(ExampleRow.id, ExampleRow.route)
            .where(ExampleRow.source == "reference")
            .order_by(ExampleRow.id)
        ).first()
        session.execute(
            update(ExampleRow)
            .where(ExampleRow.id == relabelled)
            .values(route=f"{old_route}-renamed", best_model="big")
        )
    after = admin.CheckIndex(admin_pb.CheckIndexRequest(), metadata=ADMIN, timeout=30)
    (report,) = after.namespaces
    assert not after.consistent
    assert list(report.stale_labels) == [relabelled] and report.stale_labels_count == 1
    assert report.missing_count == report.extra_count == report.stale_outcomes_count == 0


def test_check_of_an_index_far_behind_lists_the_first_ids_and_counts_them_all(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """An index a million examples behind differs by every id: listing them all overflowed
    the message limit, and the operator got RESOURCE_EXHAUSTED instead of the check."""
    from sqlalchemy import delete

    from routebook.service.examples import ExampleInput
    from routebook.store.tables import ExampleRow

    served = serve(sqlite_url, admin_token=TOKEN)
    texts = [f"order number {n} has not arrived" for n in range(1_200)]
    served.app.examples.upsert("default", [ExampleInput(t, "orders", "small") for t in texts])
    with served.app.store.write() as session:  # behind the server's back: no tombstones
        session.execute(delete(ExampleRow).where(ExampleRow.text.like("order number %")))
    admin = admin_pb2_grpc.AdminStub(served.channel)  # type: ignore[no-untyped-call]
    answer = admin.CheckIndex(admin_pb.CheckIndexRequest(), metadata=ADMIN, timeout=30)
    (report,) = answer.namespaces
    assert not answer.consistent
    assert report.extra_count == 1_200 and len(report.extra) == 1_000
    assert list(report.extra) == sorted(report.extra)  # the lowest ids
    assert report.missing_count == 0 and report.stale_outcomes_count == 0


def test_concurrent_upserts_of_the_same_new_texts_all_succeed(
    db_url: str, make_app: Callable[..., object]
) -> None:
    """Two loads overlapping (or a client retry while the first try commits) insert the same
    new texts at once: on PostgreSQL the loser met a unique violation, answered INVALID_ARGUMENT
    and lost its whole batch. It now reads again and finds them unchanged."""
    from routebook.service.examples import ExampleInput

    app = make_app(db_url)
    texts = [f"overlapping load example {n} about refunds" for n in range(40)]
    batch = [ExampleInput(t, "refunds", "small") for t in texts]
    gate = threading.Barrier(4)
    results: list[object] = []

    def load() -> None:
        gate.wait()
        try:
            results.append(app.examples.upsert("default", batch))  # type: ignore[attr-defined]
        except Exception as exc:  # every failure is reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [r for r in results if isinstance(r, Exception)]
    assert failures == []
    assert sum(r.added for r in results) == len(texts)  # type: ignore[attr-defined]
    ids = {tuple(r.example_ids) for r in results}  # type: ignore[attr-defined]
    assert len(ids) == 1  # every caller got the same rows back


def test_a_text_given_twice_in_one_batch_is_one_example_with_the_last_label(
    db_url: str, make_app: Callable[..., object]
) -> None:
    """Every position gets the id of the example that exists afterwards (it used to get a
    row the same batch had inserted and relabelled away), and the index holds that one."""
    from routebook.service.examples import ExampleInput
    from routebook.store.examples import ExampleFilter

    app = make_app(db_url)
    batch = [
        ExampleInput("move my plan to annual billing", "billing", "small"),
        ExampleInput("why was I charged twice", "billing", "small"),
        ExampleInput("move my plan to annual billing", "billing", "mid"),  # the last word
    ]
    result = app.examples.upsert("default", batch)  # type: ignore[attr-defined]
    assert (result.added, result.updated, result.unchanged) == (2, 0, 0)
    first, second, again_first = result.example_ids
    assert first == again_first and first != second
    index = app.registry.get("default")  # type: ignore[attr-defined]
    assert index.facts(first).best_model == "mid"
    rows, _means, _token = app.examples.list(  # type: ignore[attr-defined]
        "default", ExampleFilter(), 1000, ""
    )
    assert {first, second} <= {row.id for row in rows}
    again = app.examples.upsert("default", batch[1:])  # type: ignore[attr-defined]
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    assert again.example_ids == [second, first]


def test_concurrent_creates_of_one_namespace_answer_already_exists(
    db_url: str, make_app: Callable[..., object]
) -> None:
    """Both creates can pass the existence check on PostgreSQL; the loser's insert then meets
    the unique name, which is the same conflict, not a value the store refuses."""
    from routebook.catalog import Catalog, ModelSpec
    from routebook.errors import AlreadyExists

    app = make_app(db_url)
    catalog = Catalog([ModelSpec("cheap", "t", 0.1, 0.4, 300, 128_000)])
    outcomes: list[str] = []
    rounds = 15
    for round_ in range(rounds):
        gate = threading.Barrier(4)

        def create(name: str = f"raced-{round_}", gate: threading.Barrier = gate) -> None:
            gate.wait()
            try:
                app.namespaces.create(name, "", catalog)  # type: ignore[attr-defined]
                outcomes.append("created")
            except AlreadyExists:
                outcomes.append("exists")
            except Exception as exc:  # reported by the assertion below
                outcomes.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert sorted(set(outcomes)) == ["created", "exists"]
    assert outcomes.count("created") == rounds  # one per name, never two


def test_answers_built_by_the_server_fit_in_one_message(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """A page of long texts, or a stream's list of ids, exceeded max_message_bytes: the answer
    failed (RESOURCE_EXHAUSTED) after the stream's batches were all committed, and a retry
    rebuilt the same answer."""
    served = serve(sqlite_url, admin_token=TOKEN, max_message_bytes=16 * 1024)
    admin = admin_pb2_grpc.AdminStub(served.channel)
    long_texts = [f"{n} " + "lorem ipsum dolor sit amet " * 150 for n in range(40)]  # 4 KB each
    long_texts = [t.strip() for t in long_texts]

    def batches() -> Iterator[admin_pb.UpsertExamplesRequest]:
        for start in range(0, 40, 3):
            yield admin_pb.UpsertExamplesRequest(
                namespace="default",
                examples=[
                    admin_pb.ExampleInput(text=t, best_model="small")
                    for t in long_texts[start : start + 3]
                ],
            )

    loaded = admin.UpsertExamplesStream(batches(), metadata=ADMIN)
    assert loaded.added == 40 and len(loaded.example_ids) == 40
    assert not loaded.example_ids_omitted

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = admin.ListExamples(
            admin_pb.ListExamplesRequest(
                namespace="default", page_size=1000, page_token=token, text_prefix=""
            ),
            metadata=ADMIN,
        )
        assert page.ByteSize() < 16 * 1024
        seen += [e.text for e in page.examples]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages > 8  # 40 long texts do not fit in one 16 KiB answer
    assert sorted(t for t in seen if "lorem" in t) == sorted(long_texts)
    assert len(seen) == len(set(seen))

    many = [f"short example {n}" for n in range(8_000)]

    def many_batches() -> Iterator[admin_pb.UpsertExamplesRequest]:
        for start in range(0, len(many), 500):
            yield admin_pb.UpsertExamplesRequest(
                namespace="default",
                examples=[
                    admin_pb.ExampleInput(text=t, best_model="small")
                    for t in many[start : start + 500]
                ],
            )

    big = admin.UpsertExamplesStream(many_batches(), metadata=ADMIN, timeout=600)
    assert big.added == 8_000
    assert list(big.example_ids) == [] and big.example_ids_omitted


def test_a_refused_stream_batch_says_where_to_resume(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url, admin_token=TOKEN)
    admin = admin_pb2_grpc.AdminStub(served.channel)
    good = admin_pb.UpsertExamplesRequest(
        namespace="default", examples=[admin_pb.ExampleInput(text="fine", best_model="small")]
    )
    bad = admin_pb.UpsertExamplesRequest(
        namespace="default", examples=[admin_pb.ExampleInput(text="bad", best_model="gpt-99")]
    )
    with pytest.raises(grpc.RpcError) as caught:
        admin.UpsertExamplesStream(iter([good, bad, good]), metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert "batch 1 of the stream (counted from 0) was refused" in details
    assert "the 1 batches before it are committed (1 added" in details
    assert "gpt-99" in details


def test_a_stream_batch_the_request_checks_refuse_says_where_to_resume(
    sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """The generic checks (a NUL, a field too long, a body that does not parse) ran while the
    servicer fetched the next batch, outside its per-batch handling: the message named
    neither the batch nor what the earlier batches had committed."""
    served = serve(sqlite_url, admin_token=TOKEN)
    admin = admin_pb2_grpc.AdminStub(served.channel)
    raw = served.channel.stream_unary("/routebook.v1.Admin/UpsertExamplesStream")
    nul = admin_pb.ExampleInput(text="a\x00b", best_model="small")
    long_route = admin_pb.ExampleInput(text="x", route="r" * 300, best_model="small")

    def batch(case: int, number: int, *also: admin_pb.ExampleInput) -> bytes:
        return admin_pb.UpsertExamplesRequest(
            namespace="default",
            examples=[
                *(
                    admin_pb.ExampleInput(
                        text=f"resume case {case} batch {number} row {row}", best_model="small"
                    )
                    for row in range(2)
                ),
                *also,
            ],
        ).SerializeToString()

    # Batch 2 of each case, and what the message must say of it: the last one's body stops
    # in the middle of a field.
    refusals = [
        (batch(0, 2, nul), "examples[2].text contains a NUL character"),
        (batch(1, 2, long_route), "examples[2].route has 300 characters; at most 256"),
        (batch(2, 2) + b"\x0a\x80", "the request body is not a valid message of this method"),
    ]
    for case, (last, said) in enumerate(refusals):
        with pytest.raises(grpc.RpcError) as caught:
            raw(iter([batch(case, 0), batch(case, 1), last]), timeout=30, metadata=ADMIN)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, said
        details = caught.value.details() or ""
        assert details.startswith("batch 2 of the stream (counted from 0) was refused: "), details
        assert said in details
        assert (
            "the 2 batches before it are committed (4 added, 0 updated), so resume from batch 2"
            in details
        )
        listed = admin.ListExamples(
            admin_pb.ListExamplesRequest(namespace="default", text_prefix=f"resume case {case} "),
            metadata=ADMIN,
        )
        assert len(listed.examples) == 4  # batches 0 and 1; nothing of batch 2
    # A unary call is refused by the same checks, with no talk of batches.
    with pytest.raises(grpc.RpcError) as caught:
        admin.UpsertExamples(
            admin_pb.UpsertExamplesRequest(namespace="default", examples=[nul]), metadata=ADMIN
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "examples[0].text contains a NUL character"
