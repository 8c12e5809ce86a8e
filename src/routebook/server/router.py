"""The Router service: convert, call the use-case, convert back. Errors are mapped elsewhere."""

from __future__ import annotations

from dataclasses import replace

import grpc

from routebook.errors import PermissionDenied
from routebook.server import convert
from routebook.server.auth import CALLER_NAMESPACES, CALLER_TENANT, EVIDENCE_LEVEL
from routebook.service import OutcomeRecorder, RoutingService
from routebook.v1 import router_pb2 as pb
from routebook.v1 import router_pb2_grpc


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(
        self, routing: RoutingService, outcomes: OutcomeRecorder, snippet_chars: int
    ) -> None:
        self._routing = routing
        self._outcomes = outcomes
        self._snippet_chars = snippet_chars

    def Decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.DecideResponse:
        tenant = _tenant(request.tenant)
        decision = self._routing.decide(replace(convert.decide_query(request), tenant=tenant))
        response = convert.decide_response(decision, self._snippet_chars, tenant)
        return convert.redact(response, EVIDENCE_LEVEL.get())

    def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        report = replace(
            convert.outcome_report(request),
            allowed_namespaces=CALLER_NAMESPACES.get(),
            tenant=_tenant(request.tenant),
            bound_tenant=CALLER_TENANT.get(),
        )
        recorded = self._outcomes.record_outcome(report)
        return convert.record_response(recorded)


def _tenant(requested: str) -> str:
    """The call's tenant: the one its API key is bound to, else the request's own."""
    bound = CALLER_TENANT.get()
    if bound is None:
        return requested
    if requested and requested != bound:
        raise PermissionDenied(
            f"this API key is bound to tenant {bound[:64]!r}: it cannot act for "
            f"tenant {requested[:64]!r} (leave tenant empty, or send the bound one)"
        )
    return bound
