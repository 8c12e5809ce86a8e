"""Replay a dataset through the server's own routing pieces, in process.

The index file becomes a fresh `NamespaceIndex` (the class the server serves from), test
queries are searched in it, and every decision is made by `routebook.decide.decide`, so an
evaluation measures the code that runs in production, not a re-implementation of it.

- Outcome rows become history-like examples: `ObservedOutcome(model, quality, 1)` per model.
- Intent rows become reference examples whose route is the label. The label's route is served
  by the cheapest catalog model (`best_model`), which is what gives the example evidence weight.

Searching is done once with the largest k any setting needs; a smaller k takes the first k of
those neighbours, which is exactly what a search with that k returns (an exact index; past
`approximate_index_above` examples the index is the approximate kind `serve` would build, see
`Serving`).

Besides the decision rule and k, a settings file changes what `serve` decides and what it
costs through `Serving`: the answer length a request is decided and priced at, the sample the
head trains on and the index kind. A replay that kept only the rule measured another
configuration (a candidate that changed `default_output_tokens` passed the gate as identical).

The namespace head (`decide/head.py`) is trained on the index file, as the server trains it on
its index, and its prediction for each query rides along with the neighbours. When the queries
are the index's own rows (leave-one-out calibration), each query's prediction comes from a head
that never saw it (`crossfit_heads`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.catalog import Catalog, ModelSpec, estimate_tokens
from routebook.config import Settings
from routebook.decide import DecisionParams, DecisionRequest, decide
from routebook.decide.head import (
    LAYERS,
    MIN_MODEL_EXAMPLES,
    MIN_ROUTE_EXAMPLES,
    Head,
    train_head,
)
from routebook.domain import (
    Choice,
    ExampleFacts,
    HeadPrediction,
    Neighbour,
    ObservedOutcome,
    Source,
)
from routebook.index import IndexKind, NamespaceIndex, choose_kind
from routebook.index.namespace_index import training_sample
from routebook.jobs.datasets import IntentRow, OutcomeRow

Vectors = npt.NDArray[np.float32]
#: Every layer's mean pool per text (`head_features = "layers"`), row i for text i.
Layers = npt.NDArray[np.floating[Any]]

STRONG = "gpt-4-1106-preview"
WEAK = "mixtral-8x7b-instruct-v0.1"

#: Extra neighbours fetched in leave-one-out search, to replace the query itself and its copies.
LOO_SPARE = 4


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


#: The answer length the server assumes when a request gives none (Settings.default_output_tokens).
DEFAULT_OUTPUT_TOKENS: int = _default("default_output_tokens")


@dataclass(frozen=True, slots=True)
class Serving:
    """What a settings file changes in `serve` besides the decision rule and k.

    `output_tokens` (`default_output_tokens`) is the answer length a request is decided and
    priced at: it picks the cheapest model for the request when input and output prices cross.
    `head_max_examples` bounds the seeded sample the namespace head trains on, and
    `approximate_above`/`approximate_kind` choose the index kind by size, and `head_features`
    what the head reads."""

    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    head_max_examples: int = _default("head_max_examples")
    approximate_above: int = _default("approximate_index_above")
    approximate_kind: str = _default("approximate_index_kind")
    #: What the head's success part reads: "vector" or "layers" (`head_features`).
    head_features: str = _default("head_features")

    @classmethod
    def of(cls, settings: Settings) -> Serving:
        return cls(
            output_tokens=settings.default_output_tokens,
            head_max_examples=settings.head_max_examples,
            approximate_above=settings.approximate_index_above,
            approximate_kind=settings.approximate_index_kind,
            head_features=settings.head_features,
        )

    @property
    def reads_layers(self) -> bool:
        return self.head_features == LAYERS

    def index_kind(self, size: int) -> IndexKind:
        """The kind `serve` builds for an index of `size` examples."""
        return choose_kind(size, self.approximate_above, self.approximate_kind)


#: `serve` at its default settings.
DEFAULT_SERVING = Serving()


#: Folds of the cross-fitted head predictions used when the index's own rows are the queries.
CROSSFIT_FOLDS = 5


def routellm_catalog() -> Catalog:
    """RouteLLM's model pair at list prices per 1M tokens (input / output).

    GPT-4 Turbo (gpt-4-1106-preview): $10 / $30, OpenAI's list price. Mixtral 8x7B Instruct:
    $0.24 / $0.24, the price RouteLLM's paper uses for it. See docs/evaluation.md.
    """
    return Catalog(
        [
            ModelSpec(STRONG, "openai", 10.0, 30.0, 2000.0, 128_000),
            ModelSpec(WEAK, "together", 0.24, 0.24, 800.0, 32_000),
        ]
    )


def intent_catalog() -> Catalog:
    """A one-model catalog for intent data, where only the route matters."""
    return Catalog([ModelSpec("route-model", "any", 0.0, 0.0, 0.0, 1_000_000)])


def outcome_facts(rows: Sequence[OutcomeRow]) -> list[ExampleFacts]:
    return [
        ExampleFacts(
            example_id=i,
            text=row.prompt,
            route=None,
            source=Source.HISTORY,
            best_model=None,
            outcomes=tuple(ObservedOutcome(m, q, 1) for m, q in sorted(row.outcomes.items())),
        )
        for i, row in enumerate(rows)
    ]


def intent_facts(rows: Sequence[IntentRow], catalog: Catalog) -> list[ExampleFacts]:
    cheapest = catalog.models[0].name
    return [
        ExampleFacts(
            example_id=i,
            text=row.text,
            route=row.label,
            source=Source.REFERENCE,
            best_model=cheapest,
        )
        for i, row in enumerate(rows)
    ]


def build_index(
    facts: Sequence[ExampleFacts], vectors: Vectors, serving: Serving = DEFAULT_SERVING
) -> NamespaceIndex:
    """The index `serve` would hold: exact, or past `approximate_index_above` approximate."""
    kind = serving.index_kind(len(facts))
    return NamespaceIndex.build(int(vectors.shape[1]), kind, list(facts), vectors)


@dataclass(frozen=True, slots=True)
class Searched:
    """The neighbours of every test query at the largest k, most similar first."""

    neighbours: tuple[tuple[Neighbour, ...], ...]
    index_size: int
    input_tokens: tuple[int, ...]
    #: The head's prediction per query; empty when the namespace has no head.
    heads: tuple[HeadPrediction | None, ...] = ()

    def __len__(self) -> int:
        return len(self.neighbours)


def search_all(
    index: NamespaceIndex,
    texts: Sequence[str],
    vectors: Vectors,
    k: int,
    advance: Callable[[int], None] | None = None,
    leave_one_out: bool = False,
    head: Head | None = None,
    heads: Sequence[HeadPrediction | None] | None = None,
    layers: Layers | None = None,
) -> Searched:
    """The k nearest examples of every query, and the head's prediction for each.

    `leave_one_out`: the queries are the index's own examples, so each query's own text (and
    any exact duplicate of it) is dropped from its neighbours, as if it had never been indexed.
    `heads` gives the predictions directly (cross-fitted ones); otherwise `head` makes them,
    reading the queries' `layers` when it was trained on layers.
    """
    found = []
    for text, vector in zip(texts, vectors, strict=True):
        if leave_one_out:
            near = index.search(vector, k + LOO_SPARE)
            found.append(tuple(n for n in near if n.facts.text != text)[:k])
        else:
            found.append(tuple(index.search(vector, k)))
        if advance is not None:
            advance(1)
    tokens = tuple(estimate_tokens(t) for t in texts)
    if heads is None and head is not None:
        heads = predict_all(head, vectors, tokens, layers)
    return Searched(
        neighbours=tuple(found),
        index_size=len(index),
        input_tokens=tokens,
        heads=tuple(heads or ()),
    )


def predict_all(
    head: Head, vectors: Vectors, tokens: Sequence[int], layers: Layers | None = None
) -> list[HeadPrediction | None]:
    """The head's prediction for every query (reading its `layers` when the head does)."""
    return [
        head.predict(v, t, layers[i] if layers is not None else None)
        for i, (v, t) in enumerate(zip(vectors, tokens, strict=True))
    ]


