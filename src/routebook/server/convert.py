"""proto ↔ domain. With the servicers, the only code that touches the generated *_pb2 types."""

from __future__ import annotations

from collections.abc import Iterable

from routebook.catalog import Catalog, ModelSpec
from routebook.domain import (
    Decision,
    Message,
    OutcomeReport,
    ReasonCode,
    RecordedOutcome,
    Source,
    Strategy,
)
from routebook.errors import InvalidArgument
from routebook.service.drift import DriftReport, WindowStats
from routebook.service.examples import ExampleInput, UpsertResult
from routebook.service.namespace_admin import NamespaceStats, NamespaceView
from routebook.service.reindex import JobStatus
from routebook.service.requests import DecideQuery
from routebook.store.examples import ExampleFilter
from routebook.store.tables import ExampleRow, as_utc
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import router_pb2 as pb

STRATEGIES = {
    Strategy.SEMANTIC: pb.STRATEGY_SEMANTIC,
    Strategy.CASCADE: pb.STRATEGY_CASCADE,
    Strategy.POLICY: pb.STRATEGY_POLICY,
    Strategy.OVERRIDE: pb.STRATEGY_OVERRIDE,
    Strategy.STICKY: pb.STRATEGY_STICKY,
    Strategy.RULE: pb.STRATEGY_RULE,
}
REASONS = {
    ReasonCode.CHEAPEST_MEETS_TARGET: pb.REASON_CODE_CHEAPEST_MEETS_TARGET,
    ReasonCode.NONE_MEETS_TARGET: pb.REASON_CODE_NONE_MEETS_TARGET,
    ReasonCode.COLD_LOW_SIMILARITY: pb.REASON_CODE_COLD_LOW_SIMILARITY,
    ReasonCode.COLD_LOW_SUPPORT: pb.REASON_CODE_COLD_LOW_SUPPORT,
    ReasonCode.COLD_EMPTY_INDEX: pb.REASON_CODE_COLD_EMPTY_INDEX,
    ReasonCode.OVERRIDE: pb.REASON_CODE_OVERRIDE,
    ReasonCode.BUDGET_EXHAUSTED: pb.REASON_CODE_BUDGET_EXHAUSTED,
    ReasonCode.COOLDOWN: pb.REASON_CODE_COOLDOWN,
    ReasonCode.STICKY: pb.REASON_CODE_STICKY,
    ReasonCode.RULE: pb.REASON_CODE_RULE,
}
FAILURES = {
    pb.FAILURE_KIND_RATE_LIMITED: "rate_limited",
    pb.FAILURE_KIND_SERVER_ERROR: "server_error",
    pb.FAILURE_KIND_TIMEOUT: "timeout",
    pb.FAILURE_KIND_CONTENT_FILTER: "content_filter",
}
SOURCES = {Source.REFERENCE: pb.SOURCE_REFERENCE, Source.HISTORY: pb.SOURCE_HISTORY}


def messages_from_proto(messages: Iterable[pb.Message]) -> tuple[Message, ...]:
    return tuple(Message(role=m.role, content=m.content) for m in messages)


def decide_query(request: pb.DecideRequest) -> DecideQuery:
    return DecideQuery(
        messages=messages_from_proto(request.messages),
        namespace=request.namespace or None,
        metadata=dict(request.metadata),
        quality_target=request.quality_target if request.HasField("quality_target") else None,
        expected_output_tokens=(
            request.expected_output_tokens if request.HasField("expected_output_tokens") else None
        ),
        tenant=request.tenant,
        model_override=request.model_override or None,
        max_latency_ms=request.max_latency_ms if request.HasField("max_latency_ms") else None,
        required_tags=tuple(request.required_tags),
        contains_pii=request.contains_pii,
        session_id=request.session_id,
    )


