from routebook.v1 import router_pb2 as _router_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState

class CatalogModel(_message.Message):
    __slots__ = ("name", "provider", "input_usd_per_mtok", "output_usd_per_mtok", "latency_ms", "context_window", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    INPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_USD_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    latency_ms: float
    context_window: int
    tags: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., provider: _Optional[str] = ..., input_usd_per_mtok: _Optional[float] = ..., output_usd_per_mtok: _Optional[float] = ..., latency_ms: _Optional[float] = ..., context_window: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Namespace(_message.Message):
    __slots__ = ("name", "description", "catalog", "catalog_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    catalog: _containers.RepeatedCompositeFieldContainer[CatalogModel]
    catalog_version: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., catalog: _Optional[_Iterable[_Union[CatalogModel, _Mapping]]] = ..., catalog_version: _Optional[int] = ...) -> None: ...

class CreateNamespaceRequest(_message.Message):
    __slots__ = ("name", "description", "catalog")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    catalog: _containers.RepeatedCompositeFieldContainer[CatalogModel]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., catalog: _Optional[_Iterable[_Union[CatalogModel, _Mapping]]] = ...) -> None: ...

class GetNamespaceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateCatalogRequest(_message.Message):
    __slots__ = ("namespace", "expected_version", "catalog")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    expected_version: int
    catalog: _containers.RepeatedCompositeFieldContainer[CatalogModel]
    def __init__(self, namespace: _Optional[str] = ..., expected_version: _Optional[int] = ..., catalog: _Optional[_Iterable[_Union[CatalogModel, _Mapping]]] = ...) -> None: ...

class ExampleInput(_message.Message):
    __slots__ = ("text", "route", "best_model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    BEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    route: str
    best_model: str
    def __init__(self, text: _Optional[str] = ..., route: _Optional[str] = ..., best_model: _Optional[str] = ...) -> None: ...

class UpsertExamplesRequest(_message.Message):
    __slots__ = ("namespace", "examples")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    examples: _containers.RepeatedCompositeFieldContainer[ExampleInput]
    def __init__(self, namespace: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[ExampleInput, _Mapping]]] = ...) -> None: ...

class UpsertExamplesResponse(_message.Message):
    __slots__ = ("added", "updated", "unchanged", "example_ids", "example_ids_omitted")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_IDS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    added: int
    updated: int
    unchanged: int
    example_ids: _containers.RepeatedScalarFieldContainer[int]
    example_ids_omitted: bool
    def __init__(self, added: _Optional[int] = ..., updated: _Optional[int] = ..., unchanged: _Optional[int] = ..., example_ids: _Optional[_Iterable[int]] = ..., example_ids_omitted: _Optional[bool] = ...) -> None: ...

class DeleteExamplesRequest(_message.Message):
    __slots__ = ("namespace", "example_ids")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_IDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    example_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, namespace: _Optional[str] = ..., example_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteExamplesResponse(_message.Message):
    __slots__ = ("deleted", "missing_ids")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, deleted: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ListExamplesRequest(_message.Message):
    __slots__ = ("namespace", "source", "model", "text_prefix", "route", "page_size", "page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    source: _router_pb2.Source
    model: str
    text_prefix: str
    route: str
    page_size: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., source: _Optional[_Union[_router_pb2.Source, str]] = ..., model: _Optional[str] = ..., text_prefix: _Optional[str] = ..., route: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("id", "text", "route", "source", "best_model", "outcomes", "created_at", "contains_pii")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_PII_FIELD_NUMBER: _ClassVar[int]
    id: int
    text: str
    route: str
    source: _router_pb2.Source
    best_model: str
    outcomes: _containers.RepeatedCompositeFieldContainer[_router_pb2.ObservedOutcome]
    created_at: str
    contains_pii: bool
    def __init__(self, id: _Optional[int] = ..., text: _Optional[str] = ..., route: _Optional[str] = ..., source: _Optional[_Union[_router_pb2.Source, str]] = ..., best_model: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[_router_pb2.ObservedOutcome, _Mapping]]] = ..., created_at: _Optional[str] = ..., contains_pii: _Optional[bool] = ...) -> None: ...