def uses_head(params: DecisionParams) -> bool:
    """Whether the decision rule gives a head any weight (else none is trained)."""
    return params.head_strength > 0 or params.route_head_strength > 0


@dataclass(frozen=True, slots=True)
class HeadSummary:
    """Which head a replay decided with, for its report: a head that was not trained (too few
    labelled examples, no weight in the rule) leaves the plain vote, and nothing in the figures
    themselves says so."""

    #: What its success part reads ("vector" or "layers"); "" without a success part.
    features: str
    #: Examples it was trained on; 0 without a head.
    trained_on: int
    #: The models its success part predicts.
    models: tuple[str, ...]
    #: How many routes its route part tells apart.
    routes: int
    #: Why there is no head; "" when there is one.
    none_because: str

    @classmethod
    def of(cls, head: Head | None, params: DecisionParams) -> HeadSummary:
        if head is not None:
            features = head.features if head.models else ""
            return cls(features, head.trained_on, head.models, len(head.routes), "")
        if not uses_head(params):
            why = "the rule gives it no weight (head_strength and route_head_strength are 0)"
        else:
            why = (
                f"too few labelled examples (a model needs {MIN_MODEL_EXAMPLES}, routes "
                f"{MIN_ROUTE_EXAMPLES} of two or more labels)"
            )
        return cls("", 0, (), 0, why)

    def describe(self) -> str:
        """In words, e.g. "trained on 7,026 examples: success of 2 models, reading the vector"."""
        if self.none_because:
            return f"none: {self.none_because}"
        parts = []
        if self.models:
            reads = "every layer's pools" if self.features == LAYERS else "the vector"
            parts.append(f"success of {len(self.models)} models, reading {reads}")
        if self.routes:
            parts.append(f"{self.routes} routes")
        return f"trained on {self.trained_on:,} examples: " + ", ".join(parts)


