"""No acknowledged write is lost when a `routebook serve` process is killed with SIGKILL.

A few cycles of the kill loop (tests/reliability/killloop.py; run it with --cycles 50 for the
long version) on SQLite and on PostgreSQL: writers send RecordOutcome and Admin UpsertExamples
to a real server process, which is killed at a random moment; after each restart, which needs
no manual repair, every acknowledged write is in the store once and in the index.
"""

from __future__ import annotations

import random
from pathlib import Path

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
