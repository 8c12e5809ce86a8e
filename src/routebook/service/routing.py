"""Decide and RecordOutcome: validate, embed, search, decide; commit, index, acknowledge."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from routebook.catalog import estimate_tokens
from routebook.decide import DecisionParams, DecisionRequest, decide
from routebook.domain import (
    Decision,
    ExampleFacts,
    Message,
    ObservedOutcome,
    OutcomeReport,
    RecordedOutcome,
    Source,
    routing_text,
)
from routebook.embed import Embedder
from routebook.errors import InvalidArgument, NotFound, Unavailable
from routebook.index import IndexRegistry
from routebook.routefiles import text_hash
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.store import decisions as decision_store
from routebook.store import examples as ex_store
from routebook.store import outcomes as outcome_store
from routebook.store.db import Store
from routebook.store.tables import DecisionRow, ExampleRow, OutcomeRow

MAX_OUTCOME_ID_CHARS = 128
MAX_MESSAGES = 1000
MAX_METADATA_ENTRIES = 64
KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True, slots=True)
class DecideQuery:
    messages: tuple[Message, ...]
    namespace: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    quality_target: float | None = None
    expected_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class RoutingLimits:
    k: int = 10
    max_query_chars: int = 20000
    default_output_tokens: int = 256


class RoutingService:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        registry: IndexRegistry,
        directory: NamespaceDirectory,
        params: DecisionParams,
        limits: RoutingLimits,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._registry = registry
        self._directory = directory
        self.params = params
        self.limits = limits
        # One recorder at a time per process: find-or-create of a history example must not race.
        self._record_lock = threading.Lock()

    # -- Decide ------------------------------------------------------------------------------

    def decide(self, query: DecideQuery) -> Decision:
        info = self._directory.resolve(query.namespace)
        text = self._routing_text(query.messages)
        self._check_metadata(query.metadata)
        params = self.params
        if query.quality_target is not None:
            target = query.quality_target
            if not math.isfinite(target) or not 0.0 < target <= 1.0:
                raise InvalidArgument(f"quality_target must be in (0, 1], got {target}")
            params = _with_target(params, target)
        output_tokens = (
            self.limits.default_output_tokens
            if query.expected_output_tokens is None
            else query.expected_output_tokens
        )
        input_tokens = estimate_tokens(" ".join(m.content for m in query.messages))

        vector = self._embedder.embed([text])[0]
        index = self._registry.get(info.name)
        neighbours = index.search(vector, self.limits.k)
        choice = decide(
            DecisionRequest(
                neighbours=neighbours,
                catalog=info.catalog,
                params=params,
                index_size=len(index),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        )
        decision = Decision(
            decision_id=uuid.uuid4().hex,
            namespace=info.name,
            index_generation=index.generation,
            choice=choice,
        )
        self._log_decision(info, decision, text)
        return decision

    def _routing_text(self, messages: Sequence[Message]) -> str:
        if not messages:
            raise InvalidArgument("messages is empty: send at least one user message")
        if len(messages) > MAX_MESSAGES:
            raise InvalidArgument(f"at most {MAX_MESSAGES} messages per request")
        for position, message in enumerate(messages):
            if message.role not in KNOWN_ROLES:
                raise InvalidArgument(
                    f"messages[{position}].role is {message.role[:40]!r}; use one of "
                    f"{', '.join(sorted(KNOWN_ROLES))}"
                )
        text = routing_text(tuple(messages))
        if not text:
            raise InvalidArgument("the conversation has no user message with text to route on")
        if "\x00" in text:
            raise InvalidArgument("the user message contains a NUL character")
        if len(text) > self.limits.max_query_chars:
            raise InvalidArgument(
                f"the user message has {len(text)} characters; the limit is "
                f"{self.limits.max_query_chars} (setting max_query_chars)"
            )
        return text

    @staticmethod
    def _check_metadata(metadata: Mapping[str, str]) -> None:
        if len(metadata) > MAX_METADATA_ENTRIES:
            raise InvalidArgument(f"at most {MAX_METADATA_ENTRIES} metadata entries per request")

    def _log_decision(self, info: NamespaceInfo, decision: Decision, text: str) -> None:
        choice = decision.choice
        try:
            with self._store.write() as session:
                session.add(
                    DecisionRow(
                        id=decision.decision_id,
                        namespace_id=info.id,
                        query_hash=text_hash(text),
                        query_text=text,
                        strategy=choice.strategy.value,
                        model=choice.model,
                        estimated_cost_usd=choice.estimated_cost_usd,
                    )
                )
        except OperationalError as exc:
            raise Unavailable(f"the store is unavailable: {exc.orig}") from exc

    # -- RecordOutcome -----------------------------------------------------------------------

    def record_outcome(self, report: OutcomeReport) -> RecordedOutcome:
        self._check_report(report)
        try:
            with self._record_lock:
                return self._record(report)
        except OperationalError as exc:
            raise Unavailable(
                f"the store is unavailable; the outcome was not recorded: {exc.orig}"
            ) from exc

    def _check_report(self, report: OutcomeReport) -> None:
        if not 1 <= len(report.outcome_id) <= MAX_OUTCOME_ID_CHARS:
            raise InvalidArgument(
                f"outcome_id must be 1 to {MAX_OUTCOME_ID_CHARS} characters (a key you choose, "
                "so a retry does not record twice)"
            )
        if not math.isfinite(report.quality) or not 0.0 <= report.quality <= 1.0:
            raise InvalidArgument(f"quality must be in [0, 1], got {report.quality}")
        if report.cost_usd is not None and (
            not math.isfinite(report.cost_usd) or report.cost_usd < 0
        ):
            raise InvalidArgument(f"cost_usd must be a finite number >= 0, got {report.cost_usd}")
        if report.latency_ms is not None and (
            not math.isfinite(report.latency_ms) or report.latency_ms < 0
        ):
            raise InvalidArgument(
                f"latency_ms must be a finite number >= 0, got {report.latency_ms}"
            )
        if report.decision_id and report.messages:
            raise InvalidArgument("give either decision_id or messages, not both")
        if not report.decision_id and not report.messages:
            raise InvalidArgument("give the decision_id the outcome answers, or the messages")

    def _record(self, report: OutcomeReport) -> RecordedOutcome:
        with self._store.read() as session:
            first = outcome_store.find_outcome(session, report.outcome_id)
            if first is not None:
                return self._replay(session, first)
        info, text = self._subject(report)
        spec = info.catalog.get(report.model)
        cost = (
            report.cost_usd
            if report.cost_usd is not None
            else spec.cost_usd(report.input_tokens, report.output_tokens)
        )
        digest = text_hash(text)
        with self._store.read() as session:
            existing = ex_store.find_example(session, info.id, Source.HISTORY, digest)
            existing_id = existing.id if existing is not None else None
        vector = None
        if existing_id is None:
            vector = self._embedder.embed([text])[0]
        try:
            with self._store.write() as session:
                if existing_id is None:
                    row = ExampleRow(
                        namespace_id=info.id,
                        text=text,
                        text_hash=digest,
                        route=None,
                        source=Source.HISTORY.value,
                        best_model=None,
                        embedding=ex_store.vector_bytes(vector) if vector is not None else None,
                        embedding_model=self._embedder.model_id,
                    )
                    session.add(row)
                    session.flush()
                    existing_id = row.id
                session.add(
                    OutcomeRow(
                        outcome_id=report.outcome_id,
                        example_id=existing_id,
                        decision_id=report.decision_id or None,
                        model=spec.name,
                        quality=report.quality,
                        input_tokens=report.input_tokens,
                        output_tokens=report.output_tokens,
                        cost_usd=cost,
                        latency_ms=report.latency_ms,
                    )
                )
        except IntegrityError:
            # Another replica recorded the same outcome_id (or the same new query) first.
            with self._store.read() as session:
                first = outcome_store.find_outcome(session, report.outcome_id)
                if first is not None:
                    return self._replay(session, first)
            raise
        # Committed: now the index learns it, so the next Decide on this server sees it.
        self._index_example(info.name, existing_id, text, vector)
        return RecordedOutcome(
            outcome_id=report.outcome_id,
            example_id=existing_id,
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

    def _subject(self, report: OutcomeReport) -> tuple[NamespaceInfo, str]:
        """The namespace and query text the outcome is about."""
        if report.decision_id:
            with self._store.read() as session:
                row = decision_store.get_decision(session, report.decision_id)
                if row is None:
                    raise NotFound(
                        f"decision {report.decision_id!r} is unknown: pass the decision_id Decide "
                        "returned, or report by messages instead"
                    )
                namespace_id, text = row.namespace_id, row.query_text
            info = next((i for i in self._directory.all() if i.id == namespace_id), None)
            if info is None:
                raise NotFound(f"the namespace of decision {report.decision_id!r} no longer exists")
            return info, text
        info = self._directory.resolve(report.namespace)
        return info, self._routing_text(report.messages)

    def _index_example(
        self, namespace: str, example_id: int, text: str, vector: npt.NDArray[np.float32] | None
    ) -> None:
        with self._store.read() as session:
            means = ex_store.outcome_means(session, example_ids=[example_id]).get(example_id, [])
        facts = ExampleFacts(
            example_id=example_id,
            text=text,
            route=None,
            source=Source.HISTORY,
            best_model=None,
            outcomes=tuple(ObservedOutcome(m, q, c) for m, q, c in means),
        )
        index = self._registry.get(namespace)
        if example_id in index:
            index.update_facts(facts)
            return
        if vector is None:
            vector = self._embedder.embed([text])[0]
        index.add([facts], vector.reshape(1, -1))


def _with_target(params: DecisionParams, target: float) -> DecisionParams:
    return replace(params, quality_target=target)