def index_head(
    facts: Sequence[ExampleFacts],
    vectors: Vectors,
    catalog: Catalog,
    params: DecisionParams,
    serving: Serving = DEFAULT_SERVING,
    layers: Layers | None = None,
) -> Head | None:
    """The head the server would train on this index (on the same seeded sample past
    `head_max_examples`, reading the examples' `layers` when given), or None when the rule
    gives it no weight."""
    if not uses_head(params):
        return None
    sample = training_sample(len(facts), serving.head_max_examples)
    return train_head(
        vectors[sample],
        [facts[i] for i in sample.tolist()],
        catalog,
        layers=layers[sample] if layers is not None else None,
    )


def crossfit_heads(
    facts: Sequence[ExampleFacts],
    vectors: Vectors,
    catalog: Catalog,
    folds: int = CROSSFIT_FOLDS,
    seed: int = 0,
    layers: Layers | None = None,
    max_examples: int = DEFAULT_SERVING.head_max_examples,
) -> list[HeadPrediction | None]:
    """Each example's head prediction from a head trained on the other folds.

    Leave-one-out calibration routes the index's own rows; a head trained on all of them would
    have seen each query and its outcome. Copies of a text share a fold, like the neighbour
    search drops a query's copies. Each fold's head trains on at most `max_examples` of the
    other folds (`head_max_examples`), the same seeded sample `serve` would draw.
    """
    texts = sorted({f.text for f in facts})
    random.Random(seed).shuffle(texts)
    fold_of = {t: i % folds for i, t in enumerate(texts)}
    fold = np.array([fold_of[f.text] for f in facts])
    out: list[HeadPrediction | None] = [None] * len(facts)
    for part in range(folds):
        others = np.flatnonzero(fold != part)
        train = [int(i) for i in others[training_sample(others.size, max_examples)]]
        head = train_head(
            vectors[train],
            [facts[i] for i in train],
            catalog,
            layers=layers[train] if layers is not None else None,
        )
        if head is None:
            continue
        for i in (int(j) for j in np.flatnonzero(fold == part)):
            query_layers = layers[i] if layers is not None else None
            out[i] = head.predict(vectors[i], estimate_tokens(facts[i].text), query_layers)
    return out


def search_intents(
    index_rows: Sequence[IntentRow],
    index_vectors: Vectors,
    texts: Sequence[str],
    vectors: Vectors,
    k: int,
    params: DecisionParams,
    advance: Callable[[int], None] | None = None,
    serving: Serving = DEFAULT_SERVING,
) -> tuple[Searched, Head | None]:
    """Intent queries searched as `serve` would: an index of the rows (a route per label) and
    the head trained on it. Returns the search and the head (None when the rule gives it no
    weight)."""
    catalog = intent_catalog()
    facts = intent_facts(index_rows, catalog)
    head = index_head(facts, index_vectors, catalog, params, serving)
    index = build_index(facts, index_vectors, serving)
    searched = search_all(index, texts, vectors, k, advance, head=head)
    return searched, head


def decide_all(
    searched: Searched,
    catalog: Catalog,
    params: DecisionParams,
    k: int,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> list[Choice]:
    """One real decision per query, with the first k neighbours."""
    return [
        decide(
            DecisionRequest(
                neighbours=neighbours[:k],
                catalog=catalog,
                params=params,
                index_size=searched.index_size,
                input_tokens=tokens,
                output_tokens=output_tokens,
                head=searched.heads[i] if searched.heads else None,
            )
        )
        for i, (neighbours, tokens) in enumerate(
            zip(searched.neighbours, searched.input_tokens, strict=True)
        )
    ]


def call_costs(
    catalog: Catalog, input_tokens: Sequence[int], output_tokens: int = DEFAULT_OUTPUT_TOKENS
) -> npt.NDArray[np.float64]:
    """(n_queries, n_models) dollars of one call, models cheapest first."""
    return np.array(
        [[m.cost_usd(t, output_tokens) for m in catalog.models] for t in input_tokens],
        dtype=np.float64,
    ).reshape(len(input_tokens), len(catalog))
