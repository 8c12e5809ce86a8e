from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_SEMANTIC: _ClassVar[Strategy]
    STRATEGY_CASCADE: _ClassVar[Strategy]
    STRATEGY_POLICY: _ClassVar[Strategy]
    STRATEGY_OVERRIDE: _ClassVar[Strategy]
    STRATEGY_STICKY: _ClassVar[Strategy]
    STRATEGY_RULE: _ClassVar[Strategy]

class ReasonCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_CODE_UNSPECIFIED: _ClassVar[ReasonCode]
    REASON_CODE_CHEAPEST_MEETS_TARGET: _ClassVar[ReasonCode]
    REASON_CODE_NONE_MEETS_TARGET: _ClassVar[ReasonCode]
    REASON_CODE_COLD_LOW_SIMILARITY: _ClassVar[ReasonCode]
    REASON_CODE_COLD_LOW_SUPPORT: _ClassVar[ReasonCode]
    REASON_CODE_COLD_EMPTY_INDEX: _ClassVar[ReasonCode]
    REASON_CODE_OVERRIDE: _ClassVar[ReasonCode]
    REASON_CODE_BUDGET_EXHAUSTED: _ClassVar[ReasonCode]
    REASON_CODE_COOLDOWN: _ClassVar[ReasonCode]
    REASON_CODE_STICKY: _ClassVar[ReasonCode]
    REASON_CODE_RULE: _ClassVar[ReasonCode]

class FailureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_KIND_UNSPECIFIED: _ClassVar[FailureKind]
    FAILURE_KIND_RATE_LIMITED: _ClassVar[FailureKind]
    FAILURE_KIND_SERVER_ERROR: _ClassVar[FailureKind]
    FAILURE_KIND_TIMEOUT: _ClassVar[FailureKind]
    FAILURE_KIND_CONTENT_FILTER: _ClassVar[FailureKind]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_REFERENCE: _ClassVar[Source]
    SOURCE_HISTORY: _ClassVar[Source]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_SEMANTIC: Strategy
