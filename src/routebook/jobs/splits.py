"""Deterministic splits of an index file into an index part and a calibration part.

Why deterministic: a calibrated setting must be reproducible from the command line, so the same
seed always holds out the same rows. Intent rows are split per label (stratified), so every
route keeps most of its examples in the index and rare labels are not lost to calibration.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

Row = TypeVar("Row")

#: Share of an index file held out for calibration when no --calib file is given.
CALIB_FRACTION = 0.2


def split(
    rows: Sequence[Row],
    seed: int,
    fraction: float = CALIB_FRACTION,
    stratum: Callable[[Row], str] | None = None,
    always_out: Callable[[Row], bool] | None = None,
) -> tuple[list[Row], list[Row]]:
    """(kept, held out): about `fraction` of the rows, per stratum when one is given.

    Rows for which `always_out` is true are all held out (out-of-scope intent rows: they are
    not a route, they calibrate the cold-start test).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups: dict[str, list[int]] = {}
    held: set[int] = set()
    for i, row in enumerate(rows):
        if always_out is not None and always_out(row):
            held.add(i)
        else:
            groups.setdefault(stratum(row) if stratum else "", []).append(i)
    rng = random.Random(seed)
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        # At least one row of each stratum is held out, and at least one kept.
        take = round(len(members) * fraction)
        take = min(max(take, 1), len(members) - 1) if len(members) > 1 else 0
        held.update(members[:take])
    kept = [row for i, row in enumerate(rows) if i not in held]
    out = [row for i, row in enumerate(rows) if i in held]
    return kept, out
