"""No acknowledged write is lost when a `routebook serve` process is killed with SIGKILL.

A few cycles of the kill loop (tests/reliability/killloop.py; run it with --cycles 50 for the
long version) on SQLite and on PostgreSQL: writers send RecordOutcome and Admin UpsertExamples
to a real server process, which is killed at a random moment; after each restart, which needs
no manual repair, every acknowledged write is in the store once and in the index.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from routebook.wiring import App
from tests.integration.test_policy import POLICY_ROUTES
from tests.reliability.killloop import run

CYCLES = 3


def test_sigkill_loses_no_acknowledged_write(db_url: str, tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    tally = run(db_url, CYCLES, seed, tmp_path)
    report = f"seed {seed}: {tally.summary()} {tally.problems[:10]}"
    assert tally.cycles == CYCLES, report
    assert tally.acknowledged > 0, report
    assert tally.found == tally.acknowledged, report
    assert (tally.lost, tally.duplicated) == (0, 0), report
    assert (tally.index_missing, tally.index_size_mismatch) == (0, 0), report
    assert not tally.problems, report


def test_a_first_start_that_dies_loading_route_files_loads_them_all_next_time(
    sqlite_url: str, make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Route files are loaded into an empty store only. They were written one namespace per
    transaction, so a first start killed after the first left a store that was no longer
    empty, and the other namespaces never came (NOT_FOUND until a manual `routes sync`). A
    failure stands in for the kill: either way nothing of the load may be committed."""
    import routebook.store.db as store_db
    from routebook.store.db import make_engine

    def dying_engine(*args: Any, **kwargs: Any) -> Engine:
        engine = make_engine(*args, **kwargs)

        def die(_conn: object, _cursor: object, statement: str, params: Any, *_: object) -> None:
            if statement.startswith("INSERT INTO namespaces") and "strict" in str(params):
                raise RuntimeError("killed while loading route files")

        event.listen(engine, "before_cursor_execute", die)
        return engine

    with monkeypatch.context() as patched:
        patched.setattr(store_db, "make_engine", dying_engine)  # what open_store builds on
        with pytest.raises(RuntimeError, match="killed"):
            make_app(sqlite_url, routes_dir=POLICY_ROUTES)
    app = make_app(sqlite_url, routes_dir=POLICY_ROUTES)
    assert sorted(info.name for info in app.directory.all()) == [
        "default",
        "guarded",
        "ruled",
        "strict",
    ]
