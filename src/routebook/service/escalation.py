"""The escalation guard: a tenant cannot push more than its share of traffic to the strongest
model (by crafting hard-looking queries, or by forcing cascade escalations).

Counts are kept per replica in memory over the rolling window, which bounds each tenant per
replica; they restart empty with the server. They are kept in buckets (a second, or a
thousandth of a long window), so a tenant's memory is bounded by BUCKETS, not by its traffic
nor its window, and a tenant idle for longer than its window is forgotten.

The number of tenants is bounded too, since tenant names come from callers. A tenant named in
configuration (listed in the namespace's policy, or bound to an API key) is always kept: those
are bounded by the configuration, and no caller can forge them away. Of the other names, the
MAX_OTHER_TENANTS noted most recently are kept and the rest forgotten (a forgotten tenant starts
uncapped, as after a restart). That costs nothing a caller did not have already: a name no
configuration backs is one a caller can leave for a fresh one at any call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Sequence

from routebook.policyspec import EscalationCap

#: Every this many notes, tenants with nothing left in their window are dropped.
SWEEP_EVERY = 4096

#: Windows of tenants not named in configuration kept at most (about 1 KB each); past it, the
#: one noted longest ago goes. A new name per call at 1,000 calls/s held 3.8 GB without it.
MAX_OTHER_TENANTS = 10_000


#: Buckets per window at most: a bucket spans a second, or window / BUCKETS for long windows
#: (a year-long window held one bucket per second, 3.8 GB for a tenant calling once a second).
BUCKETS = 1000


def reaches_for_the_strongest(model: str, decided: str | None, strongest: Collection[str]) -> bool:
    """An outcome for one of the strongest models (every one at the top price) on a decision
    that chose a model below them. A move between two of them is not one: the decision was
    counted as strong already."""
    return decided is not None and model in strongest and decided not in strongest


def models_ahead(model: str, offered: Sequence[str]) -> tuple[str, ...] | None:
    """The models a decision offered before `model`, in the order a caller walks them (its
    model, then the fallbacks or the cascade's steps); None when it did not offer `model`."""
    return tuple(offered[: offered.index(model)]) if model in offered else None


def failed_over(model: str, offered: Sequence[str], failed: Collection[str]) -> bool:
    """The caller reached `model` by the decision's own fallback walk: the decision offered it,
    and every model offered ahead of it was reported failed on that decision (`failed`). Such
    an outcome is a fallback after failures (a provider outage), not an escalation: counting
    it took the strongest model, often the only one still up, from the tenant. A model the
    decision did not offer, or one reached past a model that did not fail (a skipped fallback,
    a cascade step that answered poorly), is an escalation."""
    ahead = models_ahead(model, offered)
    return ahead is not None and set(ahead) <= set(failed)


class _Window:
    """A tenant's calls and strong calls over its rolling window, in buckets of a second (or
    of window / BUCKETS, whichever is longer); a bucket leaves whole once it ended before the
    window began."""

    __slots__ = ("buckets", "calls", "seconds", "strong")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.buckets: deque[list[float]] = deque()  # [end, calls, strong calls]
        self.calls = 0
        self.strong = 0

    def add(self, now: float, strong: bool) -> None:
        width = max(1.0, self.seconds / BUCKETS)
        end = now - now % width + width
        if self.buckets and end <= self.buckets[-1][0]:  # (<: float rounding at an edge)
            self.buckets[-1][1] += 1
            self.buckets[-1][2] += strong
        else:
            self.buckets.append([end, 1, int(strong)])
        self.calls += 1
        self.strong += strong

    def prune(self, now: float) -> None:
        """Drop the buckets that ended before the window began."""
        horizon = now - self.seconds
        while self.buckets and self.buckets[0][0] <= horizon:
            _, calls, strong = self.buckets.popleft()
            self.calls -= int(calls)
            self.strong -= int(strong)


class EscalationGuard:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        bound_tenants: Iterable[str] = (),
        max_other_tenants: int = MAX_OTHER_TENANTS,
    ) -> None:
        self._now = clock
        #: Tenants bound to API keys (api_key_tenants): named in configuration, always kept.
        self._bound = frozenset(bound_tenants)
        self._max_others = max_other_tenants
        # (namespace, tenant) → that tenant's window
        self._windows: dict[tuple[str, str], _Window] = {}
        # The keys of tenants not named in configuration, the one noted longest ago first.
        self._others: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self._notes = 0

    def share(self, namespace: str, tenant: str, cap: EscalationCap) -> tuple[float, int]:
        """(share of strong calls, calls) in the window: a call is a decision or a cascade
        escalation; strong calls are decisions for the strongest model and escalations."""
        with self._lock:
            window = self._windows.get((namespace, tenant))
            if window is None:
                return 0.0, 0
            window.seconds = cap.window_minutes * 60
            window.prune(self._now())
            calls, strong = window.calls, window.strong
        return (strong / calls if calls else 0.0), calls

    def over(self, namespace: str, tenant: str, cap: EscalationCap) -> bool:
        share, decisions = self.share(namespace, tenant, cap)
        return decisions >= cap.min_decisions and share >= cap.max_strong_share

    def note(
        self, namespace: str, tenant: str, strong: bool, cap: EscalationCap, named: bool = False
    ) -> None:
        """One decision (strong: it went to the strongest model) or one escalation (strong).
        `named`: the namespace's policy lists the tenant, so its window is always kept."""
        now = self._now()
        key = (namespace, tenant)
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(cap.window_minutes * 60)
            if named or tenant in self._bound:
                self._others.pop(key, None)
            else:
                self._others[key] = None
                self._others.move_to_end(key)
                while len(self._others) > self._max_others:
                    del self._windows[self._others.popitem(last=False)[0]]
            window.seconds = cap.window_minutes * 60
            window.add(now, strong)
            window.prune(now)
            self._notes += 1
            if self._notes % SWEEP_EVERY == 0:
                self._sweep(now)

    def tenants(self) -> int:
        """(namespace, tenant) pairs held, for tests and metrics."""
        with self._lock:
            return len(self._windows)

    def _sweep(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            window.prune(now)
            if not window.buckets:
                del self._windows[key]
                self._others.pop(key, None)
