"""RecordOutcome: commit to the store, then teach the index, then acknowledge.

Concurrent outcomes share a transaction (a group commit: one commit for many, each caller
answered only after the commit holding its row), which is what lets RecordOutcome keep up
under concurrency. Idempotent on the client's outcome_id: a repeat returns the first result and
writes nothing, even when two replicas race (the unique constraint decides, and the loser reads
the winner on its retry).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import IntegrityError, OperationalError

from routebook.catalog import ModelSpec, estimate_tokens
from routebook.domain import (
    ExampleFacts,
    ObservedOutcome,
    OutcomeReport,
    RecordedOutcome,
    Source,
)
from routebook.embed import Embedder
from routebook.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from routebook.index import IndexRegistry
from routebook.routefiles import text_hash
from routebook.service.cooldowns import CooldownBook
from routebook.service.decision_writer import DecisionWriter
from routebook.service.drift import DriftWatch
from routebook.service.escalation import (
    EscalationGuard,
    failed_over,
    models_ahead,
    reaches_for_the_strongest,
)
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.service.requests import MAX_NAME_CHARS, conversation_text, conversation_tokens
from routebook.service.spend import SpendLedger
from routebook.service.telemetry import Telemetry
from routebook.store import examples as ex_store
from routebook.store import outcomes as outcome_store
from routebook.store.db import Store
from routebook.store.group_commit import GroupCommit
from routebook.store.outcomes import Means, StoredOutcome

MAX_OUTCOME_ID_CHARS = 128
#: The most one call may cost: far above any real call, low enough that a tenant's sum of
#: them stays a finite float (a sum of 1e308s overflows, and then PostgreSQL refuses the
#: spend query and every Decide of that tenant for the budget's whole window).
MAX_CALL_COST_USD = 1_000_000.0
FAILURE_KINDS = ("rate_limited", "server_error", "timeout", "content_filter")


@dataclass(frozen=True, slots=True)
class _Subject:
    """What an outcome is about: the namespace, the query text, the decision behind it, and
    whether the text's history example is stored (when not, a new one needs its vector).

    `text` is None when the decision's text was cleared (decision_text_hours) and no history
    example holds it: the outcome is then spend only."""

    info: NamespaceInfo
    text: str | None
    tenant: str
    decided_model: str | None
    example_known: bool
    #: Decide's cost estimate for `decided_model`, made from the whole conversation.
    decided_cost_usd: float | None = None
    #: The models the decision told the caller to call, in the order it offered them (its
    #: model, the fallbacks, the cascade's steps); none without a decision.
    offered: tuple[str, ...] = ()
    #: Decide's estimated input and output tokens for the call, which priced every estimate of
    #: the decision (its model, fallbacks, cascade steps); None without a decision, or for one
    #: stored before they were kept.
    decided_tokens: tuple[int, int] | None = None
    #: The decision or the report marks the query `contains_pii`.
    contains_pii: bool = False

    def spec(self, model: str) -> ModelSpec | None:
        """The catalog's entry for a reported model; None for one the decision offered that has
        left the catalog since (retired while the call ran): the call was made on the router's
        word and paid for, so its report is taken. Any other model outside the catalog is
        refused, naming the catalog's models."""
        if model in self.info.catalog or model not in self.offered:
            return self.info.catalog.get(model)
        return None


