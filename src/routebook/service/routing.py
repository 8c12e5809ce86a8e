"""Decide: validate, apply the policy envelope, embed, search, decide, log."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from routebook.catalog import estimate_tokens
from routebook.decide import DecisionParams, DecisionRequest, decide
from routebook.decide.estimate import SAME_QUERY_SIMILARITY
from routebook.decide.fallbacks import fallback_order, without_cooled
from routebook.decide.policy import Envelope, PolicyContext, evaluate_policy, explain_removals, usd
from routebook.decide.rules import first_match
from routebook.domain import Choice, Decision, Neighbour, PolicyEffect, ReasonCode, Strategy
from routebook.embed import Embedder
from routebook.embed.protocol import layered
from routebook.errors import (
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
    RoutebookError,
)
from routebook.index import IndexRegistry
from routebook.policyspec import Rule
from routebook.routefiles import text_hash
from routebook.service.cooldowns import Cooldown, CooldownBook
from routebook.service.decision_writer import DecisionWriter, PendingDecision
from routebook.service.drift import DriftWatch
from routebook.service.escalation import EscalationGuard
from routebook.service.heads import HeadBook
from routebook.service.namespaces import NamespaceDirectory, NamespaceInfo
from routebook.service.requests import (
    DecideQuery,
    RoutingLimits,
    check_query_fields,
    conversation_text,
    conversation_tokens,
)
from routebook.service.sessions import StickySessions
from routebook.service.spend import SpendLedger
from routebook.service.telemetry import DecideTimings, Refusal, Telemetry
from routebook.store.db import Store

log = logging.getLogger("routebook.routing")


@dataclass(frozen=True, slots=True)
class ShadowCandidate:
    """A candidate decision rule run in shadow beside the live one."""

    params: DecisionParams
    k: int
    #: The answer length the candidate decides at when a request gives none: it picks the
    #: cheapest model when input and output prices cross. Its recorded cost is still priced at
    #: the live length (as the eval gate prices both sides): a candidate that only assumes
    #: shorter answers must not look cheaper for it.
    default_output_tokens: int
    #: namespace → the candidate's rules (a namespace not listed keeps its live rules).
    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    @property
    def uses_head(self) -> bool:
        return self.params.head_strength > 0 or self.params.route_head_strength > 0

    def compares(self, strategy: Strategy, namespace: str) -> bool:
        """Whether a live decision of this strategy is compared. A rule decision is only where
        the candidate has rules of its own: with the live rules it matches the same rule, an
        agreement by construction that would dilute the report's disagreement share."""
        return strategy in SHADOWED or (strategy is Strategy.RULE and namespace in self.rules)


#: Decisions the shadow candidate is always compared on (overrides, sticky sessions and
#: policy-forced decisions are the same for both; rule decisions, see `compares`).
SHADOWED = (Strategy.SEMANTIC, Strategy.CASCADE)


_Refused = TypeVar("_Refused", ResourceExhausted, FailedPrecondition, PermissionDenied)
#: The gRPC status each policy refusal gets (mapped at the server's boundary), as the metrics
#: and the decision log name it.
_CODES: dict[type[RoutebookError], str] = {
    ResourceExhausted: "resource_exhausted",
    FailedPrecondition: "failed_precondition",
    PermissionDenied: "permission_denied",
}


