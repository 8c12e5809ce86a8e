"""The supported Python surface of routebook: a typed client for the Router service, and a
cascade runner that walks a decision's plan and reports every attempt.

It imports only grpc and the generated stubs, never torch, FAISS or SQLAlchemy.

    with RouterClient("localhost:50051") as router:
        decision = router.decide("Where is my parcel?")
        result = router.run_cascade(decision, call_model=my_llm_call, accept=my_grader)
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc

from routebook.v1 import router_pb2 as pb
from routebook.v1 import router_pb2_grpc

__all__ = [
    "AllModelsFailed",
    "Attempt",
    "CascadeResult",
    "ModelCall",
    "ModelFailure",
    "RouterClient",
    "decide_request",
    "pb",
]

FAILURE_KINDS = {
    "rate_limited": pb.FAILURE_KIND_RATE_LIMITED,
    "server_error": pb.FAILURE_KIND_SERVER_ERROR,
    "timeout": pb.FAILURE_KIND_TIMEOUT,
    "content_filter": pb.FAILURE_KIND_CONTENT_FILTER,
}

T = TypeVar("T")


def _failure_kind(kind: str) -> pb.FailureKind:
    """The proto value of a failure kind; a clear ValueError for a misspelt one."""
    if kind not in FAILURE_KINDS:
        raise ValueError(f"failure kind {kind!r}: use one of {', '.join(FAILURE_KINDS)}")
    return FAILURE_KINDS[kind]


@dataclass(frozen=True, slots=True)
class ModelCall(Generic[T]):
    """What `call_model` may return to report usage alongside the answer."""

    answer: T
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


class ModelFailure(Exception):
    """Raise from `call_model` to say how a call failed: "rate_limited" (with the provider's
    retry-after), "server_error", "timeout" or "content_filter". Any other exception counts as
    a server error (TimeoutError as a timeout)."""

    def __init__(
        self, kind: str = "server_error", retry_after: float | None = None, message: str = ""
    ) -> None:
        _failure_kind(kind)
        super().__init__(message or kind)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Attempt:
    model: str
    quality: float
    accepted: bool
    outcome_id: str
    latency_ms: float
    #: Set when the call failed instead of answering.
    failure: str | None = None
    #: Why the call failed; or, for a call that answered, why `accept` could not grade the
    #: answer (it raised, or returned something that is not a quality in [0, 1]).
    error: str = ""
    #: Set when the outcome is not recorded: reporting it to the router failed, or the answer
    #: could not be graded. The answer is kept regardless (it was paid for); report the outcome
    #: later with the same outcome id.
    report_error: str = ""


class AllModelsFailed(Exception):
    """Every model of a decision failed; `attempts` says how."""

    def __init__(self, attempts: list[Attempt]) -> None:
        listed = "; ".join(f"{a.model}: {a.failure} ({a.error})" for a in attempts)
        super().__init__(f"all {len(attempts)} models failed: {listed}")
        self.attempts = attempts


@dataclass(slots=True)
class CascadeResult(Generic[T]):
    """The accepted answer (or the last one, when none passed) and every attempt made."""

    answer: T | None
    model: str | None
    accepted: bool
    attempts: list[Attempt] = field(default_factory=list)


def decide_request(
    query: str | Sequence[tuple[str, str]],
    *,
    namespace: str = "",
    metadata: Mapping[str, str] | None = None,
    quality_target: float | None = None,
    expected_output_tokens: int | None = None,
    tenant: str = "",
    model_override: str = "",
    max_latency_ms: float | None = None,
    required_tags: Sequence[str] = (),
    contains_pii: bool = False,
    session_id: str = "",
) -> pb.DecideRequest:
    """A DecideRequest from a plain string (one user message) or (role, content) pairs."""
    turns = [("user", query)] if isinstance(query, str) else list(query)
    request = pb.DecideRequest(
        namespace=namespace,
        messages=[pb.Message(role=role, content=content) for role, content in turns],
        metadata=dict(metadata or {}),
        tenant=tenant,
        model_override=model_override,
        required_tags=list(required_tags),
        contains_pii=contains_pii,
        session_id=session_id,
    )
    if quality_target is not None:
        request.quality_target = quality_target
    if expected_output_tokens is not None:
        request.expected_output_tokens = expected_output_tokens
    if max_latency_ms is not None:
        request.max_latency_ms = max_latency_ms
    return request


def retry_service_config(attempts: int) -> str:
    """gRPC's service config that retries the Router's calls on UNAVAILABLE.

    UNAVAILABLE means the call did nothing (the server says "nothing was changed, retry
    later" when its store is down or busy) or never reached a server (a restart, a deploy).
    Retrying is safe for every Router call: RecordOutcome is idempotent per `outcome_id`, which
    the client fixes before the first attempt, and a Decide repeated after a lost answer only
    adds a decision row nothing is charged for. The Admin service is left out: not all of its
    writes are idempotent. Clients in other languages can use the same JSON."""
    policy = {
        "maxAttempts": attempts,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps(
        {"methodConfig": [{"name": [{"service": "routebook.v1.Router"}], "retryPolicy": policy}]}
    )


def open_channel(
    target: str,
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
    attempts: int = 1,
) -> grpc.Channel:
    """A channel to a routebook server: TLS when `tls` or `root_certificates` (PEM bytes of a
    private CA) is given, trusting the system's CAs otherwise; plaintext without either.
    `attempts` > 1 retries the Router's calls on UNAVAILABLE (`retry_service_config`)."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    options: list[tuple[str, Any]] = []
    if attempts > 1:
        # gRPC caps maxAttempts at 5 and ignores larger values silently.
        if attempts > 5:
            raise ValueError(f"attempts can be at most 5 (gRPC's limit), got {attempts}")
        options = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", retry_service_config(attempts)),
        ]
    if tls or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates)
        return grpc.secure_channel(target, credentials, options=options)
    return grpc.insecure_channel(target, options=options)


