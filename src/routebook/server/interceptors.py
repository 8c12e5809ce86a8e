"""The one boundary where calls are authenticated and errors become gRPC statuses.

A RoutebookError keeps its message and gets its class's status code. Anything else is a bug:
the caller gets INTERNAL with a correlation id, and the traceback goes to the log, never to the
caller. Calls whose deadline has already passed are dropped before any work is done.

Request bodies are parsed here, not by grpcio, so a malformed body is INVALID_ARGUMENT (grpcio's
own parse failure is INTERNAL). Streams the service does not own (reflection) share a few
worker threads: each open stream holds one thread while it waits, and without a bound idle
streams from an unauthenticated caller could hold them all.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from routebook import errors
from routebook.server.auth import Authenticator
from routebook.server.validate import check_request
from routebook.service.backoff import message_line

log = logging.getLogger("routebook.server")

STATUS_BY_ERROR: tuple[tuple[type[errors.RoutebookError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(error: errors.RoutebookError) -> grpc.StatusCode:
    for error_class, code in STATUS_BY_ERROR:
        if isinstance(error, error_class):
            return code
    return grpc.StatusCode.INTERNAL


Deserializer = Callable[[bytes], Any]


class ServiceInterceptor(grpc.ServerInterceptor):
    """Wraps every unary-unary and stream-unary handler: parsing, authentication, deadlines,
    errors; and bounds the bidirectional streams (reflection) to `stream_slots` at once."""

    def __init__(self, authenticator: Authenticator, stream_slots: int = 8) -> None:
        self._auth = authenticator
        self._stream_slots = threading.BoundedSemaphore(max(1, stream_slots))
        self._stream_limit = max(1, stream_slots)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        parse = handler.request_deserializer or _raw
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._guard(method, handler.unary_unary, parse, streaming=False),
                request_deserializer=None,  # raw bytes: parsed in the guard
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._guard(method, handler.stream_unary, parse, streaming=True),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._bounded(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _bounded(
        self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def bounded(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not self._stream_slots.acquire(blocking=False):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self._stream_limit} streams of this kind are open, the most this server "
                    "allows at once; retry when one has closed",
                )
            try:
                yield from behaviour(requests, context)
            finally:
                self._stream_slots.release()

        return bounded

    def _guard(
        self,
        method: str,
        behaviour: Callable[[Any, grpc.ServicerContext], Any],
        parse: Deserializer,
        streaming: bool,
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def guarded(raw: Any, context: grpc.ServicerContext) -> Any:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before work")
            try:
                if streaming:
                    self._auth.check(method, context.invocation_metadata(), None)
                    return behaviour(_checked_stream(raw, parse), context)
                request = _parse(raw, parse)
                # An outcome by decision_id is checked against the decision's namespace by
                # the outcome service (the request's namespace field is ignored then).
                by_decision = method.endswith("/RecordOutcome") and bool(request.decision_id)
                self._auth.check(
                    method,
                    context.invocation_metadata(),
                    getattr(request, "namespace", None),
                    namespace_checked_later=by_decision,
                )
                check_request(request)
                return behaviour(request, context)
            except errors.RoutebookError as exc:
                context.abort(status_for(exc), str(exc))
            except PoolTimeout:
                log.warning("store busy in %s: no free connection in the pool", method)
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the store is busy (no free connection); nothing was changed, retry later",
                )
            except OperationalError as exc:
                log.warning("store unavailable in %s: %s", method, message_line(exc.orig))
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the store is unavailable; nothing was changed, retry later",
                )
            except DBAPIError as exc:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the store refused a value of the request: {message_line(exc.orig, 200)}",
                )
            except Exception:
                if not context.is_active():  # the caller cancelled (or its deadline passed)
                    log.info("%s ended early: the caller cancelled or gave up", method)
                    context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
                correlation = uuid.uuid4().hex[:12]
                log.exception("unhandled error in %s (correlation id %s)", method, correlation)
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error; report correlation id {correlation} to the operator",
                )

        return guarded


def _raw(body: bytes) -> bytes:
    return body


def _parse(body: bytes, parse: Deserializer) -> Any:
    try:
        return parse(body)
    except (DecodeError, ValueError) as exc:
        raise errors.InvalidArgument(
            f"the request body is not a valid message of this method ({len(body)} bytes): "
            f"{message_line(exc, 200)}"
        ) from None


def _checked_stream(bodies: Iterator[bytes], parse: Deserializer) -> Iterator[Any]:
    """The stream's requests, each parsed and checked as the servicer reads it: a refusal is
    raised inside the servicer's loop, which knows what the earlier requests committed."""
    for body in bodies:
        request = _parse(body, parse)
        check_request(request)
        yield request
