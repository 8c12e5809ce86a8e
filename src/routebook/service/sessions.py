"""Sticky sessions: a conversation keeps its model across Decides (prompt caches, consistent
answers) until it has been idle for `idle_seconds`. Kept in this server's memory: a load
balancer should pin a session to a replica, or stickiness restarts on another one.

What moves a session to another model: a policy change that forbids its model, a cooldown on
it, a context window it no longer fits, or an explicit override; the session then keeps the new
model. A routing rule answers the turn it matches and pins nothing: it is the operator's intent
for that query, and one keyword must not move the rest of a conversation (the session keeps
its model, or stays unpinned). A cold start's cascade pins nothing either.

A session belongs to its tenant: two tenants that happen to use the same session id (a
counter, "chat-1") must neither share nor see each other's model."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class StickySessions:
    def __init__(self, idle_seconds: float, capacity: int = 100_000) -> None:
        self._idle = idle_seconds
        self._capacity = capacity
        # (namespace, tenant, session id) → (model, last used)
        self._models: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, namespace: str, tenant: str, session_id: str) -> str | None:
        key = (namespace, tenant, session_id)
        with self._lock:
            found = self._models.get(key)
            if found is None:
                return None
            if time.monotonic() - found[1] > self._idle:
                del self._models[key]
                return None
            return found[0]

    def keep(self, namespace: str, tenant: str, session_id: str, model: str) -> None:
        key = (namespace, tenant, session_id)
        with self._lock:
            self._models[key] = (model, time.monotonic())
            self._models.move_to_end(key)
            while len(self._models) > self._capacity:
                self._models.popitem(last=False)

    def touch(self, namespace: str, tenant: str, session_id: str) -> None:
        """The session is in use, its model unchanged (a turn a rule answered): it is not idle."""
        key = (namespace, tenant, session_id)
        with self._lock:
            found = self._models.get(key)
            if found is not None and time.monotonic() - found[1] <= self._idle:
                self._models[key] = (found[0], time.monotonic())
                self._models.move_to_end(key)
