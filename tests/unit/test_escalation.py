"""The escalation guard counts over its rolling window, and its memory stays bounded."""

from __future__ import annotations

from routebook.policyspec import EscalationCap
from routebook.service.escalation import (
    SWEEP_EVERY,
    EscalationGuard,
    failed_over,
    models_ahead,
    reaches_for_the_strongest,
)

CAP = EscalationCap(max_strong_share=0.5, window_minutes=1, min_decisions=4)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_share_counts_the_window_and_forgets_what_left_it() -> None:
    clock = Clock()
    guard = EscalationGuard(clock)
    for strong in (True, True, False):
        guard.note("ns", "acme", strong, CAP)
    assert guard.share("ns", "acme", CAP) == (2 / 3, 3)
    assert not guard.over("ns", "acme", CAP)  # 3 calls: under min_decisions
    guard.note("ns", "acme", True, CAP)
    assert guard.over("ns", "acme", CAP)  # 3 of 4 strong, share 0.75 >= 0.5
    clock.now += 30
    guard.note("ns", "acme", False, CAP)
    assert guard.share("ns", "acme", CAP) == (3 / 5, 5)
    clock.now += 31  # the first four calls are more than a minute old now
    assert guard.share("ns", "acme", CAP) == (0.0, 1)
    assert guard.share("ns", "other", CAP) == (0.0, 0)
    assert guard.share("other-ns", "acme", CAP) == (0.0, 0)


def test_memory_is_bounded_by_the_window_not_the_traffic() -> None:
    clock = Clock()
    guard = EscalationGuard(clock)
    for _ in range(10_000):  # a busy tenant: 10,000 calls in one second
        guard.note("ns", "busy", True, CAP)
    window = guard._windows[("ns", "busy")]
    assert (len(window.buckets), window.calls, window.strong) == (1, 10_000, 10_000)
    for _ in range(300):  # then one call a second for five minutes: one minute is kept
        clock.now += 1
        guard.note("ns", "busy", False, CAP)
    assert len(window.buckets) <= 61
    assert guard.share("ns", "busy", CAP) == (0.0, len(window.buckets))


def test_tenants_idle_past_their_window_are_swept() -> None:
    clock = Clock()
    guard = EscalationGuard(clock)
    for n in range(100):  # many one-off tenant names
        guard.note("ns", f"tenant-{n}", True, CAP)
    assert guard.tenants() == 100
    clock.now += 120
    for _ in range(SWEEP_EVERY):
        guard.note("ns", "steady", False, CAP)
    assert guard.tenants() == 1


def test_a_year_long_window_keeps_at_most_a_thousand_buckets() -> None:
    """One bucket per second of a 366-day window was 3.8 GB for a tenant calling every second."""
    from routebook.service.escalation import BUCKETS

    year = EscalationCap(max_strong_share=0.5, window_minutes=366 * 24 * 60, min_decisions=4)
    clock = Clock()
    guard = EscalationGuard(clock)
    for call in range(200_000):  # a call every 200 s for about 15 months
        clock.now += 200
        guard.note("ns", "acme", call % 4 == 0, year)
    window = guard._windows[("ns", "acme")]
    assert len(window.buckets) <= BUCKETS + 1
    share, calls = guard.share("ns", "acme", year)
    # the window holds the last 366 days' calls, give or take one bucket (31,622 s)
    assert abs(calls - 366 * 86_400 / 200) <= 31_622 / 200 + 1
    assert abs(share - 0.25) < 0.01


def test_tenant_names_from_callers_are_bounded_and_named_tenants_are_kept() -> None:
    """A new tenant name per call kept a window each for the whole window (3.8 GB at 1,000
    calls/s for an hour). Other names are now bounded; a tenant named in configuration (the
    policy, or bound to an API key) keeps its window, so a flood cannot lift its cap."""
    from routebook.service.escalation import MAX_OTHER_TENANTS

    clock = Clock()
    guard = EscalationGuard(clock, bound_tenants=["keyed"])
    for tenant, named in (("listed", True), ("keyed", False), ("anonymous", False)):
        for _ in range(4):
            guard.note("ns", tenant, True, CAP, named=named)
        assert guard.over("ns", tenant, CAP)
    for n in range(MAX_OTHER_TENANTS + 500):  # a new name per call, within one second
        guard.note("ns", f"flood-{n}", False, CAP)
    assert guard.tenants() == MAX_OTHER_TENANTS + 2
    assert guard.over("ns", "listed", CAP) and guard.over("ns", "keyed", CAP)
    # An unnamed tenant noted longest ago is forgotten, as after a restart: it could have
    # left its name for a fresh one anyway.
    assert guard.share("ns", "anonymous", CAP) == (0.0, 0)
    # Named tenants do not count against the bound, and the most recent others are kept.
    assert guard.share("ns", f"flood-{MAX_OTHER_TENANTS + 499}", CAP) == (0.0, 1)


TOP = frozenset({"frontier"})


def test_an_escalation_reaches_from_below_the_strongest_to_one_of_them() -> None:
    assert reaches_for_the_strongest("frontier", "small", TOP)
    assert not reaches_for_the_strongest("mid", "small", TOP)  # a step short of them
    assert not reaches_for_the_strongest("frontier", "frontier", TOP)  # the decision counted
    assert not reaches_for_the_strongest("twin", "frontier", TOP | {"twin"})  # within the top
    assert not reaches_for_the_strongest("frontier", None, TOP)  # no decision: nothing to leave


def test_a_fallback_after_every_model_ahead_failed_is_no_escalation() -> None:
    """The outage flow: the decided model failed, the fallbacks before this one failed."""
    offered = ("small", "mid", "frontier")
    assert models_ahead("frontier", offered) == ("small", "mid")
    assert models_ahead("small", offered) == ()
    assert models_ahead("other", offered) is None
    assert failed_over("frontier", offered, {"small", "mid"})
    assert failed_over("mid", offered, {"small"})
    # Fallbacks need not be in price order: frontier may come before mid.
    assert failed_over("frontier", ("small", "frontier", "mid"), {"small"})


def test_a_skipped_model_a_poor_answer_or_a_model_not_offered_is_an_escalation() -> None:
    offered = ("small", "mid", "frontier")
    assert not failed_over("frontier", offered, {"small"})  # mid skipped: it did not fail
    assert not failed_over("frontier", offered, set())  # small answered poorly (a cascade)
    assert not failed_over("frontier", ("small", "mid"), {"small", "mid"})  # not offered
    assert not failed_over("frontier", offered, {"mid", "frontier"})  # small never failed