class ListExamplesResponse(_message.Message):
    __slots__ = ("examples", "next_page_token")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    next_page_token: str
    def __init__(self, examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class NamespaceStats(_message.Message):
    __slots__ = ("namespace", "examples", "examples_by_source", "examples_by_model", "outcomes_by_model", "index_size", "index_generation", "index_kind", "last_reindex")
    class ExamplesBySourceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ExamplesByModelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class OutcomesByModelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_BY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_SIZE_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    LAST_REINDEX_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    examples: int
    examples_by_source: _containers.ScalarMap[str, int]
    examples_by_model: _containers.ScalarMap[str, int]
    outcomes_by_model: _containers.ScalarMap[str, int]
    index_size: int
    index_generation: int
    index_kind: str
    last_reindex: str
    def __init__(self, namespace: _Optional[str] = ..., examples: _Optional[int] = ..., examples_by_source: _Optional[_Mapping[str, int]] = ..., examples_by_model: _Optional[_Mapping[str, int]] = ..., outcomes_by_model: _Optional[_Mapping[str, int]] = ..., index_size: _Optional[int] = ..., index_generation: _Optional[int] = ..., index_kind: _Optional[str] = ..., last_reindex: _Optional[str] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("namespaces", "embedding_model")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceStats]
    embedding_model: str
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceStats, _Mapping]]] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ("namespace", "index_kind")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    index_kind: str
    def __init__(self, namespace: _Optional[str] = ..., index_kind: _Optional[str] = ...) -> None: ...

class ReindexJob(_message.Message):
    __slots__ = ("job_id", "state", "namespace", "total", "done", "generation", "error", "index_kind", "index_examples")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    namespace: str
    total: int
    done: int
    generation: int
    error: str
    index_kind: str
    index_examples: int
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., namespace: _Optional[str] = ..., total: _Optional[int] = ..., done: _Optional[int] = ..., generation: _Optional[int] = ..., error: _Optional[str] = ..., index_kind: _Optional[str] = ..., index_examples: _Optional[int] = ...) -> None: ...

class GetReindexJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CheckIndexRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class IndexCheck(_message.Message):
    __slots__ = ("namespace", "store_examples", "index_examples", "missing", "extra", "stale_outcomes", "missing_count", "extra_count", "stale_outcomes_count", "stale_labels", "stale_labels_count")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STORE_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    INDEX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    STALE_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    MISSING_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COUNT_FIELD_NUMBER: _ClassVar[int]
    STALE_OUTCOMES_COUNT_FIELD_NUMBER: _ClassVar[int]
    STALE_LABELS_FIELD_NUMBER: _ClassVar[int]
    STALE_LABELS_COUNT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    store_examples: int
    index_examples: int
    missing: _containers.RepeatedScalarFieldContainer[int]
    extra: _containers.RepeatedScalarFieldContainer[int]
    stale_outcomes: _containers.RepeatedScalarFieldContainer[int]
    missing_count: int
    extra_count: int
    stale_outcomes_count: int
    stale_labels: _containers.RepeatedScalarFieldContainer[int]
    stale_labels_count: int
    def __init__(self, namespace: _Optional[str] = ..., store_examples: _Optional[int] = ..., index_examples: _Optional[int] = ..., missing: _Optional[_Iterable[int]] = ..., extra: _Optional[_Iterable[int]] = ..., stale_outcomes: _Optional[_Iterable[int]] = ..., missing_count: _Optional[int] = ..., extra_count: _Optional[int] = ..., stale_outcomes_count: _Optional[int] = ..., stale_labels: _Optional[_Iterable[int]] = ..., stale_labels_count: _Optional[int] = ...) -> None: ...

class CheckIndexResponse(_message.Message):
    __slots__ = ("namespaces", "consistent")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[IndexCheck]
    consistent: bool
    def __init__(self, namespaces: _Optional[_Iterable[_Union[IndexCheck, _Mapping]]] = ..., consistent: _Optional[bool] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("namespace", "rebaseline")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REBASELINE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    rebaseline: bool
    def __init__(self, namespace: _Optional[str] = ..., rebaseline: _Optional[bool] = ...) -> None: ...

class DriftWindow(_message.Message):
    __slots__ = ("decisions", "cold_start_rate", "top_similarity_median", "success_by_model")
    class SuccessByModelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_RATE_FIELD_NUMBER: _ClassVar[int]
    TOP_SIMILARITY_MEDIAN_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_BY_MODEL_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    cold_start_rate: float
    top_similarity_median: float
    success_by_model: _containers.ScalarMap[str, float]
    def __init__(self, decisions: _Optional[int] = ..., cold_start_rate: _Optional[float] = ..., top_similarity_median: _Optional[float] = ..., success_by_model: _Optional[_Mapping[str, float]] = ...) -> None: ...

class NamespaceDrift(_message.Message):
    __slots__ = ("namespace", "reference", "current", "psi", "ks", "drifted", "moved", "reference_since")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SINCE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    reference: DriftWindow
    current: DriftWindow
    psi: float
    ks: float
    drifted: bool
    moved: _containers.RepeatedScalarFieldContainer[str]
    reference_since: str
    def __init__(self, namespace: _Optional[str] = ..., reference: _Optional[_Union[DriftWindow, _Mapping]] = ..., current: _Optional[_Union[DriftWindow, _Mapping]] = ..., psi: _Optional[float] = ..., ks: _Optional[float] = ..., drifted: _Optional[bool] = ..., moved: _Optional[_Iterable[str]] = ..., reference_since: _Optional[str] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceDrift]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceDrift, _Mapping]]] = ...) -> None: ...
