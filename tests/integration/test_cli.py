"""The `routebook` command: sync, decide, record and db upgrade, in-process and against a
server; and `routebook serve` as a real process that stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from routebook import cli, wiring
from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.index.snapshot import store_folder
from routebook.routefiles import load_route_dir
from routebook.service.examples import ExampleInput
from routebook.store import examples as ex_store
from routebook.store import migrate
from routebook.store.db import make_engine, open_store
from routebook.store.identity import store_id
from routebook.v1 import router_pb2 as pb
from routebook.v1 import router_pb2_grpc
from routebook.wiring import App
from tests.conftest import TEST_ROUTES, Served
from tests.processes import server_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, embedder: SentenceTransformerEmbedder) -> CliRunner:
    """In-process commands reuse the session's model instead of loading another copy."""
    monkeypatch.setattr(wiring, "load_embedder", lambda settings: embedder)
    return CliRunner()


def test_db_upgrade(runner: CliRunner, sqlite_url: str) -> None:
    result = runner.invoke(cli.main, ["db", "upgrade", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    engine = make_engine(sqlite_url)
    assert migrate.current(engine) == migrate.head()
    assert migrate.head() in result.output
    engine.dispose()


def test_routes_sync_is_idempotent_and_dry_run_shows_the_diff(
    runner: CliRunner, sqlite_url: str, tmp_path: Path
) -> None:
    args = ["routes", "sync", "--db", sqlite_url, "--routes", str(TEST_ROUTES)]
    first = runner.invoke(cli.main, args)
    assert first.exit_code == 0, first.output
    assert "+14 added" in first.output
    again = runner.invoke(cli.main, args)
    assert "+0 added, ~0 changed, -0 removed, 14 unchanged" in again.output

    edited = tmp_path / "routes"
    shutil.copytree(TEST_ROUTES, edited)
    path = edited / "shop.yaml"
    text = path.read_text().replace("- where is my order?", "- where is my order right now?")
    path.write_text(text.replace("best_model: mid", "best_model: frontier"))
    preview = runner.invoke(
        cli.main,
        ["routes", "sync", "--db", sqlite_url, "--routes", str(edited), "--dry-run", "--prune"],
    )
    assert preview.exit_code == 0, preview.output
    assert "+ where is my order right now?" in preview.output
    assert "- where is my order?" in preview.output
    assert "~ summarize this meeting transcript into action items" in preview.output
    # A dry run changes nothing.
    assert "14 unchanged" in runner.invoke(cli.main, args).output


def test_routes_sync_says_which_of_catalog_and_policy_changed(
    runner: CliRunner, sqlite_url: str, tmp_path: Path
) -> None:
    """A change to the policy section alone was reported as "catalog updated"."""
    path = tmp_path / "shop.yaml"
    shutil.copy(TEST_ROUTES / "shop.yaml", path)
    args = ["routes", "sync", "--db", sqlite_url, "--routes", str(path)]
    assert runner.invoke(cli.main, args).exit_code == 0
    path.write_text(path.read_text() + "policy:\n  pii_tags: [region=eu]\n")
    policy_only = runner.invoke(cli.main, args)
    assert policy_only.exit_code == 0, policy_only.output
    assert policy_only.output.rstrip().endswith("14 unchanged; policy updated")
    path.write_text(path.read_text().replace("latency_ms: 300", "latency_ms: 310", 1))
    catalog_only = runner.invoke(cli.main, args)
    assert catalog_only.output.rstrip().endswith("14 unchanged; catalog updated")
    assert runner.invoke(cli.main, args).output.rstrip().endswith("14 unchanged")


def test_reindex_says_when_the_index_is_not_the_kind_asked_for(
    runner: CliRunner, sqlite_url: str, tmp_path: Path
) -> None:
    """IVF on too few vectors falls back to flat; `reindex --index-type ivf` said only
    "succeeded", and `admin stats` then showed a flat index."""
    sync = ["routes", "sync", "--db", sqlite_url, "--routes", str(TEST_ROUTES)]
    assert runner.invoke(cli.main, sync).exit_code == 0
    base = ["reindex", "--db", sqlite_url, "--snapshot-dir", str(tmp_path / "snapshots")]
    ivf = runner.invoke(cli.main, [*base, "--index-type", "ivf", "--reuse-vectors"])
    assert ivf.exit_code == 0, ivf.output
    assert re.search(
        r"default: generation \d+, flat index of 14 examples \(not ivf: 14 examples are too "
        r"few to train IVF, which needs at least 312; flat is exact search",
        ivf.output,
    ), ivf.output
    hnsw = runner.invoke(cli.main, [*base, "--index-type", "hnsw", "--reuse-vectors"])
    assert re.search(r"default: generation \d+, hnsw index of 14 examples\n", hnsw.output)
    assert "(not" not in hnsw.output


def test_a_failed_reindex_says_why_once(runner: CliRunner, sqlite_url: str, tmp_path: Path) -> None:
    """The job logged its error and the command printed it: the same message twice. Run as a
    process, since pytest's log capture hides what the log prints to a terminal."""
    sync = ["routes", "sync", "--db", sqlite_url, "--routes", str(TEST_ROUTES)]
    assert runner.invoke(cli.main, sync).exit_code == 0
    snapshots = tmp_path / "snapshots"
    store = open_store(sqlite_url)
    try:
        folder = store_folder(snapshots, store_id(store))
    finally:
        store.dispose()
    folder.mkdir(parents=True)
    (folder / "default").write_text("")  # where the namespace's snapshots go: fails the job
    reindex = [sys.executable, "-m", "routebook", "reindex", "--db", sqlite_url, "--reuse-vectors"]
    done = subprocess.run(
        [*reindex, "--snapshot-dir", str(snapshots)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("ROUTEBOOK_")},
    )
    said = f"snapshot_dir '{snapshots}' cannot hold snapshots: File exists"
    assert done.returncode == 1, done.stderr
    assert done.stderr.count(said) == 1, done.stderr
    assert f"error: {said}" in done.stderr
    assert "Traceback" not in done.stderr


def test_routes_sync_reports_a_bad_file_with_exit_1(
    runner: CliRunner, sqlite_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (TEST_ROUTES / "shop.yaml").read_text().replace("best_model: mid", "best_model: gpt-9")
    )
    result = runner.invoke(cli.main, ["routes", "sync", "--db", sqlite_url, "--routes", str(bad)])
    assert result.exit_code == 1
    assert str(bad) in result.output and "summaries" in result.output
    assert "gpt-9" in result.output


def test_decide_and_record_in_process(runner: CliRunner, sqlite_url: str) -> None:
    base = ["--db", sqlite_url]
    runner.invoke(cli.main, ["routes", "sync", *base, "--routes", str(TEST_ROUTES)])
    decided = runner.invoke(cli.main, ["decide", "where is my parcel?", *base, "--json"])
    assert decided.exit_code == 0, decided.output
    payload = json.loads(decided.output)
    assert payload["model"] == "small" and payload["strategy"] == "STRATEGY_SEMANTIC"

    recorded = runner.invoke(
        cli.main,
        [
            "record",
            *base,
            "--decision-id",
            payload["decisionId"],
            "--model",
            "small",
            "--quality",
            "0.9",
            "--outcome-id",
            "cli-1",
        ],
    )
    assert recorded.exit_code == 0, recorded.output
    assert "recorded: outcome cli-1" in recorded.output
    repeated = runner.invoke(
        cli.main,
        [
            "record",
            *base,
            "--decision-id",
            payload["decisionId"],
            "--model",
            "small",
            "--quality",
            "0.9",
            "--outcome-id",
            "cli-1",
        ],
    )
    assert "already recorded" in repeated.output

    table = runner.invoke(cli.main, ["decide", "where is my parcel?", *base])
    assert "nearest precedents" in table.output and "order_status" in table.output

    unknown = runner.invoke(cli.main, ["decide", "hi", *base, "--namespace", "nope"])
    assert unknown.exit_code == 1
    assert "namespace 'nope' does not exist" in unknown.output


def test_in_process_decide_uses_the_learned_head_as_a_server_does(
    runner: CliRunner, sqlite_url: str
) -> None:
    """The head is trained in the background after start: a one-shot command used to decide
    before it existed, by another rule than the server's on the same store."""
    shipped = Path(__file__).parents[2] / "routes"
    base = ["--db", sqlite_url]
    synced = runner.invoke(cli.main, ["routes", "sync", *base, "--routes", str(shipped)])
    assert synced.exit_code == 0, synced.output
    decided = runner.invoke(
        cli.main, ["decide", "prove there are infinitely many primes", *base, "--json"]
    )
    assert decided.exit_code == 0, decided.output
    payload = json.loads(decided.output)
    assert int(payload["head"]["trainedOn"]) > 100  # trained on the shipped routes
    assert "the index's head" in payload["reason"]


def test_decide_against_a_server(
    runner: CliRunner, sqlite_url: str, serve: Callable[..., Served]
) -> None:
    served = serve(sqlite_url)
    result = runner.invoke(
        cli.main, ["decide", "where is my order?", "--target", served.target, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model"] == "small"
    failed = runner.invoke(cli.main, ["decide", "   ", "--target", served.target])
    assert failed.exit_code == 1
    assert "INVALID_ARGUMENT" in failed.output


def test_record_reports_a_failed_call_as_a_failure_not_a_poor_answer(
    runner: CliRunner, sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """`--failure` used to record quality 0: after a rate limit it taught the index that the
    model answers the query badly and started no cooldown. A failed call is --failure-kind."""
    from sqlalchemy import func, select

    from routebook.store.tables import ModelFailureRow, OutcomeRow

    served = serve(sqlite_url)

    def decide() -> pb.DecideResponse:
        request = pb.DecideRequest(messages=[pb.Message(role="user", content="where is my order?")])
        response: pb.DecideResponse = served.router.Decide(request, timeout=10)
        return response

    def count(table: type) -> int:
        with served.app.store.read() as session:
            return int(session.scalar(select(func.count()).select_from(table)) or 0)

    decision = decide()
    assert decision.model == "small"
    remote = ["record", "--target", served.target, "--decision-id", decision.decision_id]
    small = [*remote, "--model", "small"]

    gone = runner.invoke(cli.main, [*small, "--failure"])
    assert gone.exit_code == 2 and "--failure-kind" in gone.output  # not reinterpreted
    limited = runner.invoke(
        cli.main, [*small, "--failure-kind", "rate_limited", "--retry-after", "30"]
    )
    assert limited.exit_code == 0, limited.output
    assert "a rate_limited failure (small cooling down for 30 s)" in limited.output
    assert (count(ModelFailureRow), count(OutcomeRow)) == (1, 0)  # no quality evidence
    assert decide().model == "mid"

    in_process = ["record", "--db", sqlite_url, "--decision-id", decision.decision_id]
    timed_out = runner.invoke(
        cli.main, [*in_process, "--model", "mid", "--failure-kind", "timeout"]
    )
    assert timed_out.exit_code == 0, timed_out.output
    assert "a timeout failure (no cooldown started)" in timed_out.output
    assert (count(ModelFailureRow), count(OutcomeRow)) == (2, 0)

    poor = runner.invoke(cli.main, [*remote, "--model", "frontier", "--bad"])
    assert poor.exit_code == 0, poor.output
    assert "(quality 0.00)" in poor.output and count(OutcomeRow) == 1

    both = runner.invoke(cli.main, [*small, "--good", "--failure-kind", "timeout"])
    assert both.exit_code == 2 and "not --good/--bad and --failure-kind" in both.output
    stray = runner.invoke(cli.main, [*small, "--quality", "1", "--retry-after", "5"])
    assert stray.exit_code == 2 and "--failure-kind rate_limited" in stray.output


def test_record_by_text_charges_the_tenant_named(
    runner: CliRunner, sqlite_url: str, serve: Callable[..., Served]
) -> None:
    """Black-box review 2, finding 9: `record` had no --tenant, so a report by --text was
    always charged to no tenant and a CLI report could never reach the right budget."""
    from sqlalchemy import select

    from routebook.store.tables import OutcomeRow

    served = serve(sqlite_url)
    by_text = ["record", "--text", "where is my parcel?", "--model", "small", "--good"]
    remote = runner.invoke(
        cli.main, [*by_text, "--target", served.target, "--tenant", "acme", "--cost-usd", "0.5"]
    )
    assert remote.exit_code == 0, remote.output
    local = runner.invoke(
        cli.main, [*by_text, "--db", sqlite_url, "--tenant", "beta", "--cost-usd", "0.25"]
    )
    assert local.exit_code == 0, local.output
    with served.app.store.read() as session:
        charged = session.execute(
            select(OutcomeRow.tenant, OutcomeRow.cost_usd).order_by(OutcomeRow.id)
        ).all()
    assert [tuple(row) for row in charged] == [("acme", 0.5), ("beta", 0.25)]

    # By decision id the decision's tenant is charged: a --tenant there would be ignored.
    decision = served.router.Decide(
        pb.DecideRequest(messages=[pb.Message(role="user", content="where is my order?")])
    )
    by_id = ["record", "--target", served.target, "--decision-id", decision.decision_id]
    refused = runner.invoke(cli.main, [*by_id, "--model", "small", "--good", "--tenant", "acme"])
    assert refused.exit_code == 2
    assert "--tenant goes with --text" in refused.output


def test_routes_help_names_no_command_that_does_not_exist() -> None:
    """Black-box review 2, finding 10: `routes --help` said "validate and sync them", and
    `routes validate` is no command; validating is `sync --dry-run`."""
    result = CliRunner().invoke(cli.main, ["routes", "--help"])
    assert result.exit_code == 0
    assert "sync --dry-run validates them" in result.output
    assert "validate and sync" not in result.output
    assert CliRunner().invoke(cli.main, ["routes", "validate"]).exit_code == 2  # still none


def test_record_needs_a_quality(runner: CliRunner) -> None:
    result = runner.invoke(cli.main, ["record", "--model", "small", "--text", "hi"])
    assert result.exit_code == 2
    assert "--quality" in result.output


def test_serve_process_loads_default_routes_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`routebook serve` on the embedded default: migrates, loads routes/, serves, and on
    SIGTERM finishes and exits 0 (NOT_SERVING while it drains: reliability/test_graceful.py)."""
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    with server_process(db, tmp_path, ROOT / "routes") as (process, port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            router = router_pb2_grpc.RouterStub(channel)
            response = router.Decide(
                pb.DecideRequest(messages=[pb.Message(role="user", content="Where is my order?")]),
                timeout=10,
            )
            assert response.strategy == pb.STRATEGY_SEMANTIC
            assert response.model == "gpt-4.1-nano"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_a_bad_route_file_among_good_ones_applies_nothing(
    runner: CliRunner, sqlite_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "routes"
    folder.mkdir()
    shutil.copy(TEST_ROUTES / "shop.yaml", folder / "a_good.yaml")
    (folder / "b_bad.yaml").write_text(
        (TEST_ROUTES / "shop.yaml")
        .read_text()
        .replace("namespace: default", "namespace: other")
        .replace("- name: refunds", "- name: order_status")
    )
    result = runner.invoke(
        cli.main, ["routes", "sync", "--db", sqlite_url, "--routes", str(folder)]
    )
    assert result.exit_code == 1
    assert (
        "b_bad.yaml" in result.output and "route 'order_status' is defined twice" in result.output
    )
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        tables = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='namespaces'"
        ).all()
        count = (
            connection.exec_driver_sql("SELECT count(*) FROM namespaces").scalar() if tables else 0
        )
    engine.dispose()
    assert count == 0


def test_prune_removes_what_left_the_files_and_keeps_what_the_admin_api_added(
    sqlite_url: str, make_app: Callable[..., App], tmp_path: Path
) -> None:
    app = make_app(sqlite_url)  # synced from TEST_ROUTES at start: 14 route-file examples
    added = app.examples.upsert(
        "default", [ExampleInput("reset my two-factor device", "account", "small")]
    )
    assert added.added == 1
    edited = tmp_path / "routes"
    shutil.copytree(TEST_ROUTES, edited)
    path = edited / "shop.yaml"
    path.write_text(path.read_text().replace("      - where is my order?\n", ""))
    (report,) = app.examples.sync_routes(load_route_dir(edited), prune=True)
    assert report.removed == ["where is my order?"]  # left the file: pruned
    namespace_id = app.directory.resolve("default").id
    with app.store.read() as session:
        rows = ex_store.list_examples(session, namespace_id, ex_store.ExampleFilter(), 0, 100)
        texts = {e.text for e in rows}
    assert "reset my two-factor device" in texts  # the Admin API's example stays
    assert "where is my order?" not in texts


def test_reports_only_read_the_store_and_say_what_is_wrong(
    runner: CliRunner, sqlite_url: str, serve: Callable[..., Served], tmp_path: Path
) -> None:
    typo = tmp_path / "routebok.db"
    missing = runner.invoke(cli.main, ["stats", "--db", f"sqlite:///{typo}"])
    assert missing.exit_code == 1 and "no SQLite store at" in missing.output
    assert not typo.exists()  # no new, empty store reporting zeros

    empty = tmp_path / "empty.db"
    empty.touch()
    unmigrated = runner.invoke(cli.main, ["shadow", "report", "--db", f"sqlite:///{empty}"])
    assert unmigrated.exit_code == 1 and "run `routebook db upgrade`" in unmigrated.output
    engine = make_engine(f"sqlite:///{empty}")
    assert migrate.current(engine) is None  # a report never migrates
    engine.dispose()

    serve(sqlite_url)  # a migrated store with namespace "default"
    unknown = runner.invoke(cli.main, ["stats", "--db", sqlite_url, "--namespace", "defualt"])
    assert unknown.exit_code == 1 and "namespace 'defualt' does not exist" in unknown.output
    known = runner.invoke(cli.main, ["stats", "--db", sqlite_url, "--namespace", "default"])
    assert known.exit_code == 0, known.output


def _revision_below_head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(migrate.migrations_dir())).get_revision(migrate.head())
    below = head.down_revision if head is not None else None
    assert isinstance(below, str)
    return below


def test_a_dry_run_never_migrates_nor_creates_a_store(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    """`routes sync --dry-run` built the whole service: it upgraded an older store's schema
    under the servers running on it, and printed "+14 added" against a new, empty store it
    had just created at a mistyped --db."""
    sync = ["routes", "sync", "--routes", str(TEST_ROUTES)]
    dry = [*sync, "--dry-run", "--db"]
    engine = make_engine(db_url)
    with engine.connect():  # an empty database (on SQLite, an empty file)
        pass
    empty = runner.invoke(cli.main, [*dry, db_url])
    assert empty.exit_code == 1
    assert "has no routebook schema" in empty.output and "check --db" in empty.output
    assert migrate.current(engine) is None

    older = _revision_below_head()
    migrate.upgrade(engine, older)
    behind = runner.invoke(cli.main, [*dry, db_url])
    assert behind.exit_code == 1
    assert f"is at schema revision {older}, this routebook needs {migrate.head()}" in (
        behind.output
    )
    assert "run `routebook db upgrade`" in behind.output
    assert migrate.current(engine) == older  # not migrated

    migrate.upgrade(engine)
    current = runner.invoke(cli.main, [*dry, db_url])
    assert current.exit_code == 0, current.output
    assert "would change default" in current.output and "+14 added" in current.output
    synced = runner.invoke(cli.main, [*sync, "--db", db_url])
    assert "+14 added" in synced.output  # the dry run wrote nothing
    engine.dispose()

    typo = tmp_path / "routebok.db"
    missing = runner.invoke(cli.main, [*dry, f"sqlite:///{typo}"])
    assert missing.exit_code == 1 and "no SQLite store at" in missing.output
    assert not typo.exists()