def decide_response(
    decision: Decision, snippet_chars: int = 200, tenant: str = ""
) -> pb.DecideResponse:
    choice = decision.choice
    response = pb.DecideResponse(
        decision_id=decision.decision_id,
        namespace=decision.namespace,
        model=choice.model,
        route=choice.route or "",
        strategy=STRATEGIES[choice.strategy],
        confidence=choice.confidence,
        estimated_cost_usd=choice.estimated_cost_usd,
        reason_code=REASONS[choice.reason_code],
        reason=choice.reason,
        index_generation=decision.index_generation,
        quality_target=choice.quality_target,
        top_similarity=choice.top_similarity,
        tenant=tenant,
        fallbacks=list(decision.fallbacks),
        matched_rule=decision.matched_rule or "",
    )
    for effect in choice.policy:
        response.policy.add(
            rule=effect.rule, removed_models=list(effect.removed), detail=effect.detail
        )
    for n in choice.neighbours:
        # One tenant's queries are never shown to another tenant, and a query marked as
        # holding personal data to no request at all (its own tenant's included: a request
        # not so marked may be answered, and logged, where personal data must not go).
        foreign = n.facts.source is Source.HISTORY and (n.facts.tenant or "") != tenant
        withheld = foreign or n.facts.contains_pii
        response.neighbours.add(
            example_id=n.facts.example_id,
            text_snippet="" if withheld else n.facts.text[:snippet_chars],
            contains_pii=n.facts.contains_pii and not foreign,
            similarity=n.similarity,
            route=n.facts.route or "",
            source=SOURCES[n.facts.source],
            best_model=n.facts.best_model or "",
            outcomes=[
                pb.ObservedOutcome(model=o.model, mean_quality=o.mean_quality, count=o.count)
                for o in n.facts.outcomes
            ],
            weight=n.weight,
        )
    for e in choice.estimates:
        estimate = response.estimates.add(
            model=e.model,
            success=e.success,
            support=e.support,
            estimated_cost_usd=e.estimated_cost_usd,
            meets_target=e.meets_target,
            allowed=e.allowed,
        )
        if e.head_success is not None:
            estimate.head_success = e.head_success
    if choice.head is not None:
        response.head.generation = choice.head.generation
        response.head.trained_on = choice.head.trained_on
        top = sorted(choice.head.routes, key=lambda item: (-item[1], item[0]))[:3]
        for route, probability in top:
            response.head.top_routes.add(route=route, probability=probability)
    if choice.cascade is not None:
        response.cascade.min_quality = choice.cascade.min_quality
        response.cascade.acceptance = choice.cascade.acceptance
        for step in choice.cascade.steps:
            response.cascade.steps.add(model=step.model, estimated_cost_usd=step.estimated_cost_usd)
    return response


def redact(response: pb.DecideResponse, level: str) -> pb.DecideResponse:
    """What a caller sees, by its evidence level: full (everything), summary (model, strategy,
    confidence, reason code) or none (the model). Every level keeps what running the decision
    needs: the decision id and fallbacks (to report outcomes and fail over), the strategy,
    cascade plan and quality target (without them a cold start would run its first model only
    and accept any answer)."""
    if level == "full":
        return response
    redacted = pb.DecideResponse(
        decision_id=response.decision_id,
        namespace=response.namespace,
        model=response.model,
        fallbacks=list(response.fallbacks),
        strategy=response.strategy,
        quality_target=response.quality_target,
    )
    if response.HasField("cascade"):
        redacted.cascade.CopyFrom(response.cascade)
    if level == "summary":
        redacted.confidence = response.confidence
        redacted.reason_code = response.reason_code
        redacted.index_generation = response.index_generation
        redacted.tenant = response.tenant
    return redacted


def outcome_report(request: pb.RecordOutcomeRequest) -> OutcomeReport:
    failure = FAILURES.get(request.failure) if request.failure else None
    if request.failure and failure is None:
        raise InvalidArgument(f"failure {request.failure} is not a known FailureKind")
    if failure is not None:
        quality = 0.0
    elif request.HasField("quality"):
        quality = request.quality
    elif request.HasField("success"):
        quality = 1.0 if request.success else 0.0
    else:
        raise InvalidArgument("give quality (in [0, 1]) or success (true/false)")
    if not request.model:
        raise InvalidArgument("model is empty: name the model that answered")
    return OutcomeReport(
        outcome_id=request.outcome_id,
        model=request.model,
        quality=quality,
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        cost_usd=request.cost_usd if request.HasField("cost_usd") else None,
        latency_ms=request.latency_ms if request.HasField("latency_ms") else None,
        decision_id=request.decision_id or None,
        namespace=request.namespace or None,
        messages=messages_from_proto(request.messages),
        tenant=request.tenant,
        failure=failure,
        retry_after_seconds=(
            request.retry_after_seconds if request.HasField("retry_after_seconds") else None
        ),
        contains_pii=request.contains_pii,
    )


def record_response(recorded: RecordedOutcome) -> pb.RecordOutcomeResponse:
    return pb.RecordOutcomeResponse(
        outcome_id=recorded.outcome_id,
        example_id=recorded.example_id,
        duplicate=recorded.duplicate,
        namespace=recorded.namespace,
        quality=recorded.quality,
        cost_usd=recorded.cost_usd,
        cooldown_seconds=recorded.cooldown_seconds,
        text_expired=recorded.text_expired,
    )


