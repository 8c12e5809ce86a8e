"""How a background loop (the store follower, the decision writer, the sweepers, the drift
keeper) fails again and again without flooding the log or the store.

The project's rule for repeated background failures (docs/reliability.md item 80, the head
trainer): one log line per try, the traceback only with the first failure in a row or a new
kind of error, and a wait that grows while the failures go on. A store outage used to make the
follower log two chained tracebacks every 0.5 s (3,604 lines in 16 s) and try again as fast.

`FailureStreak` keeps one loop's failures in a row: `wait()` is the loop's interval when
healthy (freshness is not traded away), doubled at each failure in a row up to
`BACKOFF_CAP_SECONDS` (never below the interval itself), and back to the interval at the first
success, which is logged once.
"""

from __future__ import annotations

import logging

#: The longest wait between tries while failing: what a recovered store waits at most before
#: the loop notices. A few seconds keeps recovery quick and the tries few.
BACKOFF_CAP_SECONDS = 5.0


def error_kind(exc: BaseException) -> str:
    """The kind of an error, for "is this a new error": its class, and for a SQLAlchemy error
    the driver's class underneath. Not the message, which often carries a changing detail
    (a backend pid, a port, a timestamp) and would make every try "new"."""
    kind = type(exc).__qualname__
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        kind += f" ({type(orig).__module__}.{type(orig).__qualname__})"
    return kind


def message_line(error: object, most: int = 300) -> str:
    """The first line of an error's message (its class's name when it has none): what a log
    line or an answer quotes of it."""
    text = str(error).strip()
    return text.splitlines()[0][:most] if text else type(error).__name__


def first_line(exc: BaseException, most: int = 300) -> str:
    """An error on one line: its class and the first line of its message."""
    if not str(exc).strip():
        return type(exc).__name__
    return f"{type(exc).__name__}: {message_line(exc, most)}"


class FailureStreak:
    """One background loop's failures in a row, logged and waited on the project's way."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float,
        cap: float = BACKOFF_CAP_SECONDS,
    ) -> None:
        self._log = logger
        #: What the loop does, for the log: "following the store".
        self._what = what
        self._interval = interval
        self._cap = max(cap, interval)
        self.in_a_row = 0
        self._kind: str | None = None
        #: A failure of this streak was logged here (not only counted).
        self._said = False

    def wait(self) -> float:
        """Seconds until the next try: the interval when healthy, doubled per failure in a
        row while failing, capped."""
        if self.in_a_row == 0:
            return self._interval
        # The exponent stops growing once the cap is reached: 2.0 ** 1024 overflows, and an
        # uncaught OverflowError after about 85 minutes of outage killed every loop's thread.
        doublings = min(self.in_a_row, 64)
        return min(self._cap, self._interval * 2.0**doublings)

    def failed(self, exc: BaseException, level: int = logging.ERROR) -> None:
        """Count a failure and log it on one line; with the traceback when it is the first in
        a row or of another kind than the one before."""
        kind = error_kind(exc)
        new = self.in_a_row == 0 or kind != self._kind
        self.in_a_row += 1
        self._kind = kind
        self._said = True
        self._log.log(
            level,
            "%s failed (%d in a row); next try in %.1fs: %s",
            self._what,
            self.in_a_row,
            self.wait(),
            first_line(exc),
            exc_info=exc if new else None,
        )

    def counted(self) -> None:
        """Count a failure that the caller logs its own way (a store outage said once at its
        start and once at its end): the wait backs off all the same."""
        self.in_a_row += 1

    def succeeded(self) -> None:
        """Back to the interval; say so once if failures were logged here."""
        if self._said:
            self._log.warning(
                "%s works again after %d failures in a row", self._what, self.in_a_row
            )
        self.in_a_row = 0
        self._kind = None
        self._said = False