STRATEGY_CASCADE: Strategy
STRATEGY_POLICY: Strategy
STRATEGY_OVERRIDE: Strategy
STRATEGY_STICKY: Strategy
STRATEGY_RULE: Strategy
REASON_CODE_UNSPECIFIED: ReasonCode
REASON_CODE_CHEAPEST_MEETS_TARGET: ReasonCode
REASON_CODE_NONE_MEETS_TARGET: ReasonCode
REASON_CODE_COLD_LOW_SIMILARITY: ReasonCode
REASON_CODE_COLD_LOW_SUPPORT: ReasonCode
REASON_CODE_COLD_EMPTY_INDEX: ReasonCode
REASON_CODE_OVERRIDE: ReasonCode
REASON_CODE_BUDGET_EXHAUSTED: ReasonCode
REASON_CODE_COOLDOWN: ReasonCode
REASON_CODE_STICKY: ReasonCode
REASON_CODE_RULE: ReasonCode
FAILURE_KIND_UNSPECIFIED: FailureKind
FAILURE_KIND_RATE_LIMITED: FailureKind
FAILURE_KIND_SERVER_ERROR: FailureKind
FAILURE_KIND_TIMEOUT: FailureKind
FAILURE_KIND_CONTENT_FILTER: FailureKind
SOURCE_UNSPECIFIED: Source
SOURCE_REFERENCE: Source
SOURCE_HISTORY: Source

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("namespace", "messages", "metadata", "quality_target", "expected_output_tokens", "tenant", "model_override", "max_latency_ms", "required_tags", "contains_pii", "session_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    QUALITY_TARGET_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TAGS_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_PII_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    metadata: _containers.ScalarMap[str, str]
    quality_target: float
    expected_output_tokens: int
    tenant: str
    model_override: str
    max_latency_ms: float
    required_tags: _containers.RepeatedScalarFieldContainer[str]
    contains_pii: bool
    session_id: str
    def __init__(self, namespace: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., quality_target: _Optional[float] = ..., expected_output_tokens: _Optional[int] = ..., tenant: _Optional[str] = ..., model_override: _Optional[str] = ..., max_latency_ms: _Optional[float] = ..., required_tags: _Optional[_Iterable[str]] = ..., contains_pii: _Optional[bool] = ..., session_id: _Optional[str] = ...) -> None: ...

class PolicyEffect(_message.Message):
    __slots__ = ("rule", "removed_models", "detail")
    RULE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_MODELS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rule: str
    removed_models: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    def __init__(self, rule: _Optional[str] = ..., removed_models: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ...) -> None: ...

class ObservedOutcome(_message.Message):
    __slots__ = ("model", "mean_quality", "count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEAN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    model: str
    mean_quality: float
    count: int
    def __init__(self, model: _Optional[str] = ..., mean_quality: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("example_id", "text_snippet", "similarity", "route", "source", "best_model", "outcomes", "weight", "contains_pii")
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BEST_MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_PII_FIELD_NUMBER: _ClassVar[int]
    example_id: int
    text_snippet: str
    similarity: float
    route: str
    source: Source
    best_model: str
    outcomes: _containers.RepeatedCompositeFieldContainer[ObservedOutcome]
    weight: float
    contains_pii: bool
    def __init__(self, example_id: _Optional[int] = ..., text_snippet: _Optional[str] = ..., similarity: _Optional[float] = ..., route: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., best_model: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[ObservedOutcome, _Mapping]]] = ..., weight: _Optional[float] = ..., contains_pii: _Optional[bool] = ...) -> None: ...

class ModelEstimate(_message.Message):
    __slots__ = ("model", "success", "support", "estimated_cost_usd", "meets_target", "allowed", "head_success")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MEETS_TARGET_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    HEAD_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    model: str
    success: float
    support: float
    estimated_cost_usd: float
    meets_target: bool
    allowed: bool
    head_success: float
    def __init__(self, model: _Optional[str] = ..., success: _Optional[float] = ..., support: _Optional[float] = ..., estimated_cost_usd: _Optional[float] = ..., meets_target: _Optional[bool] = ..., allowed: _Optional[bool] = ..., head_success: _Optional[float] = ...) -> None: ...

class RouteProbability(_message.Message):
    __slots__ = ("route", "probability")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    route: str
    probability: float
    def __init__(self, route: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class HeadEvidence(_message.Message):
    __slots__ = ("generation", "trained_on", "top_routes")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_ON_FIELD_NUMBER: _ClassVar[int]
    TOP_ROUTES_FIELD_NUMBER: _ClassVar[int]
    generation: int
    trained_on: int
    top_routes: _containers.RepeatedCompositeFieldContainer[RouteProbability]
    def __init__(self, generation: _Optional[int] = ..., trained_on: _Optional[int] = ..., top_routes: _Optional[_Iterable[_Union[RouteProbability, _Mapping]]] = ...) -> None: ...

class CascadeStep(_message.Message):
    __slots__ = ("model", "estimated_cost_usd")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    model: str
    estimated_cost_usd: float
    def __init__(self, model: _Optional[str] = ..., estimated_cost_usd: _Optional[float] = ...) -> None: ...

class CascadePlan(_message.Message):
    __slots__ = ("steps", "min_quality", "acceptance")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[CascadeStep]
    min_quality: float
    acceptance: str
    def __init__(self, steps: _Optional[_Iterable[_Union[CascadeStep, _Mapping]]] = ..., min_quality: _Optional[float] = ..., acceptance: _Optional[str] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision_id", "namespace", "model", "route", "strategy", "confidence", "estimated_cost_usd", "reason_code", "reason", "index_generation", "neighbours", "estimates", "cascade", "quality_target", "top_similarity", "policy", "tenant", "fallbacks", "matched_rule", "head")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_GENERATION_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_TARGET_FIELD_NUMBER: _ClassVar[int]
    TOP_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_RULE_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    namespace: str
    model: str
    route: str
    strategy: Strategy
    confidence: float
    estimated_cost_usd: float
    reason_code: ReasonCode
    reason: str
    index_generation: int
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    estimates: _containers.RepeatedCompositeFieldContainer[ModelEstimate]
    cascade: CascadePlan
    quality_target: float
    top_similarity: float
    policy: _containers.RepeatedCompositeFieldContainer[PolicyEffect]
    tenant: str
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    matched_rule: str
    head: HeadEvidence
    def __init__(self, decision_id: _Optional[str] = ..., namespace: _Optional[str] = ..., model: _Optional[str] = ..., route: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., confidence: _Optional[float] = ..., estimated_cost_usd: _Optional[float] = ..., reason_code: _Optional[_Union[ReasonCode, str]] = ..., reason: _Optional[str] = ..., index_generation: _Optional[int] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., estimates: _Optional[_Iterable[_Union[ModelEstimate, _Mapping]]] = ..., cascade: _Optional[_Union[CascadePlan, _Mapping]] = ..., quality_target: _Optional[float] = ..., top_similarity: _Optional[float] = ..., policy: _Optional[_Iterable[_Union[PolicyEffect, _Mapping]]] = ..., tenant: _Optional[str] = ..., fallbacks: _Optional[_Iterable[str]] = ..., matched_rule: _Optional[str] = ..., head: _Optional[_Union[HeadEvidence, _Mapping]] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("outcome_id", "decision_id", "namespace", "messages", "model", "quality", "success", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "tenant", "failure", "retry_after_seconds", "contains_pii")
    OUTCOME_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_PII_FIELD_NUMBER: _ClassVar[int]
    outcome_id: str
    decision_id: str
    namespace: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    model: str
    quality: float
    success: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    tenant: str
    failure: FailureKind
    retry_after_seconds: float
    contains_pii: bool
    def __init__(self, outcome_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., namespace: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., model: _Optional[str] = ..., quality: _Optional[float] = ..., success: _Optional[bool] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., latency_ms: _Optional[float] = ..., tenant: _Optional[str] = ..., failure: _Optional[_Union[FailureKind, str]] = ..., retry_after_seconds: _Optional[float] = ..., contains_pii: _Optional[bool] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ("outcome_id", "example_id", "duplicate", "namespace", "quality", "cost_usd", "cooldown_seconds", "text_expired")
    OUTCOME_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    outcome_id: str
    example_id: int
    duplicate: bool
    namespace: str
    quality: float
    cost_usd: float
    cooldown_seconds: float
    text_expired: bool
    def __init__(self, outcome_id: _Optional[str] = ..., example_id: _Optional[int] = ..., duplicate: _Optional[bool] = ..., namespace: _Optional[str] = ..., quality: _Optional[float] = ..., cost_usd: _Optional[float] = ..., cooldown_seconds: _Optional[float] = ..., text_expired: _Optional[bool] = ...) -> None: ...