# -- admin --------------------------------------------------------------------------------


def catalog_from_proto(models: Iterable[admin_pb.CatalogModel]) -> Catalog:
    return Catalog(
        ModelSpec(
            name=m.name,
            provider=m.provider,
            input_usd_per_mtok=m.input_usd_per_mtok,
            output_usd_per_mtok=m.output_usd_per_mtok,
            latency_ms=m.latency_ms,
            context_window=m.context_window,
            tags=dict(m.tags),
        )
        for m in models
    )


def namespace_to_proto(view: NamespaceView) -> admin_pb.Namespace:
    return admin_pb.Namespace(
        name=view.name,
        description=view.description,
        catalog_version=view.catalog_version,
        catalog=[
            admin_pb.CatalogModel(
                name=m.name,
                provider=m.provider,
                input_usd_per_mtok=m.input_usd_per_mtok,
                output_usd_per_mtok=m.output_usd_per_mtok,
                latency_ms=m.latency_ms,
                context_window=m.context_window,
                tags=dict(m.tags),
            )
            for m in view.catalog.models
        ],
    )


def example_inputs(request: admin_pb.UpsertExamplesRequest) -> list[ExampleInput]:
    return [ExampleInput(e.text, e.route or None, e.best_model) for e in request.examples]


def upsert_response(result: UpsertResult) -> admin_pb.UpsertExamplesResponse:
    return admin_pb.UpsertExamplesResponse(
        added=result.added,
        updated=result.updated,
        unchanged=result.unchanged,
        example_ids=result.example_ids,
    )


SOURCE_FROM_PROTO = {pb.SOURCE_REFERENCE: Source.REFERENCE, pb.SOURCE_HISTORY: Source.HISTORY}


def example_filter(request: admin_pb.ListExamplesRequest) -> ExampleFilter:
    return ExampleFilter(
        source=SOURCE_FROM_PROTO.get(request.source),
        model=request.model or None,
        text_prefix=request.text_prefix or None,
        route=request.route or None,
    )


def example_to_proto(row: ExampleRow, outcomes: list[tuple[str, float, int]]) -> admin_pb.Example:
    return admin_pb.Example(
        id=row.id,
        text=row.text,
        route=row.route or "",
        source=SOURCES[Source(row.source)],
        best_model=row.best_model or "",
        outcomes=[pb.ObservedOutcome(model=m, mean_quality=q, count=c) for m, q, c in outcomes],
        created_at=as_utc(row.created_at).isoformat() if row.created_at else "",
        contains_pii=row.contains_pii,
    )


def stats_to_proto(stats: NamespaceStats) -> admin_pb.NamespaceStats:
    return admin_pb.NamespaceStats(
        namespace=stats.namespace,
        examples=stats.examples,
        examples_by_source=stats.by_source,
        examples_by_model=stats.by_model,
        outcomes_by_model=stats.outcomes_by_model,
        index_size=stats.index_size,
        index_generation=stats.index_generation,
        index_kind=stats.index_kind,
        last_reindex=stats.last_reindex,
    )


JOB_STATES = {
    "running": admin_pb.JOB_STATE_RUNNING,
    "succeeded": admin_pb.JOB_STATE_SUCCEEDED,
    "failed": admin_pb.JOB_STATE_FAILED,
}


def job_to_proto(job: JobStatus) -> admin_pb.ReindexJob:
    return admin_pb.ReindexJob(
        job_id=job.job_id,
        state=JOB_STATES.get(job.state, admin_pb.JOB_STATE_UNSPECIFIED),
        namespace=job.namespace,
        total=job.total,
        done=job.done,
        generation=job.generation,
        error=job.error,
        index_kind=job.published[0].kind if len(job.published) == 1 else "",
        index_examples=job.published[0].examples if len(job.published) == 1 else 0,
    )


def _window(stats: WindowStats) -> admin_pb.DriftWindow:
    return admin_pb.DriftWindow(
        decisions=stats.decisions,
        cold_start_rate=stats.cold_start_rate,
        top_similarity_median=stats.top_similarity_median,
        success_by_model=stats.success_by_model,
    )


def drift_to_proto(report: DriftReport) -> admin_pb.NamespaceDrift:
    return admin_pb.NamespaceDrift(
        namespace=report.namespace,
        reference=_window(report.reference),
        current=_window(report.current),
        psi=report.psi,
        ks=report.ks,
        drifted=report.drifted,
        moved=report.moved,
        reference_since=report.reference_since,
    )
