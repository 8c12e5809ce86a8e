"""`routebook eval`: fill a fresh namespace from an index file, route a test file, measure.

The embedder, the index, the namespace head and the decision rule are the server's own
(`jobs.replay`); the kNN vote and the linear head run on the very same vectors
(`jobs.baselines`), so the comparison is between decision rules, not encoders. Outcome data
goes to `jobs.outcome_eval`, intent data to `jobs.intent_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from routebook.catalog import Catalog
from routebook.decide import DecisionParams
from routebook.jobs import baselines, replay
from routebook.jobs.datasets import IntentRow, OutcomeRow
from routebook.jobs.embedcache import EmbeddingCache
from routebook.jobs.intent_eval import (
    IntentEvaluation,
    check_index_labels,
    evaluate_intent_routers,
)
from routebook.jobs.outcome_eval import (
    OutcomeEvaluation,
    Priced,
    Scored,
    as_keys,
    check_matches_decide,
    evaluate_router,
    reference,
    scored_from_choices,
)
from routebook.jobs.progress import Silent, Tracker

#: Neighbours the kNN baseline votes with (the issue's reference measurement used k=50).
KNN_BASELINE_K = 50


@dataclass(frozen=True, slots=True)
class RunOptions:
    params: DecisionParams
    k: int
    resamples: int = 1000
    seed: int = 0
    #: The rest of the settings that `serve` applies (answer length, head sample, index kind).
    serving: replay.Serving = replay.DEFAULT_SERVING
    #: The answer length every call is priced at; None: `serving.output_tokens`.
    answer_tokens: int | None = None

    @property
    def priced_tokens(self) -> int:
        return self.serving.output_tokens if self.answer_tokens is None else self.answer_tokens


def embed_texts(
    cache: EmbeddingCache, texts: Sequence[str], label: str, tracker: Tracker
) -> npt.NDArray[np.float32]:
    advance = tracker.step(f"embed {label}", len(texts))
    return cache.embed(texts, advance)


def quality_matrix(rows: Sequence[OutcomeRow], catalog: Catalog) -> npt.NDArray[np.float64]:
    """(n, models) recorded quality, models cheapest first; a missing model is an error."""
    names = catalog.names
    missing = {m for row in rows for m in names if m not in row.outcomes}
    if missing:
        raise ValueError(
            f"the catalog names {', '.join(sorted(missing))}, but some rows have no outcome for "
            "it; give a --catalog whose models match the data"
        )
    return np.array([[row.outcomes[m] for m in names] for row in rows], dtype=np.float64)


def evaluate_outcomes(
    index_rows: Sequence[OutcomeRow],
    test_rows: Sequence[OutcomeRow],
    cache: EmbeddingCache,
    catalog: Catalog,
    options: RunOptions,
    tracker: Tracker | None = None,
) -> OutcomeEvaluation:
    tracker = tracker or Silent()
    index_vectors = embed_texts(cache, [r.prompt for r in index_rows], "index", tracker)
    test_texts = [r.prompt for r in test_rows]
    test_vectors = embed_texts(cache, test_texts, "test", tracker)
    facts = replay.outcome_facts(index_rows)
    serving = options.serving
    index_layers = test_layers = None
    if serving.reads_layers and replay.uses_head(options.params):
        index_layers = cache.layers(
            [r.prompt for r in index_rows], tracker.step("layers", len(index_rows))
        )
        test_layers = cache.layers(test_texts, tracker.step("test layers", len(test_texts)))
    index = replay.build_index(facts, index_vectors, serving)
    advance = tracker.step("train head", 1)
    head = replay.index_head(facts, index_vectors, catalog, options.params, serving, index_layers)
    advance(1)
    searched = replay.search_all(
        index,
        test_texts,
        test_vectors,
        options.k,
        tracker.step("search", len(test_rows)),
        head=head,
        layers=test_layers,
    )
    advance = tracker.step("decide", len(test_rows))
    answer = serving.output_tokens
    choices = replay.decide_all(searched, catalog, options.params, options.k, answer)
    advance(len(test_rows))
    routebook = scored_from_choices("routebook", choices, catalog, options.params)
    check_matches_decide(routebook, choices, catalog)
    # The same rule with cold start switched off: every query SEMANTIC, no cascade. Cascades
    # assume the caller can grade an answer; this row shows the rule without that help.
    semantic_only = replace(options.params, cold_start_threshold=-1.0, min_support=0.0)
    warm = scored_from_choices(
        "routebook, no cascade",
        replay.decide_all(searched, catalog, semantic_only, options.k, answer),
        catalog,
        semantic_only,
    )

    index_quality = quality_matrix(index_rows, catalog)
    quality = quality_matrix(test_rows, catalog)
    advance = tracker.step("baselines", 2)
    knn_est, _ = baselines.knn_outcome_estimates(
        index_vectors, index_quality, test_vectors, KNN_BASELINE_K
    )
    advance(1)
    linear_est = baselines.linear_outcome_estimates(
        index_vectors, index_quality, test_vectors, options.seed
    )
    advance(1)
    never_cold = np.zeros(len(test_rows), dtype=bool)
    scored = [
        routebook,
        warm,
        Scored(f"kNN vote (k={KNN_BASELINE_K})", as_keys(knn_est, "gain"), never_cold),
        Scored("linear head", as_keys(linear_est, "gain"), never_cold),
    ]
    priced = Priced(
        quality,
        replay.call_costs(catalog, searched.input_tokens, options.priced_tokens),
        replay.call_costs(catalog, searched.input_tokens, answer),
    )
    advance = tracker.step("bootstrap", len(scored))
    figures = []
    for s in scored:
        figures.append(
            evaluate_router(
                s,
                priced,
                catalog.names,
                options.params.quality_target,
                options.resamples,
                options.seed,
            )
        )
        advance(1)
    return OutcomeEvaluation(
        n_index=len(index_rows),
        n_test=len(test_rows),
        k=options.k,
        params=options.params,
        reference=reference(quality, priced.call_cost, catalog.names),
        routers=tuple(figures),
        head=replay.HeadSummary.of(head, options.params),
    )


def evaluate_intents(
    index_rows: Sequence[IntentRow],
    test_rows: Sequence[IntentRow],
    cache: EmbeddingCache,
    options: RunOptions,
    tracker: Tracker | None = None,
    oos_recall_goal: float = 0.8,
) -> IntentEvaluation:
    check_index_labels(index_rows)  # before the embedding, the slow part
    tracker = tracker or Silent()
    index_vectors = embed_texts(cache, [r.text for r in index_rows], "index", tracker)
    test_texts = [r.text for r in test_rows]
    test_vectors = embed_texts(cache, test_texts, "test", tracker)
    return evaluate_intent_routers(
        index_rows,
        index_vectors,
        test_rows,
        test_vectors,
        options.params,
        options.k,
        options.resamples,
        options.seed,
        tracker,
        oos_recall_goal,
        options.serving,
    )
