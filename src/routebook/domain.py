"""Plain values shared by every layer: what a query, an example, an estimate and a decision are.

No I/O and no behaviour beyond small conveniences, so the decision logic can be tested with
literals and the gRPC adapter can convert them one-to-one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Strategy(enum.Enum):
    SEMANTIC = "semantic"
    CASCADE = "cascade"
    POLICY = "policy"
    OVERRIDE = "override"
    STICKY = "sticky"
    RULE = "rule"


class ReasonCode(enum.Enum):
    CHEAPEST_MEETS_TARGET = "cheapest_meets_target"
    NONE_MEETS_TARGET = "none_meets_target"
    COLD_LOW_SIMILARITY = "cold_low_similarity"
    COLD_LOW_SUPPORT = "cold_low_support"
    COLD_EMPTY_INDEX = "cold_empty_index"
    OVERRIDE = "override"
    BUDGET_EXHAUSTED = "budget_exhausted"
    COOLDOWN = "cooldown"
    STICKY = "sticky"
    RULE = "rule"


class Source(enum.Enum):
    REFERENCE = "reference"
    HISTORY = "history"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ObservedOutcome:
    """A model's reported results on one example, folded into a mean."""

    model: str
    mean_quality: float
    count: int


@dataclass(frozen=True, slots=True)
class ExampleFacts:
    """What the index keeps in memory about an example, so Decide never reads the store."""

    example_id: int
    text: str
    route: str | None
    source: Source
    best_model: str | None
    outcomes: tuple[ObservedOutcome, ...] = ()
    #: For history examples: the tenant whose query it was (its text is shown to no other).
    tenant: str | None = None
    #: A history example of a query marked `contains_pii`: still evidence, but its text is
    #: shown to no request (the snippet is withheld).
    contains_pii: bool = False


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An example found near the query, and the weight it carried in the estimates."""

    facts: ExampleFacts
    similarity: float
    weight: float = 0.0


@dataclass(frozen=True, slots=True)
class PolicyEffect:
    """A policy rule that changed the outcome: which rule, which models it removed, and why."""

    rule: str
    removed: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class HeadPrediction:
    """What a namespace's learned head says about one query before any neighbour is counted.

    `success`: (model, P(success)) for the models the head was trained for; `routes`: (route,
    probability) over the routes it knows, summing to 1. Pairs, not dicts, so the value stays
    hashable and converts one-to-one to repeated proto fields.
    """

    success: tuple[tuple[str, float], ...] = ()
    routes: tuple[tuple[str, float], ...] = ()
    #: The head's generation (the index generation it was trained from) and its training size.
    generation: int = 0
    trained_on: int = 0

    def success_of(self, model: str) -> float | None:
        return next((p for m, p in self.success if m == model), None)

    @property
    def top_route(self) -> tuple[str, float] | None:
        return max(self.routes, key=lambda item: (item[1], item[0]), default=None)


@dataclass(frozen=True, slots=True)
class ModelEstimate:
    model: str
    success: float
    support: float
    estimated_cost_usd: float
    meets_target: bool
    allowed: bool = True
    #: The head's P(success) that served as this estimate's prior (None: the constant prior).
    head_success: float | None = None


@dataclass(frozen=True, slots=True)
class CascadeStep:
    model: str
    estimated_cost_usd: float


@dataclass(frozen=True, slots=True)
class CascadePlan:
    """Cheapest-first models and the check a caller applies before escalating."""

    steps: tuple[CascadeStep, ...]
    min_quality: float

    @property
    def acceptance(self) -> str:
        return (
            f"accept the first answer whose quality is at least {self.min_quality:.2f}; "
            "otherwise try the next step, and report every attempt with RecordOutcome"
        )


@dataclass(frozen=True, slots=True)
class Choice:
    """What the pure decision logic concludes; the service adds ids and the generation."""

    model: str
    route: str | None
    strategy: Strategy
    confidence: float
    estimated_cost_usd: float
    reason_code: ReasonCode
    reason: str
    neighbours: tuple[Neighbour, ...]
    estimates: tuple[ModelEstimate, ...]
    cascade: CascadePlan | None
    quality_target: float
    top_similarity: float
    policy: tuple[PolicyEffect, ...] = ()
    #: What the namespace's head predicted for this query, when a head took part.
    head: HeadPrediction | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    namespace: str
    index_generation: int
    choice: Choice
    fallbacks: tuple[str, ...] = ()
    matched_rule: str | None = None

    @property
    def offered(self) -> tuple[str, ...]:
        """Every model this decision tells the caller to call: its model, the fallbacks and the
        cascade plan's steps. A failure of one of them is evidence of a real call."""
        steps = self.choice.cascade.steps if self.choice.cascade is not None else ()
        return tuple(dict.fromkeys((self.choice.model, *self.fallbacks, *(s.model for s in steps))))


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """A caller's report of how a model did, by decision id or by the conversation itself."""

    outcome_id: str
    model: str
    quality: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float | None = None
    decision_id: str | None = None
    namespace: str | None = None
    messages: tuple[Message, ...] = ()
    tenant: str = ""
    #: Set when the call failed: rate_limited, server_error, timeout or content_filter.
    failure: str | None = None
    retry_after_seconds: float | None = None
    #: Namespaces the reporter may write to (its API key's); None: any. Checked against the
    #: namespace the outcome lands in, which for a decision_id is the decision's.
    allowed_namespaces: frozenset[str] | None = None
    #: The tenant the reporter's API key is bound to (None: not bound). A report by decision_id
    #: must then be about that tenant's decision: it charges the decision's tenant.
    bound_tenant: str | None = None
    #: The reporter marks the query as holding personal data (a decision marked so needs no
    #: repeat): the query's history example is marked, so its text is never shown.
    contains_pii: bool = False


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    outcome_id: str
    example_id: int
    duplicate: bool
    namespace: str
    quality: float
    cost_usd: float
    cooldown_seconds: float = 0.0
    #: The decision's query text was gone (past `decision_text_hours`) and no history example
    #: held it: the outcome counts as spend, but taught the index nothing (example_id 0).
    text_expired: bool = False


def routing_text(messages: tuple[Message, ...] | list[Message]) -> str:
    """The text routing embeds: the last user message (earlier turns may count later)."""
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return message.content.strip()
    return ""
