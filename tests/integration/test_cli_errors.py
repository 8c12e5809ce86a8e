"""Wrong input to the `routebook` command: a wrong store, settings file or path ends the command
with one `error:` line that names what to fix, and exit 1, never a Python traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from routebook import cli, wiring
from routebook.embed import Embedder
from routebook.errors import ConfigError
from routebook.store.db import make_engine
from routebook.wiring import App
from tests.conftest import POSTGRES_URL, TEST_ROUTES, Served


@pytest.fixture(autouse=True)
def serve_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `serve` that got as far as serving stops at once, with exit 0, where it would block
    the test: each test here expects an error before that."""
    from routebook.server import app

    monkeypatch.setattr(app, "serve_forever", lambda running, grace: running.stop(0).wait())


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, embedder: Embedder) -> CliRunner:
    """In-process commands reuse the session's model instead of loading another copy."""
    monkeypatch.setattr(wiring, "load_embedder", lambda settings: embedder)
    return CliRunner()


def error_line(result: Result) -> str:
    """The command's one error line, after checking that it ended as a person should see."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a traceback
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


#: Every command that opens the store, with the arguments it needs besides --db.
STORE_COMMANDS = {
    "serve": ["serve", "--port", "0", "--decision-log", ""],
    "db upgrade": ["db", "upgrade"],
    "db downgrade": ["db", "downgrade", "--revision", "base"],
    "routes sync": ["routes", "sync", "--routes", str(TEST_ROUTES)],
    "routes sync --dry-run": ["routes", "sync", "--routes", str(TEST_ROUTES), "--dry-run"],
    "decide": ["decide", "where is my parcel?"],
    "record": ["record", "-m", "small", "--quality", "1", "--text", "hi"],
    "reindex": ["reindex"],
    "stats": ["stats"],
    "shadow report": ["shadow", "report"],
}


def _bad_stores(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """A wrong store per kind of mistake, with what its error line must say."""
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("not a database\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    missing_db = make_url(POSTGRES_URL).set(
        database="routebook_no_such_database", password="s3cret"
    )
    return {
        "not a URL": ("nonsense", "database URL 'nonsense' is not a URL"),
        "not a SQLite file": (f"sqlite:///{not_a_db}", "file is not a database"),
        "a folder": (f"sqlite:///{folder}", "it is a folder"),
        "in a missing folder": (
            f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}",
            f"folder {tmp_path / 'no' / 'such'} does not exist",
        ),
        "PostgreSQL down": (
            "postgresql+psycopg://postgres@127.0.0.1:1/x",
            "cannot open the store at postgresql+psycopg://postgres@127.0.0.1:1/x",
        ),
        "a missing database": (
            missing_db.render_as_string(hide_password=False),
            'database "routebook_no_such_database" does not exist',
        ),
    }


@pytest.mark.parametrize("command", STORE_COMMANDS)
def test_a_wrong_store_is_one_error_line_naming_it(
    runner: CliRunner, tmp_path: Path, command: str
) -> None:
    """serve, db upgrade, routes sync, decide, reindex, stats and shadow report each printed a
    SQLAlchemy traceback for a store that could not be opened."""
    for mistake, (url, said) in _bad_stores(tmp_path).items():
        if command in (
            "stats",
            "shadow report",
            "routes sync --dry-run",
            "db downgrade",
        ) and mistake in (
            "a folder",
            "in a missing folder",
        ):
            said = "no SQLite store at"  # a report never creates a SQLite file
        result = runner.invoke(cli.main, [*STORE_COMMANDS[command], "--db", url])
        line = error_line(result)
        assert said in line, f"{mistake}: {line}"
        assert "s3cret" not in result.output  # the password is masked


def test_a_malformed_settings_file_is_named(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TOML syntax error in --config (or in shadow_config's file) was a TOMLDecodeError
    traceback, without the file's name."""
    bad = tmp_path / "bad.toml"
    bad.write_text("quality_target = 0.9,\n")
    for command in (["serve", "--port", "0"], ["decide", "hi"], ["stats"], ["db", "upgrade"]):
        line = error_line(
            runner.invoke(cli.main, [*command, "--db", sqlite_url, "--config", str(bad)])
        )
        assert f"config file {bad} is not valid TOML: Expected newline" in line, line
        assert "(at line 1, column 21)" in line
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("routes_dir = 'café'\n".encode("latin-1"))
    line = error_line(runner.invoke(cli.main, ["stats", "--config", str(latin1)]))
    assert f"config file {latin1} is not valid TOML" in line

    monkeypatch.setenv("ROUTEBOOK_SHADOW_CONFIG", str(bad))
    line = error_line(runner.invoke(cli.main, ["decide", "hi", "--db", sqlite_url]))
    assert line.startswith(f"error: shadow_config: config file {bad} is not valid TOML"), line


