"""Progress reporting for long jobs: a rich bar for people, nothing for tests and `--json`.

Jobs take a `Tracker` and call `tracker.step(description, total)` for each phase; the returned
function advances the bar. Keeping rich behind this seam lets the maths run silently in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class Tracker(Protocol):
    def step(self, description: str, total: int) -> Advance: ...


class Silent:
    """Tracks nothing."""

    def step(self, description: str, total: int) -> Advance:
        return lambda n: None


class RichTracker:
    """One rich progress bar per phase, on stderr so stdout stays clean for `--json`."""

    def __init__(self, progress: object) -> None:
        self._progress = progress

    def step(self, description: str, total: int) -> Advance:
        from rich.progress import Progress

        assert isinstance(self._progress, Progress)
        progress = self._progress
        task = progress.add_task(description, total=max(total, 1))
        if total <= 0:
            progress.update(task, completed=1)

        def advance(n: int) -> None:
            progress.advance(task, n)

        return advance


@contextmanager
def rich_tracker(enabled: bool = True) -> Iterator[Tracker]:
    if not enabled:
        yield Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        yield RichTracker(progress)