class _LostRace(Exception):
    """A concurrent writer stored this outcome_id or its history example between our look and
    our write, or deleted the example we found; look again. `refusal` is the store's own
    message when the write broke a constraint (a race, or a store that refuses the row)."""

    def __init__(self, refusal: str | None = None) -> None:
        super().__init__(refusal)
        self.refusal = refusal


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
        batch_max: int = 64,
        batch_wait_ms: float = 0.0,
        default_output_tokens: int = 256,
    ) -> None:
        self._drift = drift
        self._default_output_tokens = default_output_tokens
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
        self.commits: GroupCommit[outcome_store.NewOutcome, StoredOutcome] = GroupCommit(
            self._write,
            max_batch=batch_max,
            max_wait=batch_wait_ms / 1000,
        )

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
            refusals = []
            for _attempt in range(3):
                try:
                    return self._record(report)
                except _LostRace as race:
                    refusals.append(race.refusal)  # another writer got there first: look again
            if refusals[-1] is not None and len(set(refusals)) == 1:
                # The same constraint three times is no race: the store refuses this row.
                raise InvalidArgument(
                    f"the store refused this outcome, it was not recorded: {refusals[-1]}"
                )
            raise Unavailable("the outcome could not be recorded under contention; retry it")
        except OperationalError as exc:
            raise Unavailable(
                f"the store is unavailable; the outcome was not recorded: {exc.orig}"
            ) from exc

    def _record_failure(self, report: OutcomeReport) -> RecordedOutcome:
        """A failed call is cooldown evidence, never quality evidence: it does not touch the
        examples, the outcomes or the index."""
        assert report.failure is not None
        subject = self._subject(report, look_for_example=False)
        subject.spec(report.model)  # in the catalog, or offered by the decision
        recorded = self._cooldowns.record_failure(
            subject.info.id,
            report.outcome_id,
            report.model,
            report.failure,
            report.decision_id,
            report.retry_after_seconds,
            # A cooldown holds for every tenant: only a failure the router can tie to a call
            # it asked for (by a decision that offered the model) may start one.
            counted=report.model in subject.offered,
        )
        if not recorded.duplicate:
            self._telemetry.failed(
                subject.info.name, report.model, report.failure, started=recorded.started
            )
        return RecordedOutcome(
            outcome_id=report.outcome_id,
            example_id=0,
            duplicate=recorded.duplicate,
            namespace=subject.info.name,
            quality=0.0,
            cost_usd=0.0,  # not stored, so not charged (router.proto says so)
            cooldown_seconds=recorded.cooldown_seconds,
        )

    def _record(self, report: OutcomeReport) -> RecordedOutcome:
        subject = self._subject(report, look_for_example=True)
        info, text = subject.info, subject.text
        spec = subject.spec(report.model)
        if report.cost_usd is not None:
            cost = report.cost_usd
        elif spec is None:
            # Retired since the decision offered it: its prices are gone, and the decision's own
            # estimate (made for its model, from the whole conversation) is the router's best.
            cost = subject.decided_cost_usd or 0.0
        elif report.input_tokens or report.output_tokens:
            cost = spec.cost_usd(report.input_tokens, report.output_tokens)
        elif report.model == subject.decided_model and subject.decided_cost_usd is not None:
            # No usage reported (a client that returns just the answer): charge what Decide
            # estimated for this model, else budgets would never move for such callers.
            cost = subject.decided_cost_usd
        elif subject.decided_tokens is not None:
            # Another model than decided (a fallback, a later cascade step), no usage: what the
            # decision estimated for it, priced from the same tokens as its plan (the caller
            # sent that model the whole conversation, not just the routing text).
            cost = spec.cost_usd(*subject.decided_tokens)
        elif report.messages:
            # As Decide estimates: the whole conversation in, the default answer length out.
            cost = spec.cost_usd(conversation_tokens(report.messages), self._default_output_tokens)
        elif text is not None:
            # By decision_id, for a decision stored before its tokens were kept, only the
            # routing text is known.
            cost = spec.cost_usd(estimate_tokens(text), self._default_output_tokens)
        else:
            # The decision's text is gone (decision_text_hours): its own estimate, made for its
            # model from the whole conversation, is the router's best.
            cost = subject.decided_cost_usd or 0.0
        cost = min(cost, MAX_CALL_COST_USD)  # extreme catalog prices times many tokens
        # Judged before the write, so a store that cannot answer fails the report, not an
        # acknowledged one after its commit.
        escalates = self._escalates(report, subject)
        digest = None if text is None else text_hash(text)
        # Embed only for a new example (usually a cache hit: Decide embedded the same text).
        vector = None if subject.example_known or text is None else self._embedder.embed([text])[0]
        try:
            stored = self.commits.submit(
                outcome_store.NewOutcome(
                    outcome_id=report.outcome_id,
                    namespace_id=info.id,
                    text=text,
                    text_hash=digest,
                    tenant=subject.tenant or None,
                    embedding=None if vector is None else ex_store.vector_bytes(vector),
                    embedding_model=self._embedder.model_id,
                    decision_id=report.decision_id or None,
                    model=report.model,
                    quality=report.quality,
                    input_tokens=report.input_tokens,
                    output_tokens=report.output_tokens,
                    cost_usd=cost,
                    latency_ms=report.latency_ms,
                    contains_pii=subject.contains_pii,
                )
            )
        except IntegrityError as exc:
            # Another writer stored the same outcome_id or example between our look and our
            # write (or the store refuses the row): look again.
            raise _LostRace(str(exc.orig).splitlines()[0][:300]) from None
        except outcome_store.ExampleVanished:
            raise _LostRace() from None  # another writer deleted the example we found
        if stored.duplicate:
            return self._replay(stored, report)
        if text is not None:
            assert stored.example_id is not None  # written just now, with its example
            # Committed: now the index learns it, so the next Decide on this server sees it.
            self._index_example(
                info.name,
                stored.example_id,
                text,
                vector,
                stored.means,
                subject.tenant or None,
                stored.contains_pii,
            )
        if subject.tenant:
            self._spend.invalidate(info.id, subject.tenant)
        self._drift.outcome(info.name, report.model, report.quality >= 0.5)
        cap = info.policy.escalation_cap
        if escalates and cap is not None:
            self._guard.note(
                info.name, subject.tenant, True, cap, info.policy.names(subject.tenant)
            )
        # The metric counts every move off the decided model (a fallback or a cascade step).
        moved = subject.decided_model is not None and subject.decided_model != report.model
        self._telemetry.recorded(
            info.name, report.model, report.quality, cost, subject.tenant, moved
        )
        return RecordedOutcome(
            outcome_id=report.outcome_id,
            example_id=stored.example_id or 0,
            duplicate=False,
            namespace=info.name,
            quality=report.quality,
            cost_usd=cost,
            text_expired=text is None,
        )

    def _escalates(self, report: OutcomeReport, subject: _Subject) -> bool:
        """Whether this outcome is one more call to the strongest models for the tenant's
        escalation cap: one the decision did not choose, unless the caller reached it by the
        decision's fallback walk, every model offered ahead of it having been reported failed
        on the decision first (docs/failover.md). Failures reported after this outcome do not
        take it back: a caller learns of a failure before it calls the next model."""
        info = subject.info
        if info.policy.escalation_cap is None or not subject.tenant:
            return False
        if not reaches_for_the_strongest(
            report.model, subject.decided_model, info.catalog.strongest_tier
        ):
            return False
        ahead = models_ahead(report.model, subject.offered)
        if ahead is None or not report.decision_id:
            return True  # not offered: a reach for the strongest, whatever failed
        failed = self._cooldowns.failed_on(info.id, report.decision_id, ahead)
        return not failed_over(report.model, subject.offered, failed)

    def _write(self, batch: Sequence[outcome_store.NewOutcome]) -> list[StoredOutcome]:
        """One transaction for a group of concurrent outcomes (see GroupCommit)."""
        with self._store.write() as session:
            return outcome_store.write_outcomes(session.connection(), batch)

    def _replay(self, first: StoredOutcome, report: OutcomeReport) -> RecordedOutcome:
        namespace = next((i.name for i in self._directory.all() if i.id == first.namespace_id), "")
        _check_allowed(report, namespace)  # a retry reads back what was recorded: same rule
        return RecordedOutcome(
            outcome_id=first.outcome_id,
            example_id=first.example_id or 0,  # 0: deleted since, or never made (no text)
            duplicate=True,
            namespace=namespace,
            quality=first.quality,
            cost_usd=first.cost_usd,
        )

    def _subject(self, report: OutcomeReport, look_for_example: bool) -> _Subject:
        """Resolve what the outcome is about, with one read of the store at most."""
        if report.decision_id:
            subject = self._decision_subject(
                report.decision_id, look_for_example, report.contains_pii
            )
            _check_allowed(report, subject.info.name)
            _check_tenant(report, subject.tenant)
            return subject
        info = self._directory.resolve(report.namespace)
        _check_allowed(report, info.name)
        text = conversation_text(report.messages, self._max_query_chars)
        known = look_for_example and self._example_known(info.id, text)
        return _Subject(info, text, report.tenant, None, known, contains_pii=report.contains_pii)

    def _decision_subject(
        self, decision_id: str, look_for_example: bool, contains_pii: bool = False
    ) -> _Subject:
        """From the write-behind buffer, else the store. Another replica's decision may be a
        moment from the store, so a miss is retried briefly before NOT_FOUND. The query is
        marked `contains_pii` when the decision or the report (`contains_pii`) says so."""
        for attempt in range(4):
            pending = self._writer.pending(decision_id)
            if pending is not None:
                info = self._namespace(pending.namespace_id, decision_id)
                known = look_for_example and self._example_known(info.id, pending.query_text)
                return _Subject(
                    info,
                    pending.query_text,
                    pending.tenant or "",
                    pending.model,
                    known,
                    pending.estimated_cost_usd,
                    _offered(pending.offered, pending.model),
                    _tokens(pending.input_tokens, pending.output_tokens),
                    pending.contains_pii or contains_pii,
                )
            with self._store.connect() as connection:
                row = outcome_store.decision_subject(connection, decision_id)
            if row is not None:
                info = self._namespace(row.namespace_id, decision_id)
                known = row.example_id is not None
                return _Subject(
                    info,
                    row.query_text,
                    row.tenant or "",
                    row.model,
                    known,
                    row.estimated_cost_usd,
                    _offered(row.offered, row.model),
                    _tokens(row.input_tokens, row.output_tokens),
                    row.contains_pii or contains_pii,
                )
            if attempt < 3:
                time.sleep(0.1)
        raise NotFound(
            f"decision {decision_id!r} is unknown: pass the decision_id Decide returned, or "
            "report by messages instead"
        )

    def _namespace(self, namespace_id: int, decision_id: str) -> NamespaceInfo:
        info = next((i for i in self._directory.all() if i.id == namespace_id), None)
        if info is None:
            raise NotFound(f"the namespace of decision {decision_id!r} no longer exists")
        return info

    def _example_known(self, namespace_id: int, text: str) -> bool:
        with self._store.connect() as connection:
            digest = text_hash(text)
            return outcome_store.history_example_id(connection, namespace_id, digest) is not None

    def _index_example(
        self,
        namespace: str,
        example_id: int,
        text: str,
        vector: npt.NDArray[np.float32] | None,
        means: Means,
        tenant: str | None,
        contains_pii: bool,
    ) -> None:
        """`means` is the example's outcomes, and `contains_pii` its mark, as the committing
        transaction saw them."""
        facts = ExampleFacts(
            example_id=example_id,
            text=text,
            route=None,
            source=Source.HISTORY,
            best_model=None,
            outcomes=tuple(ObservedOutcome(m, q, c) for m, q, c in means),
            tenant=tenant,
            contains_pii=contains_pii,
        )
        index = self._registry.get(namespace)

        def newer(current: ExampleFacts) -> ExampleFacts | None:
            # A mark is never taken back, whichever view gets there first.
            marked = current.contains_pii or contains_pii
            if _count(current.outcomes) > _count(facts.outcomes):
                # A later commit's view got there first: do not step back (but mark).
                return (
                    None if marked == current.contains_pii else replace(current, contains_pii=True)
                )
            return replace(facts, tenant=current.tenant, contains_pii=marked)  # the first tenant's

        # Read and write under the index's lock: a delete or another outcome of the same
        # example may run between any two separate calls.
        if index.revise_facts(example_id, newer):
            return
        if vector is None:
            vector = self._embedder.embed([text])[0]
        if index.add_new([facts], vector.reshape(1, -1)):  # added meanwhile by another writer
            index.revise_facts(example_id, newer)


