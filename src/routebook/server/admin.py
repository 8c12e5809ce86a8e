"""The Admin service: convert, call the use-case, convert back. Auth is the interceptor's."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import grpc
from sqlalchemy.exc import TimeoutError as PoolTimeout

from routebook.errors import RoutebookError, Unavailable
from routebook.server import convert
from routebook.service.check import check_indexes
from routebook.service.examples import UpsertResult
from routebook.store.db import STORE_UNAVAILABLE
from routebook.v1 import admin_pb2 as admin_pb
from routebook.v1 import admin_pb2_grpc
from routebook.wiring import App

log = logging.getLogger("routebook.server")

#: Ids a CheckIndex answer lists per kind of difference (8 bytes or so each): the counts say
#: how many there are in all.
LISTED_IDS = 1000


def _budget(max_message_bytes: int) -> int:
    """What a response's content may take: the message limit, less room for its framing."""
    return max_message_bytes - min(16_384, max_message_bytes // 8)


def _resume_from(batch: int, committed: UpsertResult, what: str) -> str:
    return (
        f"batch {batch} of the stream (counted from 0) {what}; the {batch} batches before it "
        f"are committed ({committed.added} added, {committed.updated} updated), so resume "
        f"from batch {batch}"
    )


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, app: App) -> None:
        self._app = app

    def CreateNamespace(
        self, request: admin_pb.CreateNamespaceRequest, context: grpc.ServicerContext
    ) -> admin_pb.Namespace:
        view = self._app.namespaces.create(
            request.name, request.description, convert.catalog_from_proto(request.catalog)
        )
        return convert.namespace_to_proto(view)

    def GetNamespace(
        self, request: admin_pb.GetNamespaceRequest, context: grpc.ServicerContext
    ) -> admin_pb.Namespace:
        return convert.namespace_to_proto(self._app.namespaces.get(request.name))

    def UpdateCatalog(
        self, request: admin_pb.UpdateCatalogRequest, context: grpc.ServicerContext
    ) -> admin_pb.Namespace:
        view = self._app.namespaces.update_catalog(
            request.namespace, request.expected_version, convert.catalog_from_proto(request.catalog)
        )
        return convert.namespace_to_proto(view)

    def UpsertExamples(
        self, request: admin_pb.UpsertExamplesRequest, context: grpc.ServicerContext
    ) -> admin_pb.UpsertExamplesResponse:
        result = self._app.examples.upsert(request.namespace, convert.example_inputs(request))
        return convert.upsert_response(result)

    def UpsertExamplesStream(
        self, requests: Iterator[admin_pb.UpsertExamplesRequest], context: grpc.ServicerContext
    ) -> admin_pb.UpsertExamplesResponse:
        total = UpsertResult()
        batches = iter(requests)
        for batch in itertools.count():
            try:
                # Reading the next batch is where the interceptor parses it and runs the
                # request checks (NUL, length, range): a batch they refuse is refused here too.
                request = next(batches, None)
                if request is None:
                    break
                result = self._app.examples.upsert(
                    request.namespace, convert.example_inputs(request)
                )
            except RoutebookError as exc:
                # Earlier batches are committed: say where to resume.
                raise type(exc)(_resume_from(batch, total, f"was refused: {exc}")) from None
            except STORE_UNAVAILABLE as exc:
                # Not the interceptor's "nothing was changed": the earlier batches stand. Still
                # UNAVAILABLE, since the same batches succeed once the store is back.
                busy = isinstance(exc, PoolTimeout)
                log.warning(
                    "store unavailable in UpsertExamplesStream at batch %d: %s",
                    batch,
                    (str(getattr(exc, "orig", None) or exc).strip() or repr(exc)).splitlines()[0],
                )
                raise Unavailable(
                    _resume_from(
                        batch,
                        total,
                        "failed: the store is "
                        + ("busy (no free connection)" if busy else "unavailable"),
                    )
                    + " when the store answers again"
                ) from None
            total.merge(result)
        response = convert.upsert_response(total)
        if response.ByteSize() > _budget(self._app.settings.max_message_bytes):
            # A large load's ids would not fit in one answer, which would then fail after
            # every batch was committed; the counts still say what happened.
            del response.example_ids[:]
            response.example_ids_omitted = True
        return response

    def DeleteExamples(
        self, request: admin_pb.DeleteExamplesRequest, context: grpc.ServicerContext
    ) -> admin_pb.DeleteExamplesResponse:
        deleted, missing = self._app.examples.delete(request.namespace, list(request.example_ids))
        return admin_pb.DeleteExamplesResponse(deleted=len(deleted), missing_ids=missing)

    def ListExamples(
        self, request: admin_pb.ListExamplesRequest, context: grpc.ServicerContext
    ) -> admin_pb.ListExamplesResponse:
        rows, means, token = self._app.examples.list(
            request.namespace,
            convert.example_filter(request),
            request.page_size,
            request.page_token,
        )
        response = admin_pb.ListExamplesResponse(next_page_token=token)
        budget = _budget(self._app.settings.max_message_bytes)
        size = 0
        for position, row in enumerate(rows):
            example = convert.example_to_proto(row, means.get(row.id, []))
            size += example.ByteSize() + 8  # its field tag and length
            if position > 0 and size > budget:
                # Long texts: the page ends early, and the next one starts after the last sent.
                response.next_page_token = str(rows[position - 1].id)
                break
            response.examples.append(example)
        return response

    def GetStats(
        self, request: admin_pb.GetStatsRequest, context: grpc.ServicerContext
    ) -> admin_pb.GetStatsResponse:
        registry = self._app.registry
        sizes = {}
        for name in registry.namespaces():
            index = registry.get(name)
            sizes[name] = (len(index), index.generation, str(index.kind))
        stats = self._app.namespaces.stats(request.namespace or None, sizes)
        return admin_pb.GetStatsResponse(
            namespaces=[convert.stats_to_proto(s) for s in stats],
            embedding_model=self._app.embedder.model_id,
        )

    def Reindex(
        self, request: admin_pb.ReindexRequest, context: grpc.ServicerContext
    ) -> admin_pb.ReindexJob:
        job_id = self._app.reindexer.run_in_background(
            request.namespace or None, request.index_kind or None
        )
        return convert.job_to_proto(self._app.reindexer.status(job_id))

    def CheckIndex(
        self, request: admin_pb.CheckIndexRequest, context: grpc.ServicerContext
    ) -> admin_pb.CheckIndexResponse:
        app = self._app
        checks = check_indexes(app.store, app.directory, app.registry, request.namespace or None)
        return admin_pb.CheckIndexResponse(
            namespaces=[
                admin_pb.IndexCheck(
                    namespace=c.namespace,
                    store_examples=c.store_examples,
                    index_examples=c.index_examples,
                    # An index far behind differs by up to every id: list the first ones and
                    # count them all, so the answer fits in one message.
                    missing=c.missing[:LISTED_IDS],
                    extra=c.extra[:LISTED_IDS],
                    stale_outcomes=c.stale_outcomes[:LISTED_IDS],
                    stale_labels=c.stale_labels[:LISTED_IDS],
                    missing_count=len(c.missing),
                    extra_count=len(c.extra),
                    stale_outcomes_count=len(c.stale_outcomes),
                    stale_labels_count=len(c.stale_labels),
                )
                for c in checks
            ],
            consistent=all(c.consistent for c in checks),
        )

    def GetDrift(
        self, request: admin_pb.GetDriftRequest, context: grpc.ServicerContext
    ) -> admin_pb.GetDriftResponse:
        names = [request.namespace] if request.namespace else self._app.registry.namespaces()
        if request.namespace:
            self._app.directory.resolve(request.namespace)  # NOT_FOUND for an unknown one
        response = admin_pb.GetDriftResponse(
            namespaces=[convert.drift_to_proto(self._app.drift.report(n)) for n in names]
        )
        if request.rebaseline:
            self._app.drift_keeper.rebaseline(names)
        return response

    def GetReindexJob(
        self, request: admin_pb.GetReindexJobRequest, context: grpc.ServicerContext
    ) -> admin_pb.ReindexJob:
        return convert.job_to_proto(self._app.reindexer.status(request.job_id))
