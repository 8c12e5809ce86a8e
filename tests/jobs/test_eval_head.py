"""`eval` and `calibrate` route with the namespace head, trained on the index file, on real data
slices through the real model; and leave-one-out calibration never lets a head see its query."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from routebook.catalog import estimate_tokens
from routebook.decide import DecisionParams
from routebook.domain import HeadPrediction, Strategy
from routebook.embed.sentence import SentenceTransformerEmbedder
from routebook.jobs import replay
from routebook.jobs.datasets import load_intent_rows, load_outcome_rows
from routebook.jobs.embedcache import EmbeddingCache
from routebook.jobs.evaluate import RunOptions, evaluate_outcomes
from routebook.jobs.intent_eval import route_with_routebook
from routebook.jobs.outcome_eval import OutcomeEvaluation
from routebook.jobs.report import to_json
from tests.jobs.conftest import DATA, needs_data

GSM8K_INDEX = DATA / "routellm" / "gsm8k.dev_index.jsonl"
GSM8K_TEST = DATA / "routellm" / "gsm8k.dev_test.jsonl"
BANKING_INDEX = DATA / "banking77" / "train.dev_index.jsonl"
BANKING_TEST = DATA / "banking77" / "train.dev_test.jsonl"

RECOMMENDED = DecisionParams(similarity_floor=0.0, weight_power=2.0, target_mode="relative")
NO_HEAD = replace(RECOMMENDED, head_strength=0.0, route_head_strength=0.0)


@needs_data
def test_eval_routes_outcome_data_with_the_head(
    embedder: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    cache = EmbeddingCache(embedder, cache_dir)
    index_rows = load_outcome_rows(GSM8K_INDEX)[:300]
    test_rows = load_outcome_rows(GSM8K_TEST)[:60]
    catalog = replay.routellm_catalog()
    facts = replay.outcome_facts(index_rows)
    vectors = cache.embed([r.prompt for r in index_rows])
    head = replay.index_head(facts, vectors, catalog, RECOMMENDED)
    assert head is not None and head.models == catalog.names and head.trained_on == 300
    assert replay.index_head(facts, vectors, catalog, NO_HEAD) is None

    texts = [r.prompt for r in test_rows]
    searched = replay.search_all(
        replay.build_index(facts, vectors), texts, cache.embed(texts), 50, head=head
    )
    assert len(searched.heads) == 60
    with_head = replay.decide_all(searched, catalog, RECOMMENDED, 50)
    without = replay.decide_all(searched, catalog, NO_HEAD, 50)
    for a, b in zip(with_head, without, strict=True):
        assert a.head is not None and b.head is None
        assert all(e.head_success is not None for e in a.estimates)
        assert [n.facts.example_id for n in a.neighbours] == [
            n.facts.example_id for n in b.neighbours
        ]
    changed = sum(
        abs(x.success - y.success) > 1e-9
        for a, b in zip(with_head, without, strict=True)
        for x, y in zip(a.estimates, b.estimates, strict=True)
    )
    assert changed > 0

    # The whole evaluation: its check that the sweep reproduces decide's own choice passes with
    # the head, and the routebook rows differ from the same rule without it.
    def evaluated(params: DecisionParams, rows: int = 300) -> OutcomeEvaluation:
        return evaluate_outcomes(
            index_rows[:rows], test_rows, cache, catalog, RunOptions(params, k=50, resamples=20)
        )

    with_head, no_head = evaluated(RECOMMENDED), evaluated(NO_HEAD)
    on = [r.apgr.estimate for r in with_head.routers]
    off = [r.apgr.estimate for r in no_head.routers]
    assert on[:2] != off[:2]
    assert on[2:] == off[2:]  # the baselines are untouched
    # The report says which head decided, and when none did, why.
    assert with_head.head == replay.HeadSummary("vector", 300, catalog.names, 0, "")
    assert with_head.head.describe() == (
        "trained on 300 examples: success of 2 models, reading the vector"
    )
    assert no_head.head.trained_on == 0 and "no weight" in no_head.head.none_because
    too_few = evaluated(RECOMMENDED, rows=99)
    assert too_few.head.trained_on == 0
    assert "too few labelled examples" in too_few.head.none_because
    assert to_json(too_few)["head"]["none_because"] == too_few.head.none_because


@needs_data
def test_eval_routes_intent_data_with_the_head(
    embedder: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    cache = EmbeddingCache(embedder, cache_dir)
    index_rows = load_intent_rows(BANKING_INDEX)[:1500]
    test_rows = load_intent_rows(BANKING_TEST)[:200]
    vectors = cache.embed([r.text for r in index_rows])
    texts = [r.text for r in test_rows]
    test_vectors = cache.embed(texts)
    params = replace(RECOMMENDED, cold_start_threshold=-1.0, min_support=0.0, weight_power=8.0)
    routes_on, _, head_on = route_with_routebook(
        index_rows, vectors, texts, test_vectors, params, 20
    )
    off = replace(params, route_head_strength=0.0)
    routes_off, _, head_off = route_with_routebook(
        index_rows, vectors, texts, test_vectors, off, 20
    )
    assert routes_on != routes_off
    labels = len({r.label for r in index_rows})
    assert head_on.routes == head_off.routes == labels and head_on.none_because == ""
    truth = [r.label for r in test_rows]
    hits_on = sum(a == t for a, t in zip(routes_on, truth, strict=True))
    hits_off = sum(a == t for a, t in zip(routes_off, truth, strict=True))
    # With 1,500 examples (about 20 per label) the head wins clearly on Banking77.
    assert hits_on > hits_off


@needs_data
def test_crossfit_heads_never_saw_their_query(
    embedder: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    cache = EmbeddingCache(embedder, cache_dir)
    rows = load_outcome_rows(GSM8K_INDEX)[:200]
    facts = replay.outcome_facts(rows)
    vectors = cache.embed([r.prompt for r in rows])
    catalog = replay.routellm_catalog()
    heads = replay.crossfit_heads(facts, vectors, catalog)
    assert all(h is not None for h in heads)
    # Five folds: each prediction comes from a head trained on about four fifths of the rows.
    sizes = {h.trained_on for h in heads if h is not None}
    assert all(150 <= s <= 170 for s in sizes) and len(sizes) <= 5
    # Past `head_max_examples` each fold's head trains on a sample of that size, as `serve`'s.
    capped = replay.crossfit_heads(facts, vectors, catalog, max_examples=100)
    assert {h.trained_on for h in capped if h is not None} == {100}
    full = replay.index_head(facts, vectors, catalog, RECOMMENDED)
    assert full is not None
    own: list[HeadPrediction | None] = [
        full.predict(v, estimate_tokens(f.text)) for v, f in zip(vectors, facts, strict=True)
    ]
    # A head that saw the query predicts its own outcome better than one that did not.
    weak = np.array([r.outcomes[replay.WEAK] for r in rows])

    def error(predictions: list[HeadPrediction | None]) -> float:
        p = np.array([h.success_of(replay.WEAK) if h else np.nan for h in predictions])
        return float(np.mean((p - weak) ** 2))

    assert error(own) < error(heads)
    decided = replay.decide_all(
        replay.search_all(
            replay.build_index(facts, vectors),
            [f.text for f in facts],
            vectors,
            20,
            leave_one_out=True,
            heads=heads,
        ),
        catalog,
        replace(RECOMMENDED, cold_start_threshold=-1.0, min_support=0.0),
        20,
    )
    assert all(c.strategy is Strategy.SEMANTIC and c.head is not None for c in decided)
    assert decided[0].head == heads[0]
