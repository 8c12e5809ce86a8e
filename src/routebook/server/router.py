"""The Router service: convert, call the use-case, convert back. Errors are mapped elsewhere."""

from __future__ import annotations

from dataclasses import replace

import grpc

from routebook.server import convert
from routebook.server.auth import CALLER_NAMESPACES, EVIDENCE_LEVEL
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
        decision = self._routing.decide(convert.decide_query(request))
        response = convert.decide_response(decision, self._snippet_chars, request.tenant)
        return convert.redact(response, EVIDENCE_LEVEL.get())

    def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        report = replace(
            convert.outcome_report(request), allowed_namespaces=CALLER_NAMESPACES.get()
        )
        recorded = self._outcomes.record_outcome(report)
        return convert.record_response(recorded)
