"""Cooldowns: a model that is rate limited, or fails too often in a window, is left out of
decisions for a while. They live in the store, so every replica honours them and a restart
keeps them; each server reads them at most every `refresh_seconds` (off the hot path otherwise).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from routebook.store.db import STORE_UNAVAILABLE, Store
from routebook.store.tables import CooldownRow, ModelFailureRow, as_utc, utcnow


@dataclass(frozen=True, slots=True)
class Cooldown:
    model: str
    until: datetime
    reason: str

    def seconds_left(self, now: datetime | None = None) -> float:
        return max(0.0, (self.until - (now or utcnow())).total_seconds())


@dataclass(frozen=True, slots=True)
class CooldownRules:
    default_seconds: float = 30.0
    failure_threshold: int = 3
    window_seconds: float = 60.0
    #: The longest cooldown one rate-limit report starts, whatever retry-after it gives.
    max_retry_after_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class FailureRecorded:
    #: Seconds the model stays cooling from now (0: no cooldown); for a duplicate, what the
    #: first report answered.
    cooldown_seconds: float
    #: This outcome_id was recorded before; nothing was written now.
    duplicate: bool
    #: This failure started a cooldown (one already in force was only extended, or kept).
    started: bool


class CooldownBook:
    def __init__(self, store: Store, rules: CooldownRules, refresh_seconds: float = 0.25) -> None:
        self._store = store
        self._rules = rules
        self._refresh = refresh_seconds
        self._cache: dict[int, tuple[float, dict[str, Cooldown]]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[int] = set()
        self.reads = 0  # store reads made, for tests

    def active(self, namespace_id: int) -> dict[str, Cooldown]:
        """Models on cooldown now. With the store down, the last known set is used.

        One caller at a time refreshes a namespace's stale set; the others meanwhile use the
        set they have, older by at most one query (under load, dozens of Decides would
        otherwise read the same rows at once)."""
        now_mono = time.monotonic()
        with self._lock:
            cached = self._cache.get(namespace_id)
            stale = cached is None or now_mono - cached[0] >= self._refresh
            if stale and cached is not None and namespace_id in self._refreshing:
                stale = False  # another caller is reading it right now
            if stale:
                self._refreshing.add(namespace_id)
                self.reads += 1
        if stale:
            try:
                with self._store.read() as session:
                    rows = session.scalars(
                        select(CooldownRow).where(
                            CooldownRow.namespace_id == namespace_id, CooldownRow.until > utcnow()
                        )
                    ).all()
                    found = {r.model: Cooldown(r.model, as_utc(r.until), r.reason) for r in rows}
                cached = (now_mono, found)
                with self._lock:
                    self._cache[namespace_id] = cached
            except STORE_UNAVAILABLE:
                if cached is None:
                    return {}
            finally:
                with self._lock:
                    self._refreshing.discard(namespace_id)
        assert cached is not None
        now = utcnow()
        return {m: c for m, c in cached[1].items() if c.until > now}

    def record_failure(
        self,
        namespace_id: int,
        outcome_id: str,
        model: str,
        kind: str,
        decision_id: str | None,
        retry_after: float | None,
        counted: bool,
    ) -> FailureRecorded:
        """Store the failure; start or extend a cooldown when the rules say so.

        Only a `counted` failure (reported against a decision that offered the model) may cool
        it, and the threshold counts decisions, not reports: a cooldown holds for every tenant,
        so it must rest on calls the router asked for, not on reports anyone can send.

        The failure is counted with the ones before it inside the transaction that stores it,
        with concurrent reports of the same model taking turns (PostgreSQL: an advisory lock;
        SQLite: the store's one writer): counted before the write, simultaneous reports each
        missed the others, and a burst past the threshold could start no cooldown at all."""
        with self._store.read() as session:
            seen = session.scalars(
                select(ModelFailureRow).where(ModelFailureRow.outcome_id == outcome_id)
            ).one_or_none()
            if seen is not None:
                return FailureRecorded(seen.cooldown_seconds, duplicate=True, started=False)
        in_force, started = 0.0, False
        try:
            with self._store.write() as session:
                if self._store.dialect == "postgresql":
                    session.execute(
                        text("SELECT pg_advisory_xact_lock(:namespace, :model)"),
                        {"namespace": namespace_id, "model": _lock_key(model)},
                    )
                now = utcnow()
                failure = ModelFailureRow(
                    outcome_id=outcome_id,
                    namespace_id=namespace_id,
                    model=model,
                    kind=kind,
                    decision_id=decision_id,
                    retry_after_seconds=retry_after,
                    cooldown_seconds=0.0,
                    created_at=now,
                    counted=counted,
                )
                session.add(failure)
                session.flush()
                seconds, reason = (
                    self._cooldown_for(session, namespace_id, model, kind, retry_after, now)
                    if counted
                    else (0.0, "")
                )
                failure.cooldown_seconds = seconds
                if seconds > 0:
                    until, started = self._extend(
                        session, namespace_id, model, now, now + timedelta(seconds=seconds), reason
                    )
                    in_force = (until - now).total_seconds()
        except IntegrityError:
            return self.record_failure(
                namespace_id, outcome_id, model, kind, decision_id, retry_after, counted
            )
        with self._lock:
            self._cache.pop(namespace_id, None)
        return FailureRecorded(in_force, duplicate=False, started=started)

    def failed_on(
        self, namespace_id: int, decision_id: str, models: Collection[str]
    ) -> frozenset[str]:
        """Which of `models` were reported failed on this decision, by any replica (the
        reports are in the store) and before now: a report still in flight is not seen."""
        with self._store.read() as session:
            found = session.scalars(
                select(ModelFailureRow.model).where(
                    ModelFailureRow.decision_id == decision_id,
                    ModelFailureRow.namespace_id == namespace_id,
                    ModelFailureRow.model.in_(list(models)),
                )
            ).all()
        return frozenset(found)

    def _cooldown_for(
        self,
        session: Session,
        namespace_id: int,
        model: str,
        kind: str,
        retry_after: float | None,
        now: datetime,
    ) -> tuple[float, str]:
        """(seconds, reason) of the cooldown this counted failure calls for; 0 for none. The
        failure itself is already in `session`, so the count includes it. The threshold counts
        decisions with a counted failure of the model: one decision's repeated reports are one
        failed call, however many ids they come with."""
        if kind == "rate_limited":
            seconds = retry_after if retry_after is not None else self._rules.default_seconds
            return min(seconds, self._rules.max_retry_after_seconds), "rate limited"
        since = now - timedelta(seconds=self._rules.window_seconds)
        recent = int(
            session.scalar(
                select(func.count(ModelFailureRow.decision_id.distinct()))
                .select_from(ModelFailureRow)
                .where(
                    ModelFailureRow.namespace_id == namespace_id,
                    ModelFailureRow.model == model,
                    ModelFailureRow.counted.is_(True),
                    ModelFailureRow.created_at >= since,
                    # Rate limits cool a model for their own retry-after; they are not the
                    # "other failures" the threshold counts (docs/failover.md).
                    ModelFailureRow.kind != "rate_limited",
                )
            )
            or 0
        )
        if recent > self._rules.failure_threshold:
            return self._rules.default_seconds, (
                f"{recent} failures in {self._rules.window_seconds:g}s"
            )
        return 0.0, ""

    @staticmethod
    def _extend(
        session: Session,
        namespace_id: int,
        model: str,
        now: datetime,
        until: datetime,
        reason: str,
    ) -> tuple[datetime, bool]:
        """Cool `model` until at least `until`: (when its cooldown ends now, whether this
        started one, rather than extended or left one that was in force already)."""
        row = session.scalars(
            select(CooldownRow).where(
                CooldownRow.namespace_id == namespace_id, CooldownRow.model == model
            )
        ).one_or_none()
        if row is None:
            session.add(
                CooldownRow(namespace_id=namespace_id, model=model, until=until, reason=reason)
            )
            return until, True
        current = as_utc(row.until)
        if current < until:
            row.until, row.reason = until, reason
            return until, current <= now  # an expired row taken up again is a new cooldown
        return current, False


def _lock_key(model: str) -> int:
    """A model name as the second key of a PostgreSQL advisory lock (a signed 32-bit int)."""
    return zlib.crc32(model.encode()) - 2**31
