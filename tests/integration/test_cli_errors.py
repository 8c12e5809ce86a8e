"""Wrong input to the `routebook` command: a wrong store, settings file or path ends the command
with one `error:` line that names what to fix, and exit 1, never a Python traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from routebook import cli, wiring
from routebook.embed import Embedder
from tests.conftest import POSTGRES_URL, TEST_ROUTES


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
        if command in ("stats", "shadow report", "routes sync --dry-run") and mistake in (
            "a folder",
            "in a missing folder",
        ):
            said = "no SQLite store at"  # a report never creates a SQLite file
        result = runner.invoke(cli.main, [*STORE_COMMANDS[command], "--db", url])
        line = error_line(result)
        assert said in line, f"{mistake}: {line}"
        assert "s3cret" not in result.output  # the password is masked
