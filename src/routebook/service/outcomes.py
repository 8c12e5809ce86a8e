"""RecordOutcome: commit to the store, then teach the index, then acknowledge.

Idempotent on the client's outcome_id: a repeat returns the first result and writes nothing,
even when two replicas race (the unique constraint decides, and the loser reads the winner).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from routebook.domain import (
    ExampleFacts,
    ObservedOutcome,
    OutcomeReport,
    RecordedOutcome,
    Source,
)
from routebook.embed import Embedder
from routebook.errors import InvalidArgument, NotFound, Unavailable
from routebook.index import IndexRegistry
from routebook.routefiles import text_hash
from routebook.service.cooldowns import CooldownBook
from routebook.service.decision_writer import DecisionWriter
from routebook.service.drift import DriftWatch
from routebook.service.escalation import EscalationGuard
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.service.requests import MAX_NAME_CHARS, conversation_text
from routebook.service.spend import SpendLedger
from routebook.service.telemetry import Telemetry
from routebook.store import decisions as decision_store
from routebook.store import examples as ex_store
from routebook.store import outcomes as outcome_store
from routebook.store.db import Store
from routebook.store.tables import ExampleRow, OutcomeRow

MAX_OUTCOME_ID_CHARS = 128
FAILURE_KINDS = ("rate_limited", "server_error", "timeout", "content_filter")


@dataclass(frozen=True, slots=True)
class _Subject:
    """What an outcome is about: the namespace, the query text, and the decision behind it."""

    info: NamespaceInfo
    text: str
    tenant: str
    decided_model: str | None


class _LostRace(Exception):
    """A concurrent writer created the history example this outcome needed; try again."""


class OutcomeRecorder:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        registry: IndexRegistry,
        directory: NamespaceDirectory,
        max_query_chars: int,
        spend: SpendLedger,
        telemetry: Telemetry,
        writer: DecisionWriter,
        cooldowns: CooldownBook,
        guard: EscalationGuard,
        drift: DriftWatch,
    ) -> None:
        self._drift = drift
        self._guard = guard
        self._writer = writer
        self._cooldowns = cooldowns
        self._store = store
        self._embedder = embedder
        self._registry = registry
        self._directory = directory
        self._max_query_chars = max_query_chars
        self._spend = spend
        self._telemetry = telemetry

    def record_outcome(self, report: OutcomeReport) -> RecordedOutcome:
        check_report(report)
        if report.failure is not None:
            try:
                return self._record_failure(report)
            except OperationalError as exc:
                raise Unavailable(
                    f"the store is unavailable; the failure was not recorded: {exc.orig}"
                ) from exc
        try:
            for _attempt in range(3):
                try:
                    return self._record(report)
                except _LostRace:
                    continue  # another writer created the same history example: use it
            raise Unavailable("the outcome could not be recorded under contention; retry it")
        except OperationalError as exc:
            raise Unavailable(
                f"the store is unavailable; the outcome was not recorded: {exc.orig}"
            ) from exc

    def _record_failure(self, report: OutcomeReport) -> RecordedOutcome:
        """A failed call is cooldown evidence, never quality evidence: it does not touch the
        examples, the outcomes or the index."""
        assert report.failure is not None
        subject = self._subject(report)
        spec = subject.info.catalog.get(report.model)
        seconds, seen = self._cooldowns.record_failure(
            subject.info.id,
            report.outcome_id,
            spec.name,
            report.failure,
            report.decision_id,
            report.retry_after_seconds,
        )
        if not seen:
            self._telemetry.failed(subject.info.name, spec.name, report.failure, seconds)
        return RecordedOutcome(
            outcome_id=report.outcome_id,
            example_id=0,
            duplicate=seen,
            namespace=subject.info.name,
            quality=0.0,
            cost_usd=report.cost_usd or 0.0,
            cooldown_seconds=seconds,
        )

    def _record(self, report: OutcomeReport) -> RecordedOutcome:
        subject = self._subject(report)
        info, text = subject.info, subject.text
        spec = info.catalog.get(report.model)
        cost = (
            report.cost_usd
            if report.cost_usd is not None
            else spec.cost_usd(report.input_tokens, report.output_tokens)
        )
        digest = text_hash(text)
        with self._store.read() as session:
            first = outcome_store.find_outcome(session, report.outcome_id)
            if first is not None:
                return self._replay(session, first)
            existing = ex_store.find_example(session, info.id, Source.HISTORY, digest)
            example_id = existing.id if existing is not None else None
        vector = self._embedder.embed([text])[0] if example_id is None else None
        created = example_id is None
        try:
            with self._store.write() as session:
                if example_id is None:
                    assert vector is not None
                    row = ExampleRow(
                        namespace_id=info.id,
                        text=text,
                        text_hash=digest,
                        route=None,
                        source=Source.HISTORY.value,
                        best_model=None,
                        embedding=ex_store.vector_bytes(vector),
                        embedding_model=self._embedder.model_id,
                        tenant=subject.tenant or None,
                    )
                    session.add(row)
                    session.flush()
                    example_id = row.id
                session.add(
                    OutcomeRow(
                        outcome_id=report.outcome_id,
                        example_id=example_id,
                        decision_id=report.decision_id or None,
                        tenant=subject.tenant or None,
                        model=spec.name,
                        quality=report.quality,
                        input_tokens=report.input_tokens,
                        output_tokens=report.output_tokens,
                        cost_usd=cost,
                        latency_ms=report.latency_ms,
                    )
                )
        except IntegrityError:
            # Another writer recorded the same outcome_id, or created the same example, first.
            with self._store.read() as session:
                first = outcome_store.find_outcome(session, report.outcome_id)
                if first is not None:
                    return self._replay(session, first)
            raise _LostRace() from None
        # Committed: now the index learns it, so the next Decide on this server sees it.
        means = [(spec.name, report.quality, 1)] if created else None
        self._index_example(info.name, example_id, text, vector, means, subject.tenant or None)
        if subject.tenant:
            self._spend.invalidate(info.id, subject.tenant)
        self._drift.outcome(info.name, spec.name, report.quality >= 0.5)
        escalated = subject.decided_model is not None and subject.decided_model != spec.name
        if escalated and subject.tenant:
            self._guard.note(info.name, subject.tenant, True)
        self._telemetry.recorded(
            info.name, spec.name, report.quality, cost, subject.tenant, escalated
        )
        return RecordedOutcome(
            outcome_id=report.outcome_id,
            example_id=example_id,
            duplicate=False,
            namespace=info.name,
            quality=report.quality,
            cost_usd=cost,
        )

    def _replay(self, session: Session, first: OutcomeRow) -> RecordedOutcome:
        example = session.get(ExampleRow, first.example_id)
        namespace = ""
        if example is not None:
            namespace = next(
                (i.name for i in self._directory.all() if i.id == example.namespace_id), ""
            )
        return RecordedOutcome(
            outcome_id=first.outcome_id,
            example_id=first.example_id,
            duplicate=True,
            namespace=namespace,
            quality=first.quality,
            cost_usd=first.cost_usd,
        )

    def _subject(self, report: OutcomeReport) -> _Subject:
        if report.decision_id:
            namespace_id, text, tenant, decided = self._decision(report.decision_id)
            info = next((i for i in self._directory.all() if i.id == namespace_id), None)
            if info is None:
                raise NotFound(f"the namespace of decision {report.decision_id!r} no longer exists")
            return _Subject(info, text, tenant, decided)
        info = self._directory.resolve(report.namespace)
        text = conversation_text(report.messages, self._max_query_chars)
        return _Subject(info, text, report.tenant, None)

    def _decision(self, decision_id: str) -> tuple[int, str, str, str]:
        """(namespace id, query text, tenant, model) of a decision: from the write-behind
        buffer, else the store. Another replica's decision may be a moment from the store,
        so a miss is retried briefly before NOT_FOUND."""
        for attempt in range(4):
            pending = self._writer.pending(decision_id)
            if pending is not None:
                return pending.namespace_id, pending.query_text, pending.tenant or "", pending.model
            with self._store.read() as session:
                row = decision_store.get_decision(session, decision_id)
                if row is not None:
                    return row.namespace_id, row.query_text, row.tenant or "", row.model
            if attempt < 3:
                time.sleep(0.1)
        raise NotFound(
            f"decision {decision_id!r} is unknown: pass the decision_id Decide returned, or "
            "report by messages instead"
        )

    def _index_example(
        self,
        namespace: str,
        example_id: int,
        text: str,
        vector: npt.NDArray[np.float32] | None,
        means: list[tuple[str, float, int]] | None,
        tenant: str | None,
    ) -> None:
        """`means` is known for a new example (its one outcome); otherwise it is read."""
        if means is None:
            with self._store.read() as session:
                means = ex_store.outcome_means(session, example_ids=[example_id]).get(
                    example_id, []
                )
        facts = ExampleFacts(
            example_id=example_id,
            text=text,
            route=None,
            source=Source.HISTORY,
            best_model=None,
            outcomes=tuple(ObservedOutcome(m, q, c) for m, q, c in means),
            tenant=tenant,
        )
        index = self._registry.get(namespace)
        if example_id in index:
            facts = replace(facts, tenant=index.facts(example_id).tenant)  # the first tenant's
            index.update_facts(facts)
            return
        if vector is None:
            vector = self._embedder.embed([text])[0]
        index.add([facts], vector.reshape(1, -1))


def check_report(report: OutcomeReport) -> None:
    if not 1 <= len(report.outcome_id) <= MAX_OUTCOME_ID_CHARS:
        raise InvalidArgument(
            f"outcome_id must be 1 to {MAX_OUTCOME_ID_CHARS} characters (a key you choose, "
            "so a retry does not record twice)"
        )
    if report.failure is not None:
        if report.failure not in FAILURE_KINDS:
            raise InvalidArgument(f"failure {report.failure!r}: use one of {FAILURE_KINDS}")
        retry = report.retry_after_seconds
        if retry is not None and (not math.isfinite(retry) or not 0 <= retry <= 86_400):
            raise InvalidArgument(f"retry_after_seconds must be 0 to 86400, got {retry}")
    elif not math.isfinite(report.quality) or not 0.0 <= report.quality <= 1.0:
        raise InvalidArgument(f"quality must be in [0, 1], got {report.quality}")
    for name, value in (("cost_usd", report.cost_usd), ("latency_ms", report.latency_ms)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise InvalidArgument(f"{name} must be a finite number >= 0, got {value}")
    if len(report.tenant) > MAX_NAME_CHARS:
        raise InvalidArgument(f"tenant is longer than {MAX_NAME_CHARS} characters")
    if report.decision_id and report.messages:
        raise InvalidArgument("give either decision_id or messages, not both")
    if not report.decision_id and not report.messages:
        raise InvalidArgument("give the decision_id the outcome answers, or the messages")
