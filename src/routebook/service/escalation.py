"""The escalation guard: a tenant cannot push more than its share of traffic to the strongest
model (by crafting hard-looking queries, or by forcing cascade escalations).

Counts are kept per replica in memory over the rolling window, which bounds each tenant per
replica; they restart empty with the server.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from routebook.policyspec import EscalationCap


class EscalationGuard:
    def __init__(self) -> None:
        # (namespace, tenant) → deque of (time, counted as strong/escalated)
        self._events: dict[tuple[str, str], deque[tuple[float, bool]]] = {}
        self._lock = threading.Lock()

    def share(self, namespace: str, tenant: str, cap: EscalationCap) -> tuple[float, int]:
        """(share of strong calls, calls) in the window: a call is a decision or a cascade
        escalation; strong calls are decisions for the strongest model and escalations."""
        horizon = time.monotonic() - cap.window_minutes * 60
        with self._lock:
            events = self._events.get((namespace, tenant))
            if not events:
                return 0.0, 0
            while events and events[0][0] < horizon:
                events.popleft()
            decisions = len(events)
            strong = sum(1 for _, hit in events if hit)
        return (strong / decisions if decisions else 0.0), decisions

    def over(self, namespace: str, tenant: str, cap: EscalationCap) -> bool:
        share, decisions = self.share(namespace, tenant, cap)
        return decisions >= cap.min_decisions and share >= cap.max_strong_share

    def note(self, namespace: str, tenant: str, strong: bool) -> None:
        """One decision (strong: it went to the strongest model) or one escalation (strong)."""
        with self._lock:
            self._events.setdefault((namespace, tenant), deque()).append((time.monotonic(), strong))
