"""Use-cases: the only layer that combines store, index, embedder and decision logic."""

from routebook.service.examples import ExampleService, SyncReport
from routebook.service.namespaces import NamespaceDirectory
from routebook.service.outcomes import OutcomeRecorder
from routebook.service.routing import RoutingService

__all__ = [
    "ExampleService",
    "NamespaceDirectory",
    "OutcomeRecorder",
    "RoutingService",
    "SyncReport",
]