class RouterClient:
    """A thin typed wrapper over the Router stub. Errors surface as grpc.RpcError.

    `api_key` is sent with every call (a server with `router_api_keys` needs one); `tls` (or
    `root_certificates`, PEM bytes of the CA that signed the server's certificate, for a
    private CA) opens a TLS channel. `attempts` is how many times a call is tried when the
    answer is UNAVAILABLE (a restarting server, a store outage), with back-off from 0.1 s to
    2 s; 1 never retries. A ready `channel` overrides `tls`, `root_certificates` and
    `attempts` (open it with `open_channel` to keep them)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        channel: grpc.Channel | None = None,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        attempts: int = 3,
    ) -> None:
        self._owns_channel = channel is None
        if channel is None:
            channel = open_channel(
                target, tls=tls, root_certificates=root_certificates, attempts=attempts
            )
        self._channel = channel
        self._stub = router_pb2_grpc.RouterStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def decide(
        self,
        query: str | Sequence[tuple[str, str]] | pb.DecideRequest,
        **fields: Any,
    ) -> pb.DecideResponse:
        """Route a query: a plain string (one user message), (role, content) pairs, or a
        ready DecideRequest. Keyword fields are those of `decide_request`; with a ready
        request they are refused (TypeError) rather than silently dropped."""
        if isinstance(query, pb.DecideRequest):
            if fields:
                raise TypeError(
                    f"decide() got a ready DecideRequest and keyword fields "
                    f"({', '.join(sorted(fields))}): set them on the request instead"
                )
            request = query
        else:
            request = decide_request(query, **fields)
        response: pb.DecideResponse = self._stub.Decide(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def record_outcome(
        self,
        *,
        model: str,
        quality: float | None = None,
        success: bool | None = None,
        decision_id: str = "",
        query: str | None = None,
        namespace: str = "",
        outcome_id: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        tenant: str = "",
        failure: str | None = None,
        retry_after: float | None = None,
        contains_pii: bool = False,
    ) -> pb.RecordOutcomeResponse:
        """Report how `model` did, by `decision_id` or by `query` text; or, with `failure`
        ("rate_limited", "server_error", "timeout", "content_filter"), that the call failed.
        `contains_pii` marks a query holding personal data, whose text is then never shown as
        a neighbour (a decision made with `contains_pii` is marked already).

        `outcome_id` is the idempotency key: the router records each id once. The client's
        own retries on UNAVAILABLE (`attempts`) resend the same id, so they are safe. Without
        an id, each *call* makes a fresh random one, so calling again after an error records
        the outcome twice (and charges it twice) whenever the first call did reach the router,
        which a DEADLINE_EXCEEDED does not rule out. To retry yourself, pass your own id and
        send the same one every time (`run_cascade` and `call_with_fallbacks` derive theirs
        from the decision, so re-running them is safe).
        """
        kind = _failure_kind(failure) if failure is not None else None
        request = pb.RecordOutcomeRequest(
            outcome_id=outcome_id or uuid.uuid4().hex,
            decision_id=decision_id,
            namespace=namespace,
            messages=[pb.Message(role="user", content=query)] if query is not None else [],
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tenant=tenant,
            contains_pii=contains_pii,
        )
        if quality is not None:
            request.quality = quality
        if success is not None:
            request.success = success
        if cost_usd is not None:
            request.cost_usd = cost_usd
        if latency_ms is not None:
            request.latency_ms = latency_ms
        if kind is not None:
            request.failure = kind
        if retry_after is not None:
            request.retry_after_seconds = retry_after
        response: pb.RecordOutcomeResponse = self._stub.RecordOutcome(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def run_cascade(
        self,
        decision: pb.DecideResponse,
        call_model: Callable[[str], T | ModelCall[T]],
        accept: Callable[[T], float | bool],
    ) -> CascadeResult[T]:
        """Walk the decision: its cascade plan on cold start, else its one model, failing over
        to its fallbacks when a call fails.

        `call_model(model)` returns the answer (or a ModelCall with usage); `accept(answer)`
        grades it, as a quality in [0, 1] or a bool. On a cascade, the first answer whose
        quality reaches the plan's `min_quality` is accepted and a poorer one moves to the next
        step. Otherwise the decided model's answer is final, good or poor (the router chose it
        as enough); its `fallbacks` stand in only for a call that fails (ModelFailure, or any
        exception from `call_model`), as in `call_with_fallbacks`.

        Every attempt is reported with an outcome id derived from the decision, so re-running
        the same walk never records twice. A grader that raises, or returns something that is
        not a quality in [0, 1], stops the walk (a broken grader must not buy an answer from
        every model): that answer is kept, not accepted and not reported, and its attempt's
        `error` says why.
        """
        cascade = decision.strategy == pb.STRATEGY_CASCADE and bool(decision.cascade.steps)
        if cascade:
            models = [step.model for step in decision.cascade.steps]
            min_quality = decision.cascade.min_quality
        else:
            models = [decision.model, *decision.fallbacks]
            min_quality = decision.quality_target
        result: CascadeResult[T] = CascadeResult(answer=None, model=None, accepted=False)
        for position, model in enumerate(models):
            outcome_id = _outcome_id(decision.decision_id, str(position), model)
            attempt, call = self._attempt(
                decision, model, outcome_id, call_model, accept, min_quality
            )
            result.attempts.append(attempt)
            if call is None:
                continue  # a failure is not a quality miss: it was reported; go on
            result.answer, result.model, result.accepted = call.answer, model, attempt.accepted
            if attempt.accepted or attempt.error or not cascade:
                break
        return result

    def call_with_fallbacks(
        self,
        decision: pb.DecideResponse,
        call_model: Callable[[str], T | ModelCall[T]],
    ) -> tuple[T, list[Attempt]]:
        """Call the decision's model, then its fallbacks in order, until one answers.

        Every failure is reported as a failure outcome (so the model may go on cooldown) and
        the answer as a success; returns (answer, attempts). Raises AllModelsFailed, listing
        every attempt, when none answers.
        """
        attempts: list[Attempt] = []
        for position, model in enumerate([decision.model, *decision.fallbacks]):
            outcome_id = _outcome_id(decision.decision_id, f"fallback:{position}", model)
            attempt, call = self._attempt(decision, model, outcome_id, call_model, _answered, 1.0)
            attempts.append(attempt)
            if call is not None:
                return call.answer, attempts
        raise AllModelsFailed(attempts)

    def _attempt(
        self,
        decision: pb.DecideResponse,
        model: str,
        outcome_id: str,
        call_model: Callable[[str], T | ModelCall[T]],
        accept: Callable[[T], float | bool],
        min_quality: float,
    ) -> tuple[Attempt, ModelCall[T] | None]:
        """Call one model, grade the answer and report the outcome (or the failure)."""
        started = time.perf_counter()
        try:
            returned = call_model(model)
        except Exception as exc:
            return self._report_failure(decision, model, outcome_id, started, exc), None
        latency_ms = (time.perf_counter() - started) * 1000
        call = returned if isinstance(returned, ModelCall) else ModelCall(returned)
        quality, ungraded = _grade(accept, call.answer)
        if ungraded:
            # No quality, no outcome: a guess (0? 1?) would be false evidence for the index.
            unreported = "not reported: the answer could not be graded"
            attempt = Attempt(model, 0.0, False, outcome_id, latency_ms, None, ungraded, unreported)
            return attempt, call
        unreported = self._report(
            model=model,
            quality=quality,
            decision_id=decision.decision_id,
            outcome_id=outcome_id,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cost_usd=call.cost_usd,
            latency_ms=latency_ms,
        )
        attempt = Attempt(
            model,
            quality,
            quality >= min_quality,
            outcome_id,
            latency_ms,
            report_error=unreported,
        )
        return attempt, call

    def _report(self, **outcome: Any) -> str:
        """Record an outcome of a call already made; '' when it was recorded, else why not.

        A router that cannot take the report (a store outage, a deadline) must not cost the
        caller an answer it has paid for, nor stop a fallback walk half-way."""
        try:
            self.record_outcome(**outcome)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        except (TypeError, ValueError) as exc:  # usage protobuf cannot hold (2.5 tokens, -1)
            return f"the report could not be built: {exc}"
        return ""

    def _report_failure(
        self,
        decision: pb.DecideResponse,
        model: str,
        outcome_id: str,
        started: float,
        exc: Exception,
    ) -> Attempt:
        if isinstance(exc, ModelFailure):
            kind, retry_after = exc.kind, exc.retry_after
        elif isinstance(exc, TimeoutError):
            kind, retry_after = "timeout", None
        else:
            kind, retry_after = "server_error", None
        latency_ms = (time.perf_counter() - started) * 1000
        unreported = self._report(
            model=model,
            decision_id=decision.decision_id,
            outcome_id=outcome_id,
            failure=kind,
            retry_after=retry_after,
            latency_ms=latency_ms,
        )
        return Attempt(model, 0.0, False, outcome_id, latency_ms, kind, str(exc)[:200], unreported)


#: Longest model name kept as it is in a derived outcome id (outcome ids hold 128 characters).
_MODEL_IN_ID = 64


def _outcome_id(decision_id: str, step: str, model: str) -> str:
    """`{decision}:{step}:{model}`, stable across retries; a long model name goes in as a hash
    so the id stays within the 128 characters RecordOutcome accepts."""
    if len(model) > _MODEL_IN_ID:
        model = "sha1-" + hashlib.sha1(model.encode("utf-8")).hexdigest()[:20]
    return f"{decision_id}:{step}:{model}"


def _grade(accept: Callable[[T], float | bool], answer: T) -> tuple[float, str]:
    """(quality, "") from the caller's grader, or (0.0, why) when it could not grade."""
    try:
        grade = accept(answer)
    except Exception as exc:
        return 0.0, f"grader: {type(exc).__name__}: {exc}"[:200]
    if isinstance(grade, bool):
        return (1.0 if grade else 0.0), ""
    if isinstance(grade, numbers.Real) and math.isfinite(grade) and 0.0 <= grade <= 1.0:
        return float(grade), ""
    return 0.0, f"grader: returned {grade!r:.60}, not a quality in [0, 1] or a bool"


def _answered(_answer: object) -> bool:
    """The grade of `call_with_fallbacks`: an answer, any answer, is a success."""
    return True