class RoutingService:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        registry: IndexRegistry,
        directory: NamespaceDirectory,
        params: DecisionParams,
        limits: RoutingLimits,
        spend: SpendLedger,
        telemetry: Telemetry,
        writer: DecisionWriter,
        cooldowns: CooldownBook,
        sessions: StickySessions,
        guard: EscalationGuard,
        drift: DriftWatch,
        shadow: ShadowCandidate | None = None,
        heads: HeadBook | None = None,
    ) -> None:
        self._heads = heads
        self._shadow = shadow
        self._drift = drift
        self._guard = guard
        self._writer = writer
        self._cooldowns = cooldowns
        self._sessions = sessions
        self._store = store
        self._embedder = embedder
        self._registry = registry
        self._directory = directory
        self.params = params
        self.limits = limits
        self._spend = spend
        self._telemetry = telemetry

    def decide(self, query: DecideQuery) -> Decision:
        started = time.perf_counter()
        info = self._directory.resolve(query.namespace)
        text = conversation_text(query.messages, self.limits.max_query_chars)
        check_query_fields(query)
        params = self.params
        if query.quality_target is not None:
            params = replace(params, quality_target=query.quality_target, cascade_min_quality=None)
        output_tokens = (
            self.limits.default_output_tokens
            if query.expected_output_tokens is None
            else query.expected_output_tokens
        )
        input_tokens = conversation_tokens(query.messages)
        # The routing text's own: what rules bound and the head reads, not the whole conversation.
        query_tokens = estimate_tokens(text)
        cooled = self._cooldowns.active(info.id)
        envelope = self._envelope(info, query, input_tokens, output_tokens, frozenset(cooled))
        override = self._admit(info, query, envelope, text, started)
        available = without_cooled(envelope.allowed, cooled)
        cooled_out = available != envelope.allowed  # a cooldown left an allowed model out
        effects = envelope.effects
        left_out = [m for m in envelope.allowed if m in cooled and m not in available] or [
            m for m in envelope.allowed if m in cooled
        ]
        if left_out:
            effects += (cooldown_effect(left_out, cooled, not cooled_out, override),)
        cap = info.policy.escalation_cap
        strongest = info.catalog.strongest_tier  # every model at the top price
        strong_left = tuple(m for m in available if m in strongest)
        capped = (
            cap is not None
            and bool(query.tenant)
            and (override in strongest or 0 < len(strong_left) < len(available))
            and self._guard.over(info.name, query.tenant, cap)
        )
        if capped:
            assert cap is not None
            share, calls = self._guard.share(info.name, query.tenant, cap)
            top = " or ".join(m for m in info.catalog.names if m in strongest)
            why = (
                f"tenant {query.tenant!r} sent {share:.0%} of its last {calls} calls to "
                f"{top}, decided or escalated to (cap {cap.max_strong_share:.0%} per "
                f"{cap.window_minutes:g} min)"
            )
            # An override must not be the way round the cap, even while the strongest model is
            # cooling down (an override may still name a cooling model).
            if override in strongest:
                raise self._refuse(
                    PermissionDenied(
                        f"override to {override} is not allowed: rule escalation_guard: {why}"
                    ),
                    ("escalation_guard",),
                    effects,
                    info,
                    query,
                    text,
                    started,
                )
            available = tuple(m for m in available if m not in strongest)
            effects += (PolicyEffect("escalation_guard", strong_left, why),)
        ruled = None
        if info.policy.rules and override is None and envelope.forced is None:
            ruled = first_match(
                info.policy.rules,
                text,
                query.metadata,
                query_tokens,
                available,
                info.policy.tiers,
            )
            self._telemetry.rule_timeouts(info.name, ruled.timed_out)
        rule_model = ruled.model if ruled is not None else None
        sticky = None
        if query.session_id and override is None and envelope.forced is None and not rule_model:
            kept = self._sessions.model(info.name, query.tenant, query.session_id)
            sticky = kept if kept in available else None

        head = self._heads.get(info.name) if self._heads is not None else None
        embed_started = time.perf_counter()
        layers = None
        if head is not None and head.reads_layers:  # from the same forward pass as the vector
            vectors, pools = layered(self._embedder).embed_with_layers([text])
            vector, layers = vectors[0], pools[0]
        else:
            vector = self._embedder.embed([text])[0]
        search_started = time.perf_counter()
        index = self._registry.get(info.name)
        shadow_k = self._shadow.k if self._shadow is not None else 0
        found = index.search(vector, max(self.limits.k, shadow_k))
        search_done = time.perf_counter()
        neighbours = found[: self.limits.k]
        request = DecisionRequest(
            neighbours=neighbours,
            catalog=info.catalog,
            params=params,
            index_size=len(index),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            allowed=frozenset(available),
            override=override or rule_model or sticky,
            forced=envelope.forced if override is None else None,
            policy=effects,
            # The routing text's length, as the head was trained on (a system prompt or earlier
            # turns would make every query of a conversation look long).
            head=head.predict(vector, query_tokens, layers) if head is not None else None,
        )
        choice = decide(request)
        unforced: Choice | None = None  # `_unforced`, made at most once
        if ruled is not None and ruled.rule is not None:
            choice = replace(
                choice,
                strategy=Strategy.RULE,
                reason_code=ReasonCode.RULE,
                reason=f"rule {ruled.rule.name!r} routes to {ruled.model}; its estimated "
                f"success is {choice.confidence:.2f}",
            )
        elif sticky is not None:
            choice = replace(
                choice,
                strategy=Strategy.STICKY,
                reason_code=ReasonCode.STICKY,
                reason=f"session {query.session_id[:40]!r} keeps {sticky}; its estimated "
                f"success is {choice.confidence:.2f}",
            )
        elif left_out and choice.strategy is Strategy.SEMANTIC:
            unforced = _unforced(request, envelope, override)
            wanted = unforced.model
            if wanted in cooled:
                left = cooled[wanted]
                cooling = (
                    f"{wanted} is on cooldown ({left.seconds_left():.1f}s left, {left.reason})"
                )
                if wanted != choice.model:
                    choice = replace(
                        choice,
                        reason_code=ReasonCode.COOLDOWN,
                        reason=f"{cooling}; {choice.reason}",
                    )
                else:
                    # Every allowed model is cooling, so the decision did not move: its own
                    # reason code stands (COOLDOWN says it moved to the next choice).
                    choice = replace(
                        choice,
                        reason=f"{cooling}, as is every allowed model, so it is kept; "
                        f"{choice.reason}",
                    )
        if query.session_id and choice.strategy is Strategy.RULE:
            # A rule answers the turn it matches, not the conversation: one keyword hit must not
            # move every later turn to the rule's model (sessions.py says why).
            self._sessions.touch(info.name, query.tenant, query.session_id)
        elif query.session_id and choice.strategy is not Strategy.CASCADE:
            # A cascade's first step is a try, not the session's model: the caller may reject
            # it and accept a later step, and the next turn must not stick to the rejected one.
            self._sessions.keep(info.name, query.tenant, query.session_id, choice.model)
        if cap is not None and query.tenant:
            named = info.policy.names(query.tenant)
            strong = choice.model in strongest
            if strong and cooled_out:
                # Sent to the strongest only because cheaper models are cooling down (their
                # calls failed: an outage, usually) is a fallback after failures, not a reach
                # for it (docs/failover.md). Counted, it tripped the cap, and when a cooldown
                # ended the guard took the strongest model, the one still up, from the tenant.
                unforced = unforced or _unforced(request, envelope, override)
                strong = unforced.model in strongest
            self._guard.note(info.name, query.tenant, strong, cap, named)
        fallbacks = fallback_order(choice, available, self.limits.max_fallbacks)
        if not self._writer.store_ok:
            choice = replace(
                choice,
                reason=choice.reason + "; the store is unavailable: answered from the in-memory "
                "index, the decision is buffered",
            )
        decision = Decision(
            decision_id=uuid.uuid4().hex,
            namespace=info.name,
            index_generation=index.generation,
            choice=choice,
            fallbacks=fallbacks,
            matched_rule=ruled.rule.name if ruled is not None and ruled.rule else None,
        )
        shadow = None
        if self._shadow is not None and self._shadow.compares(choice.strategy, info.name):
            # The candidate decides on the same neighbours and the same allowed models, with its
            # own rules if it has some; its answer is recorded, never returned.
            candidate_rules = self._shadow.rules.get(info.name, info.policy.rules)
            match = first_match(
                candidate_rules,
                text,
                query.metadata,
                query_tokens,
                available,
                info.policy.tiers,
            )
            shadow_params = self._shadow.params
            if query.quality_target is not None:  # the caller's own bar applies to both
                shadow_params = replace(
                    shadow_params, quality_target=query.quality_target, cascade_min_quality=None
                )
            shadow_tokens = (  # the caller's own answer length applies to both
                self._shadow.default_output_tokens
                if query.expected_output_tokens is None
                else query.expected_output_tokens
            )
            shadow = decide(
                replace(
                    request,
                    neighbours=found[: self._shadow.k],
                    params=shadow_params,
                    override=match.model,
                    output_tokens=shadow_tokens,
                )
            )
            if shadow_tokens != output_tokens:
                live_price = info.catalog.get(shadow.model).cost_usd(input_tokens, output_tokens)
                shadow = replace(shadow, estimated_cost_usd=live_price)
        # The text of a query already marked (its own history example is) is kept out of the
        # log and off an example an outcome on this decision may make, even when this request
        # omits the mark; its routing and policy still follow the request's own mark.
        marked = query.contains_pii or same_text_marked(found)
        self._save(info, decision, text, query, shadow, (input_tokens, output_tokens), marked)
        self._drift.observe(
            info.name,
            choice.top_similarity,
            choice.strategy is Strategy.CASCADE,
            generation=index.generation,
            empty_index=choice.reason_code is ReasonCode.COLD_EMPTY_INDEX,
        )
        timings = DecideTimings(
            total_s=time.perf_counter() - started,
            embed_s=search_started - embed_started,
            search_s=search_done - search_started,
        )
        self._telemetry.decided(decision, query.tenant, timings, text, marked)
        return decision

    def _envelope(
        self,
        info: NamespaceInfo,
        query: DecideQuery,
        input_tokens: int,
        output_tokens: int,
        cooling: frozenset[str],
    ) -> Envelope:
        policy = info.policy
        spent = 0.0
        if policy.budget is not None and query.tenant:
            spent = self._spend.spent(info.id, query.tenant, policy.budget.window_hours)
        return evaluate_policy(
            policy,
            info.catalog,
            PolicyContext(
                tenant=query.tenant,
                required_tags=query.required_tags,
                contains_pii=query.contains_pii,
                max_latency_ms=query.max_latency_ms,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                spent_usd=spent,
                cooling=cooling,
            ),
        )

    def _admit(
        self,
        info: NamespaceInfo,
        query: DecideQuery,
        envelope: Envelope,
        text: str,
        started: float,
    ) -> str | None:
        """Refuse a request policy does not let through, else return its allowed override.

        In order: past the budget with `when_exhausted = reject`, RESOURCE_EXHAUSTED; an
        override to a model policy removed, PERMISSION_DENIED naming the rules (even when no
        other model is left either: the code must not depend on unrelated models); no model
        left, FAILED_PRECONDITION naming every rule. Each refusal is counted and logged."""
        policy = info.policy
        budget = policy.budget
        exhausted = envelope.budget_state == "exhausted"
        if exhausted and budget is not None and budget.when_exhausted == "reject":
            raise self._refuse(
                ResourceExhausted(
                    f"tenant {query.tenant!r} has reached its budget of "
                    f"{usd(policy.budget_of(query.tenant) or 0.0)} per "
                    f"{budget.window_hours:g}h (spent {usd(envelope.spent_usd)}); its "
                    "Decides are refused until its spend over the window falls below it"
                ),
                ("budget",),
                envelope.effects,
                info,
                query,
                text,
                started,
            )
        override = None
        if query.model_override:
            spec = info.catalog.get(query.model_override)  # InvalidArgument: not in the catalog
            if spec.name not in envelope.allowed:
                causes = envelope.removed_by(spec.name)
                why = "; ".join(f"rule {c.rule}: {c.detail}" for c in causes) or "policy"
                raise self._refuse(
                    PermissionDenied(f"override to {spec.name} is not allowed: {why}"),
                    tuple(dict.fromkeys(c.rule for c in causes)),
                    envelope.effects,
                    info,
                    query,
                    text,
                    started,
                )
            override = spec.name
        if not envelope.allowed:
            raise self._refuse(
                FailedPrecondition(
                    "policy leaves no model for this request: "
                    + explain_removals(info.catalog, envelope)
                ),
                tuple(dict.fromkeys(e.rule for e in envelope.effects if e.removed)),
                envelope.effects,
                info,
                query,
                text,
                started,
            )
        return override

    def _refuse(
        self,
        error: _Refused,
        rules: tuple[str, ...],
        effects: tuple[PolicyEffect, ...],
        info: NamespaceInfo,
        query: DecideQuery,
        text: str,
        started: float,
    ) -> _Refused:
        """Count and log a refused Decide (metrics and the decision log, as for a decision),
        and return the error to raise: otherwise a refusal is seen only by its caller."""
        acted = tuple(dict.fromkeys([*rules, *(e.rule for e in effects if e.removed)]))
        refusal = Refusal(info.name, _CODES[type(error)], rules, str(error), acted)
        marked = query.contains_pii
        if not marked and self._telemetry.logs_query_text:
            marked = self._known_marked(info, text)
        self._telemetry.refused(refusal, query.tenant, time.perf_counter() - started, text, marked)
        return error

    def _known_marked(self, info: NamespaceInfo, text: str) -> bool:
        """Whether `text` is a history example marked `contains_pii`. A refusal comes before
        the search, so this embeds and searches only for a log line that would show the text;
        one that cannot tell (the embedder failed) counts as marked: the line loses its text,
        not the refusal its answer."""
        try:
            vector = self._embedder.embed([text])[0]
            return same_text_marked(self._registry.get(info.name).search(vector, self.limits.k))
        except Exception:
            log.warning("cannot tell whether a refused query is marked; its text is not logged")
            return True

    def _save(
        self,
        info: NamespaceInfo,
        decision: Decision,
        text: str,
        query: DecideQuery,
        shadow: Choice | None,
        tokens: tuple[int, int],
        marked: bool,
    ) -> None:
        """Queue the decision row; the writer commits it behind, off the hot path. `tokens` are
        the call's estimated input and output tokens, what every estimate was priced from: a
        report without usage for any model is charged them (see OutcomeRecorder). `marked`:
        the request was marked `contains_pii`, or its text is a marked example's."""
        choice = decision.choice
        self._writer.add(
            PendingDecision(
                id=decision.decision_id,
                namespace_id=info.id,
                query_hash=text_hash(text),
                query_text=text,
                tenant=query.tenant or None,
                strategy=choice.strategy.value,
                model=choice.model,
                estimated_cost_usd=choice.estimated_cost_usd,
                confidence=choice.confidence,
                shadow_model=shadow.model if shadow is not None else None,
                shadow_estimated_cost_usd=shadow.estimated_cost_usd if shadow is not None else None,
                shadow_confidence=shadow.confidence if shadow is not None else None,
                offered=" ".join(decision.offered),
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                contains_pii=marked,
            )
        )