def test_a_decision_log_that_cannot_be_opened_stops_serve_before_the_store(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A decision log in a missing folder was a FileNotFoundError traceback, raised after the
    store had been created and migrated."""
    db = tmp_path / "routebook.db"
    log = tmp_path / "no" / "such" / "decisions.log"
    result = runner.invoke(
        cli.main, ["serve", "--port", "0", "--db", f"sqlite:///{db}", "--decision-log", str(log)]
    )
    line = error_line(result)
    assert f"decision_log '{log}' cannot be opened for appending: No such file" in line, line
    assert not db.exists()


def test_a_snapshot_dir_that_is_a_file_stops_reindex_before_it_embeds(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reindex re-embedded every example, then died with a NotADirectoryError traceback."""
    synced = runner.invoke(
        cli.main, ["routes", "sync", "--db", sqlite_url, "--routes", str(TEST_ROUTES)]
    )
    assert synced.exit_code == 0, synced.output
    a_file = tmp_path / "snapshots"
    a_file.write_text("")
    monkeypatch.setenv("ROUTEBOOK_SNAPSHOT_DIR", str(a_file))
    result = runner.invoke(cli.main, ["reindex", "--db", sqlite_url])
    line = error_line(result)
    assert f"snapshot_dir '{a_file}' cannot hold snapshots: Not a directory" in line, line
    assert "re-embedding" not in result.output  # refused before the work, not after it


def test_a_route_file_with_a_nul_is_refused_before_the_store(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL `routes sync` and a first `serve` died with a DataError traceback; SQLite
    stored the text, which no Admin API client could have written."""
    routes = tmp_path / "routes"
    routes.mkdir()
    shop = (TEST_ROUTES / "shop.yaml").read_text()
    assert "- where is my order?\n" in shop
    nul = routes / "shop.yaml"
    nul.write_text(shop.replace("- where is my order?\n", '- "where is\\0 my order?"\n', 1))
    for command in (["routes", "sync"], ["serve", "--port", "0", "--decision-log", ""]):
        result = runner.invoke(cli.main, [*command, "--db", db_url, "--routes", str(routes)])
        line = error_line(result)
        assert str(nul) in line and "'where is\\x00 my order?' contains a NUL character" in line
    assert _tables(db_url) == []  # refused before the store was created or migrated


def test_token_counts_past_the_store_s_int32_are_refused_by_record(
    runner: CliRunner, postgres_url: str
) -> None:
    """`record --input-tokens 3000000000` was accepted (the option allowed uint32) and the
    in-process path died on PostgreSQL with a DataError traceback; the API refuses it."""
    synced = runner.invoke(
        cli.main, ["routes", "sync", "--db", postgres_url, "--routes", str(TEST_ROUTES)]
    )
    assert synced.exit_code == 0, synced.output
    record = ["record", "--db", postgres_url, "-m", "small", "--quality", "1", "--text", "hi"]
    for option in ("--input-tokens", "--output-tokens"):
        result = runner.invoke(cli.main, [*record, option, "3000000000"])
        assert result.exit_code == 2, result.output  # a usage error, said by click
        assert "3000000000 is not in the range 0<=x<=2147483647" in result.output
    fits = runner.invoke(cli.main, [*record, "--input-tokens", str(2**31 - 1)])
    assert fits.exit_code == 0, fits.output


def test_admin_upsert_names_the_line_with_a_lone_surrogate(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A JSON-escaped lone surrogate is valid JSON but no text: it was a UnicodeEncodeError
    traceback. Rows are checked before anything is sent, so no server is needed here."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"text": "fine", "best_model": "small"}\n'
        '{"text": "bad \\ud800 surrogate", "best_model": "small"}\n'
    )
    result = runner.invoke(
        cli.main, ["admin", "--target", "127.0.0.1:1", "upsert", "default", str(rows)]
    )
    line = error_line(result)
    assert f"{rows} line 2: " in line and "surrogates not allowed; nothing was sent" in line


def test_bench_says_when_its_target_is_down_or_its_datasets_hold_no_text(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Both were tracebacks: a grpc _InactiveRpcError and a FileNotFoundError."""
    datasets = tmp_path / "datasets"
    (datasets / "clinc150").mkdir(parents=True)
    (datasets / "clinc150" / "train.jsonl").write_text(
        '{"text": "where is my parcel"}\n{"text": "reset my password"}\n'
    )
    down = ["bench", "--datasets", str(datasets), "--target", "127.0.0.1:1"]
    line = error_line(runner.invoke(cli.main, [*down, "--requests", "2", "--concurrency", "1"]))
    assert line.startswith("error: the server at 127.0.0.1:1 answered UNAVAILABLE: "), line

    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(runner.invoke(cli.main, ["bench", "--datasets", str(empty)]))
    assert f"no dataset texts under {empty}: it holds none of clinc150/train.jsonl" in line


def test_bench_says_when_its_metrics_url_gives_no_metrics_before_the_load(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, serve: Callable[..., Served]
) -> None:
    """`bench --target --metrics` with a wrong URL ended in a urllib traceback, after the
    warm-up and the first level's load."""
    datasets = tmp_path / "datasets"
    (datasets / "clinc150").mkdir(parents=True)
    (datasets / "clinc150" / "train.jsonl").write_text(
        '{"text": "where is my parcel"}\n{"text": "reset my password"}\n'
    )
    served = serve(sqlite_url)
    bench = ["bench", "--datasets", str(datasets), "--target", served.target, "--requests", "2"]
    for url, said in (
        (
            "http://127.0.0.1:1/metrics",
            "cannot read the metrics at http://127.0.0.1:1/metrics: [Errno 111] Connection "
            "refused; give --metrics the server's metrics URL, http://HOST:METRICS_PORT/metrics",
        ),
        (
            "localhost:9464/metrics",
            "cannot read the metrics at localhost:9464/metrics: unknown url type: localhost",
        ),
        ("nonsense", "--metrics 'nonsense': unknown url type: 'nonsense'; give --metrics"),
    ):
        result = runner.invoke(cli.main, [*bench, "--concurrency", "1", "--metrics", url])
        assert said in error_line(result), result.output
        assert "decide c=" not in result.output and "learned head" not in result.output
    served.app.decision_writer.flush()
    with served.app.store.engine.connect() as connection:  # not one Decide was sent
        assert connection.execute(text("SELECT count(*) FROM decisions")).scalar_one() == 0


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_model_path_that_is_not_a_folder_is_said_so(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """A mistyped --model-path read '... has no tokenizer.json: ... set embed_backend =
    "torch"', which sent the user to the wrong fix."""
    monkeypatch.setenv("ROUTEBOOK_EMBED_BACKEND", backend)
    a_file = tmp_path / "model.bin"
    a_file.write_text("")
    for path, state in ((tmp_path / "no" / "model", "does not exist"), (a_file, "is not a folder")):
        serve = ["serve", "--port", "0", "--db", sqlite_url, "--model-path", str(path)]
        line = error_line(CliRunner().invoke(cli.main, serve))  # the real load_embedder
        assert f"model_path '{path}' {state}: give a local sentence-transformers" in line, line


def test_serve_refuses_a_routes_path_that_does_not_exist(
    runner: CliRunner, sqlite_url: str, tmp_path: Path
) -> None:
    """`serve --routes <typo>` warned, then served an empty store (every Decide NOT_FOUND)."""
    typo = tmp_path / "rotues"
    serve = ["serve", "--port", "0", "--db", sqlite_url, "--decision-log", ""]
    line = error_line(runner.invoke(cli.main, [*serve, "--routes", str(typo)]))
    assert line == f"error: routes folder {typo} does not exist"


def _tables(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_serve_on_a_store_a_newer_routebook_migrated_is_one_error_line(
    runner: CliRunner, db_url: str
) -> None:
    """Its migration at start ended in Alembic's traceback for a revision it cannot find;
    `db upgrade` already said it plainly."""
    upgraded = runner.invoke(cli.main, ["db", "upgrade", "--db", db_url])
    assert upgraded.exit_code == 0, upgraded.output
    engine = make_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'ffff00001111'"))
    finally:
        engine.dispose()
    line = error_line(runner.invoke(cli.main, ["serve", "--port", "0", "--db", db_url]))
    assert "schema revision ffff00001111, which this routebook does not know" in line


def test_serve_checks_its_other_inputs_before_it_touches_the_store(
    runner: CliRunner, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --routes <typo>` created and migrated the store (a new SQLite file, or every
    table in an empty PostgreSQL schema) before it found the folder missing; so did a mistyped
    shadow_config or --model-path, and a mistyped --decision-log file was created first."""
    log = tmp_path / "decisions.jsonl"
    serve = ["serve", "--port", "0", "--db", db_url, "--decision-log", str(log)]
    sqlite_file = Path(make_url(db_url).database or "")
    mistakes = {
        "routes": (
            ["--routes", str(tmp_path / "rotues")],
            f"routes folder {tmp_path / 'rotues'} does not exist",
        ),
        "model path": (
            ["--routes", str(TEST_ROUTES), "--model-path", str(tmp_path / "no-model")],
            f"model_path '{tmp_path / 'no-model'}' does not exist",
        ),
        "shadow config": (
            ["--routes", str(TEST_ROUTES)],
            f"shadow_config: config file {tmp_path / 'candidat.toml'} does not exist",
        ),
    }
    for mistake, (flags, said) in mistakes.items():
        if mistake == "shadow config":
            monkeypatch.setenv("ROUTEBOOK_SHADOW_CONFIG", str(tmp_path / "candidat.toml"))
        line = error_line(runner.invoke(cli.main, [*serve, *flags]))
        assert said in line, f"{mistake}: {line}"
        assert not log.exists(), mistake
        if db_url.startswith("sqlite"):
            assert not sqlite_file.exists(), mistake
        else:
            assert _tables(db_url) == [], mistake


def test_a_mistyped_or_lone_shadow_rules_stops_serve_before_the_store_naming_it(
    runner: CliRunner, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped shadow_rules was reported as "routes folder … does not exist", which reads
    as a problem with --routes; without shadow_config it was ignored in silence and the server
    created the store and served, the operator believing the rules were in shadow."""
    serve = ["serve", "--port", "0", "--db", db_url, "--routes", str(TEST_ROUTES)]
    serve += ["--decision-log", ""]
    sqlite_file = Path(make_url(db_url).database or "")
    candidate = tmp_path / "candidate.toml"
    candidate.write_text("quality_target = 0.9\n")
    broken = tmp_path / "broken-rules.yaml"
    broken.write_text("namespace: default\ncatalog: [\n")  # unclosed
    typo = tmp_path / "no-such-rules.yaml"
    mistakes = {
        "mistyped": (candidate, typo, f"error: shadow_rules: route file or folder {typo} does "),
        "broken": (candidate, broken, f"error: shadow_rules: {broken}: not valid YAML"),
        "without shadow_config": (
            None,
            TEST_ROUTES,
            f"error: shadow_rules: {TEST_ROUTES} is set but shadow_config is not, so there is "
            "no shadow candidate to give its rules to",
        ),
    }
    for mistake, (config, rules, said) in mistakes.items():
        if config is None:
            monkeypatch.delenv("ROUTEBOOK_SHADOW_CONFIG", raising=False)
        else:
            monkeypatch.setenv("ROUTEBOOK_SHADOW_CONFIG", str(config))
        monkeypatch.setenv("ROUTEBOOK_SHADOW_RULES", str(rules))
        line = error_line(runner.invoke(cli.main, serve))
        assert line.startswith(said), f"{mistake}: {line}"
        if db_url.startswith("sqlite"):
            assert not sqlite_file.exists(), mistake
        else:
            assert _tables(db_url) == [], mistake


def test_a_broken_route_file_stops_a_new_store_but_not_a_restart(
    db_url: str,
    make_app: Callable[..., App],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Route files are loaded into an empty store only, yet a broken one stopped the start of
    a store already serving (a review: in a rolling restart, every replica would stop)."""
    broken = tmp_path / "routes"
    broken.mkdir()
    (broken / "shop.yaml").write_text("namespace: shop\ncatalog: [\n")  # unclosed
    with pytest.raises(ConfigError):
        make_app(db_url, routes_dir=broken)  # an empty store: the files are what it would load
    if db_url.startswith("sqlite"):
        assert not Path(make_url(db_url).database or "").exists()
    else:
        assert _tables(db_url) == []
    first = make_app(db_url, routes_dir=TEST_ROUTES)
    namespaces = sorted(info.name for info in first.directory.all())
    first.close()
    with caplog.at_level(logging.WARNING, logger="routebook"):
        again = make_app(db_url, routes_dir=broken)
    assert sorted(info.name for info in again.directory.all()) == namespaces
    assert "route files not read, the store already holds namespaces" in caplog.text


@pytest.mark.parametrize("flags", [[], ["--dry-run"], ["--prune"]])
def test_routes_sync_of_a_folder_without_route_files_is_an_error(
    runner: CliRunner, sqlite_url: str, tmp_path: Path, flags: list[str]
) -> None:
    """It printed nothing and exited 0, like a sync with nothing to change."""
    empty = tmp_path / "routes"
    empty.mkdir()
    (empty / "README.md").write_text("route files go here\n")
    db_upgrade = runner.invoke(cli.main, ["db", "upgrade", "--db", sqlite_url])
    assert db_upgrade.exit_code == 0, db_upgrade.output
    sync = ["routes", "sync", "--db", sqlite_url, "--routes", str(empty), *flags]
    line = error_line(runner.invoke(cli.main, sync))
    assert line == f"error: routes folder {empty} holds no route files (*.yaml, *.yml)"


def test_db_upgrade_names_a_bad_revision_and_says_when_the_store_is_past_the_one_asked(
    runner: CliRunner, db_url: str
) -> None:
    """`db upgrade --revision nonsense` ended in Alembic's CommandError traceback, and an
    upgrade to a revision the store was already past printed the store's revision and exited
    0, as if it had done it."""
    from routebook.store import migrate

    line = error_line(
        runner.invoke(cli.main, ["db", "upgrade", "--db", db_url, "--revision", "nonsense"])
    )
    assert line.startswith("error: revision 'nonsense' is not one of this routebook's migrations")
    assert f"the newest is {migrate.head()}" in line
    assert runner.invoke(cli.main, ["db", "upgrade", "--db", db_url]).exit_code == 0
    older = _revision_before(migrate.head())
    for asked in (older, "base"):
        result = runner.invoke(cli.main, ["db", "upgrade", "--db", db_url, "--revision", asked])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == (
            f"store at revision {migrate.head()}, already past {asked}: nothing done (to go "
            f"back, `routebook db downgrade --revision {asked}`)"
        ), result.output
    again = runner.invoke(cli.main, ["db", "upgrade", "--db", db_url])
    assert again.output.strip() == f"store already at revision {migrate.head()}: nothing to do"
    engine = make_engine(db_url)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_db_downgrade_rolls_back_to_the_revision_named_and_only_then(
    runner: CliRunner, db_url: str
) -> None:
    """There was no way back: no `db downgrade`, and no rollback in the docs. It goes through
    the same migrations (their downgrades), refuses without a revision, and says what to run
    afterwards."""
    from routebook.store import migrate

    sync = ["routes", "sync", "--db", db_url, "--routes", str(TEST_ROUTES)]
    assert runner.invoke(cli.main, sync).exit_code == 0  # a store with data in it
    engine = make_engine(db_url)
    head, older = migrate.head(), _revision_before(migrate.head())
    unasked = runner.invoke(cli.main, ["db", "downgrade", "--db", db_url])
    assert unasked.exit_code == 2 and "Missing option '--revision'" in unasked.output
    line = error_line(
        runner.invoke(cli.main, ["db", "downgrade", "--db", db_url, "--revision", "nonsense"])
    )
    assert line.startswith("error: revision 'nonsense' is not one of this routebook's migrations")
    assert migrate.current(engine) == head

    down = runner.invoke(cli.main, ["db", "downgrade", "--db", db_url, "--revision", older])
    assert down.exit_code == 0, down.output
    assert migrate.current(engine) == older
    assert down.output.startswith(f"store downgraded from revision {head} to {older}."), down.output
    assert "a server of this version upgrades the store again when it starts" in down.output
    with engine.connect() as connection:  # the data older revisions knew is still there
        assert connection.execute(text("SELECT count(*) FROM examples")).scalar_one() > 0

    forward = ["db", "downgrade", "--db", db_url, "--revision", head]
    assert error_line(runner.invoke(cli.main, forward)) == (
        f"error: the store is at revision {older}, behind {head}: nothing done (to go forward, "
        f"`routebook db upgrade --revision {head}`)"
    )
    up = runner.invoke(cli.main, ["db", "upgrade", "--db", db_url])
    assert up.output.strip() == f"store at revision {head}", up.output
    assert runner.invoke(cli.main, ["stats", "--db", db_url]).exit_code == 0
    engine.dispose()


def _revision_before(revision: str | None) -> str:
    from alembic.script import ScriptDirectory

    from routebook.store import migrate

    assert revision is not None
    script = ScriptDirectory(str(migrate.migrations_dir())).get_revision(revision)
    assert script is not None and isinstance(script.down_revision, str)
    return script.down_revision
