"""The gate's cost rule on plain values."""

from __future__ import annotations

import math

import pytest

from routebook.jobs.gate import cost_saving


def test_saving_is_relative_to_the_baseline() -> None:
    check = cost_saving(0.004, 0.003, 0.2)
    assert check.measured == pytest.approx(0.25) and check.passed
    worse = cost_saving(0.004, 0.005, 0.0)
    assert worse.measured == pytest.approx(-0.25) and not worse.passed
    assert "cost saving -25.00%" in worse.reason


def test_a_paying_candidate_never_passes_against_a_free_baseline() -> None:
    """A self-hosted free model as the baseline: any spend is an unbounded increase, where it
    used to read as "saving 0" and pass the default --min-saving 0."""
    paying = cost_saving(0.0, 0.004, 0.0)
    assert paying.measured == -math.inf and not paying.passed
    assert paying.reason == "the baseline is free and the candidate costs $0.004000 per query"
    assert not cost_saving(0.0, 0.004, -5.0).passed
    free = cost_saving(0.0, 0.0, 0.0)
    assert free.measured == 0.0 and free.passed