def same_text_marked(neighbours: list[Neighbour]) -> bool:
    """Whether the query's own text (a neighbour at least SAME_QUERY_SIMILARITY alike) is a
    history example marked `contains_pii`: a caller that marked it once has said the text is
    personal data, whoever sends it again and however (whatever its tenant: the mark is only
    used to withhold the text)."""
    return any(n.similarity >= SAME_QUERY_SIMILARITY and n.facts.contains_pii for n in neighbours)


def cooldown_effect(
    models: list[str], cooled: dict[str, Cooldown], ignored: bool, overridden: str | None
) -> PolicyEffect:
    """The evidence of the allowed models cooling down. `overridden`, the model the caller's
    override asked for, is served even while cooling: named, never listed as removed."""
    details = ", ".join(
        f"{m} {cooled[m].seconds_left():.1f}s left ({cooled[m].reason})" for m in models
    )
    if ignored:
        return PolicyEffect(
            "cooldown", (), f"every allowed model is on cooldown, so none is left out: {details}"
        )
    if overridden not in models:
        return PolicyEffect("cooldown", tuple(models), f"on cooldown: {details}")
    removed = tuple(m for m in models if m != overridden)
    kept = f"{overridden} is kept: the override asks for it"
    if not removed:
        return PolicyEffect("cooldown", (), f"on cooldown: {details}; {kept}")
    return PolicyEffect(
        "cooldown", removed, f"on cooldown: {details}; left out: {', '.join(removed)}; {kept}"
    )


def _unforced(request: DecisionRequest, envelope: Envelope, override: str | None) -> Choice:
    """The decision had no model been cooling down, with the caller's own override only: a
    rule's pick and a session's kept model were chosen among the models left, so they carry
    the cooldown too. It says which model a cooldown took (the reason) and whether a decision
    for the strongest model was forced by cooldowns (the escalation cap)."""
    return decide(replace(request, allowed=frozenset(envelope.allowed), override=override))
