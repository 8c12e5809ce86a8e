"""Tenants' spend for budgets, read from the store and cached briefly off the hot path.

A recorded outcome invalidates its tenant's entry, so the next Decide on this server sees the
new spend at once; other replicas see it within `ttl_seconds`.
"""

from __future__ import annotations

import threading
import time

from routebook.store import spend as spend_store
from routebook.store.db import STORE_UNAVAILABLE, Store

#: (namespace, tenant, window) spends kept at most; past it, the one read longest ago goes.
MAX_CACHED_TENANTS = 10_000


class SpendLedger:
    def __init__(self, store: Store, ttl_seconds: float) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._cache: dict[tuple[int, str, float], tuple[float, float]] = {}
        # (namespace, tenant) → how often its entries were invalidated: a read that began
        # before an invalidation must not cache what it read (the spend before the outcome).
        self._cleared: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def spent(self, namespace_id: int, tenant: str, window_hours: float) -> float:
        key = (namespace_id, tenant, window_hours)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            cleared = self._cleared.get((namespace_id, tenant), 0)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        try:
            with self._store.read() as session:
                amount = spend_store.tenant_spend(session, namespace_id, tenant, window_hours)
        except STORE_UNAVAILABLE:
            # The store is down: budgets use the last known spend rather than fail Decide.
            return cached[0] if cached is not None else 0.0
        with self._lock:
            if self._cleared.get((namespace_id, tenant), 0) != cleared:
                return amount  # an outcome arrived meanwhile: the next Decide reads again
            self._cache.pop(key, None)  # re-inserted last: the dict stays in order of reading
            self._cache[key] = (amount, now)
            while len(self._cache) > MAX_CACHED_TENANTS:  # tenant names come from clients
                del self._cache[next(iter(self._cache))]  # the one read longest ago
        return amount

    def invalidate(self, namespace_id: int, tenant: str) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == namespace_id and k[1] == tenant]:
                del self._cache[key]
            who = (namespace_id, tenant)
            self._cleared[who] = self._cleared.pop(who, 0) + 1  # last: newest at the end
            while len(self._cleared) > MAX_CACHED_TENANTS:
                del self._cleared[next(iter(self._cleared))]
