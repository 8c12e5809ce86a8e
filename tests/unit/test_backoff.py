"""A background loop's failures in a row (service/backoff.py): what is logged and how long it
waits, with real exceptions and the real logging module."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from routebook.service.backoff import FailureStreak, error_kind

log = logging.getLogger("routebook.test-backoff")


def _outage(detail: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionError(f"connection refused ({detail})"))


def test_the_traceback_comes_with_the_first_failure_and_a_new_kind_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    streak = FailureStreak(log, "following the store", 0.5)
    errors = [
        _outage("pid 1"),
        _outage("pid 2"),  # same kind, another detail: no traceback
        ProgrammingError("SELECT 1", {}, ValueError("no such column")),  # a new kind
        ProgrammingError("SELECT 1", {}, ValueError("no such column")),
    ]
    with caplog.at_level("INFO", logger="routebook"):
        for error in errors:
            streak.failed(error)
        streak.succeeded()
        streak.failed(_outage("pid 3"))  # the first of a new run of failures
    said = [r.getMessage() for r in caplog.records]
    assert [r.exc_info is not None for r in caplog.records] == [
        True,
        False,
        True,
        False,
        False,
        True,
    ]
    assert said[0].startswith("following the store failed (1 in a row); next try in 1.0s: ")
    assert "connection refused (pid 1)" in said[0]
    assert said[4] == "following the store works again after 4 failures in a row"
    assert error_kind(errors[0]) != error_kind(errors[2])


def test_the_wait_doubles_while_failing_up_to_the_cap_and_resets_on_success() -> None:
    streak = FailureStreak(log, "x", 0.5, cap=5.0)
    assert streak.wait() == 0.5
    waits = []
    for _ in range(6):
        streak.counted()
        waits.append(streak.wait())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    streak.succeeded()
    assert streak.wait() == 0.5
    # An interval longer than the cap is kept as it is, never shortened.
    slow = FailureStreak(log, "x", 300.0, cap=5.0)
    slow.counted()
    assert slow.wait() == 300.0


def test_a_streak_only_counted_says_nothing_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    """The decision writer says an outage on its own two lines; the streak only backs off."""
    streak = FailureStreak(log, "writing decisions", 0.05)
    with caplog.at_level("INFO", logger="routebook"):
        streak.counted()
        streak.counted()
        streak.succeeded()
    assert caplog.records == [] and streak.wait() == 0.05


def test_an_outage_of_any_length_waits_the_cap_and_never_overflows() -> None:
    """2.0 ** 1024 overflows: after about 85 minutes of outage at the 5 s cap the wait raised
    OverflowError, uncaught in every loop, and the decision writer and follower died."""
    streak = FailureStreak(log, "following the store", 0.5)
    for _ in range(5000):
        streak.counted()
    assert streak.wait() == 5.0
    streak.succeeded()
    assert streak.wait() == 0.5