def _offered(stored: str | None, model: str) -> tuple[str, ...]:
    """A decision's offered models as stored, in their order; one stored before they were kept
    offered its own model at least."""
    return tuple(stored.split()) if stored is not None else (model,)


def _tokens(input_tokens: int | None, output_tokens: int | None) -> tuple[int, int] | None:
    """A decision's estimated tokens as stored; None for one stored before they were kept."""
    if input_tokens is None or output_tokens is None:
        return None
    return (input_tokens, output_tokens)


def _count(outcomes: Sequence[ObservedOutcome]) -> int:
    return sum(o.count for o in outcomes)


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
    if report.cost_usd is not None and report.cost_usd > MAX_CALL_COST_USD:
        raise InvalidArgument(
            f"cost_usd {report.cost_usd:g} is more than one call can cost "
            f"(at most {MAX_CALL_COST_USD:g}); report the call's cost in US dollars"
        )
    if len(report.tenant) > MAX_NAME_CHARS:
        raise InvalidArgument(f"tenant is longer than {MAX_NAME_CHARS} characters")
    if report.decision_id and report.messages:
        raise InvalidArgument("give either decision_id or messages, not both")
    if not report.decision_id and not report.messages:
        raise InvalidArgument("give the decision_id the outcome answers, or the messages")


def _check_tenant(report: OutcomeReport, decision_tenant: str) -> None:
    """A key bound to a tenant reports only on that tenant's decisions: an outcome charges the
    decision's tenant, so another tenant's decision id must not spend that tenant's budget."""
    bound = report.bound_tenant
    if bound is not None and decision_tenant != bound:
        raise PermissionDenied(
            f"decision {report.decision_id!r} was made for another tenant: this API key is "
            f"bound to tenant {bound[:64]!r} and reports only on its decisions"
        )


def _check_allowed(report: OutcomeReport, namespace: str) -> None:
    allowed = report.allowed_namespaces
    if allowed is not None and namespace not in allowed:
        made = f", where decision {report.decision_id!r} was made" if report.decision_id else ""
        raise PermissionDenied(f"this API key is not allowed for namespace {namespace!r}{made}")
