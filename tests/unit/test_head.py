"""The namespace head (`decide/head.py`): what it learns from an index's labels, what it refuses
to learn from, and that its numpy inference is the fitted model's own.

Vectors are plain unit vectors built by hand (two directions = two kinds of query), except the
last test, which trains on real utterances through the real model.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from routebook.catalog import Catalog, ModelSpec, estimate_tokens
from routebook.decide.head import MIN_MODEL_EXAMPLES, MIN_ROUTE_EXAMPLES, train_head
from routebook.domain import ExampleFacts, HeadPrediction, ObservedOutcome, Source
from routebook.embed.sentence import SentenceTransformerEmbedder

NANO, BIG = "nano", "big"
CATALOG = Catalog(
    [
        ModelSpec(NANO, "test", 0.1, 0.4, 100.0, 128_000),
        ModelSpec(BIG, "test", 3.0, 15.0, 100.0, 128_000),
    ]
)
DIM = 8


def unit(direction: int, noise: float, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    v = rng.normal(0.0, noise, DIM)
    v[direction] += 1.0
    return (v / np.linalg.norm(v)).astype(np.float32)


def example(
    i: int,
    route: str | None = None,
    best_model: str | None = None,
    outcomes: tuple[ObservedOutcome, ...] = (),
    text: str = "a query",
) -> ExampleFacts:
    return ExampleFacts(i, text, route, Source.REFERENCE, best_model, outcomes)


def two_kinds(
    n: int, seed: int = 0
) -> tuple[npt.NDArray[np.float32], list[int], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """n vectors near axis 0 or axis 1 (alternating), their kinds, and one clean probe each."""
    rng = np.random.default_rng(seed)
    kinds = [i % 2 for i in range(n)]
    vectors = np.stack([unit(k, 0.3, rng) for k in kinds])
    return vectors, kinds, unit(0, 0.0, rng), unit(1, 0.0, rng)


def test_routes_are_learned_and_probabilities_sum_to_one() -> None:
    vectors, kinds, probe_a, probe_b = two_kinds(40)
    facts = [example(i, route="billing" if k == 0 else "shipping") for i, k in enumerate(kinds)]
    head = train_head(vectors, facts, CATALOG, generation=7)
    assert head is not None
    assert head.routes == ("billing", "shipping")
    assert (head.generation, head.trained_on) == (7, 40)
    a, b = head.predict(probe_a), head.predict(probe_b)
    assert isinstance(a, HeadPrediction)
    assert a.top_route is not None and a.top_route[0] == "billing" and a.top_route[1] > 0.9
    assert b.top_route is not None and b.top_route[0] == "shipping"
    assert sum(p for _, p in a.routes) == pytest.approx(1.0)
    assert a.generation == 7 and a.trained_on == 40


def test_inference_is_the_fitted_models_own() -> None:
    """Numpy's softmax of W x + b is scikit-learn's predict_proba, for three routes and two."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    rng = np.random.default_rng(1)
    for n_routes in (3, 2):
        labels = [f"r{i % n_routes}" for i in range(60)]
        vectors = np.stack([unit(i % n_routes, 0.8, rng) for i in range(60)])
        head = train_head(vectors, [example(i, route=r) for i, r in enumerate(labels)], CATALOG)
        assert head is not None
        reference = LogisticRegression(C=10.0, max_iter=3000, random_state=0).fit(
            vectors.astype(np.float64), np.asarray(labels, dtype=object)
        )
        probes = np.stack([unit(i % DIM, 0.5, rng) for i in range(5)])
        for probe, expected in zip(probes, reference.predict_proba(probes), strict=True):
            got = dict(head.predict(probe).routes)
            assert [got[str(c)] for c in reference.classes_] == pytest.approx(expected, abs=1e-9)


def test_model_success_from_soft_outcomes() -> None:
    """nano succeeds on the axis-0 kind and fails on the other; big always succeeds."""
    vectors, kinds, probe_a, probe_b = two_kinds(60)
    facts = [
        example(i, outcomes=(ObservedOutcome(NANO, 1.0 - k, 1), ObservedOutcome(BIG, 1.0, 2)))
        for i, k in enumerate(kinds)
    ]
    head = train_head(vectors, facts, CATALOG, model_c=10.0, min_model_examples=20)
    assert head is not None and head.models == (NANO, BIG) and head.routes == ()
    a, b = head.predict(probe_a), head.predict(probe_b)
    nano_a, nano_b = a.success_of(NANO), b.success_of(NANO)
    assert nano_a is not None and nano_b is not None
    assert nano_a > 0.8 > 0.2 > nano_b
    # One-sided labels: no regression, the smoothed rate (60.5 / 61) for every query.
    assert a.success_of(BIG) == pytest.approx(60.5 / 61) == b.success_of(BIG)
    assert a.routes == ()


def test_best_model_labels_say_who_fails() -> None:
    """`best_model = big` means nano failed on it; `best_model = nano` that both succeed."""
    vectors, kinds, probe_a, probe_b = two_kinds(60)
    facts = [example(i, best_model=NANO if k == 0 else BIG) for i, k in enumerate(kinds)]
    head = train_head(vectors, facts, CATALOG, model_c=10.0, min_model_examples=20)
    assert head is not None
    nano_a, nano_b = head.predict(probe_a).success_of(NANO), head.predict(probe_b).success_of(NANO)
    assert nano_a is not None and nano_b is not None and nano_a > 0.8 > 0.2 > nano_b


def test_prompt_length_is_a_feature() -> None:
    """Same vector for every example; only the length tells that long prompts defeat nano."""
    rng = np.random.default_rng(2)
    vectors = np.stack([unit(0, 0.05, rng) for _ in range(40)])
    texts = ["short question" if i % 2 else "a long question " * 40 for i in range(40)]
    facts = [
        example(
            i,
            text=t,
            outcomes=(ObservedOutcome(NANO, float(len(t) < 20), 1), ObservedOutcome(BIG, 1.0, 1)),
        )
        for i, t in enumerate(texts)
    ]
    head = train_head(vectors, facts, CATALOG, min_model_examples=20)
    assert head is not None
    short = head.predict(vectors[0], estimate_tokens("short question")).success_of(NANO)
    long = head.predict(vectors[0], estimate_tokens("a long question " * 40)).success_of(NANO)
    middle = head.predict(vectors[0]).success_of(NANO)  # no length: the training mean
    assert short is not None and long is not None and middle is not None
    assert short > middle > long
    assert math.isclose(middle, 0.5, abs_tol=0.15)


def test_nothing_to_learn_gives_no_head() -> None:
    vectors, kinds, _, _ = two_kinds(40)
    # No labels at all: facts without route, best_model or outcomes.
    assert train_head(vectors, [example(i) for i in range(40)], CATALOG) is None
    # One route only, and no model evidence.
    assert train_head(vectors, [example(i, route="only") for i in range(40)], CATALOG) is None
    # Too few labelled examples.
    few = MIN_ROUTE_EXAMPLES - 1
    facts = [example(i, route=f"r{k}", best_model=NANO) for i, k in enumerate(kinds[:few])]
    assert train_head(vectors[:few], facts, CATALOG) is None
    # An empty index.
    assert train_head(np.zeros((0, DIM), np.float32), [], CATALOG) is None
    with pytest.raises(ValueError, match="vectors"):
        train_head(vectors[:3], [example(0)], CATALOG)


def test_a_small_index_gets_a_route_head_but_no_success_head() -> None:
    """Outcomes are noisy: below MIN_MODEL_EXAMPLES the head predicts no model's success."""
    rng = np.random.default_rng(3)
    n = MIN_MODEL_EXAMPLES - 1
    vectors = np.stack([unit(i % 2, 0.3, rng) for i in range(n)])
    facts = [
        example(i, route=f"r{i % 2}", outcomes=(ObservedOutcome(NANO, float(i % 2), 1),))
        for i in range(n)
    ]
    head = train_head(vectors, facts, CATALOG)
    assert head is not None and head.models == () and head.routes == ("r0", "r1")
    assert head.predict(vectors[0]).success == ()
    more = np.vstack([vectors, vectors[:1]])
    grown = train_head(more, [*facts, facts[0]], CATALOG)
    assert grown is not None and grown.models == (NANO,)


def test_models_outside_the_head_are_left_to_the_constant_prior() -> None:
    """A catalog model with too little evidence is not in the head: it predicts nothing for it."""
    vectors, kinds, probe_a, _ = two_kinds(40)
    facts = [
        example(i, outcomes=(ObservedOutcome(NANO, float(k), 1),))
        if i >= 5
        else example(i, outcomes=(ObservedOutcome(NANO, float(k), 1), ObservedOutcome(BIG, 1, 1)))
        for i, k in enumerate(kinds)
    ]
    head = train_head(vectors, facts, CATALOG, min_model_examples=20)
    assert head is not None and head.models == (NANO,)
    assert head.predict(probe_a).success_of(BIG) is None


def test_a_head_on_real_utterances(embedder: SentenceTransformerEmbedder) -> None:
    """Through the real model: a paraphrase nobody indexed lands on the right route."""
    utterances = {
        "refund": [
            "I want my money back",
            "how do I get a refund",
            "refund my order please",
            "can I return this for a refund",
            "the item broke, I want a refund",
            "please reimburse my purchase",
            "give me back what I paid",
            "I was charged twice, refund one",
        ],
        "shipping": [
            "where is my package",
            "when will my order arrive",
            "track my parcel",
            "has my order shipped yet",
            "delivery is late",
            "what is the shipping status",
            "how long does delivery take",
            "my parcel has not arrived",
        ],
        "password": [
            "I forgot my password",
            "reset my password",
            "I cannot log in",
            "change my login password",
            "my account is locked",
            "how do I recover my account",
            "password reset link not working",
            "I cannot sign in to my account",
        ],
    }
    texts = [t for ts in utterances.values() for t in ts]
    facts = [
        example(i, route=route, best_model=NANO)
        for i, (route, t) in enumerate((r, t) for r, ts in utterances.items() for t in ts)
    ]
    head = train_head(embedder.embed(texts), facts, CATALOG)
    assert head is not None and set(head.routes) == set(utterances)
    probes = {
        "I'd like a reimbursement for the broken blender": "refund",
        "is my delivery on its way?": "shipping",
        "locked out, need a new password": "password",
    }
    for text, route in probes.items():
        top = head.predict(embedder.embed([text])[0], estimate_tokens(text)).top_route
        assert top is not None and top[0] == route, (text, top)


def layered(
    n: int, seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], list[int]]:
    """Vectors that say nothing (all the same direction, noise) and layer pools whose feature 5
    (of 12, on their own scales and offsets) tells the kind, as an inner layer can know what
    the last one pooled away."""
    rng = np.random.default_rng(seed)
    kinds = [i % 2 for i in range(n)]
    vectors = np.stack([unit(0, 0.3, rng) for _ in kinds])
    layers = rng.normal(0.0, 1.0, (n, 12)) * np.linspace(0.5, 40.0, 12) + 100.0
    layers[:, 5] += 80.0 * np.array(kinds)
    return vectors, layers.astype(np.float32), kinds


def test_a_layers_head_reads_the_layers_and_routes_still_read_the_vector() -> None:
    vectors, layers, kinds = layered(80)
    facts = [
        example(i, route=f"r{i % 3}", outcomes=(ObservedOutcome(NANO, 1.0 - k, 1),))
        for i, k in enumerate(kinds)
    ]
    head = train_head(vectors, facts, CATALOG, layers=layers, model_c=1.0, min_model_examples=20)
    plain = train_head(vectors, facts, CATALOG, model_c=1.0, min_model_examples=20)
    assert head is not None and plain is not None
    assert head.features == "layers" and head.reads_layers and plain.features == "vector"
    probe_vector = unit(0, 0.0, np.random.default_rng(9))
    kind0, kind1 = layers[0], layers[1]  # kinds alternate
    nano_0 = head.predict(probe_vector, layers=kind0).success_of(NANO)
    nano_1 = head.predict(probe_vector, layers=kind1).success_of(NANO)
    assert nano_0 is not None and nano_1 is not None and nano_0 > 0.8 > 0.2 > nano_1
    # The vector head cannot tell the kinds apart: both near the base rate.
    plain_0 = plain.predict(vectors[0]).success_of(NANO)
    plain_1 = plain.predict(vectors[1]).success_of(NANO)
    assert plain_0 is not None and plain_1 is not None and abs(plain_0 - plain_1) < 0.3
    # Routes are the vector's: the same for both kinds of layers.
    routes = head.predict(probe_vector, layers=kind0).routes
    assert len(routes) == 3 and routes == head.predict(probe_vector, layers=kind1).routes
    with pytest.raises(ValueError, match="layers"):
        head.predict(probe_vector)


def test_a_layers_head_standardises_as_it_learned() -> None:
    """predict's numpy is scikit-learn's fit on the standardised layers (plus the length
    feature, constant here), so a layer on a large scale or offset weighs as a small one."""
    from sklearn.linear_model import LogisticRegression

    vectors, layers, kinds = layered(80, seed=2)
    facts = [example(i, outcomes=(ObservedOutcome(NANO, 1.0 - k, 1),)) for i, k in enumerate(kinds)]
    head = train_head(vectors, facts, CATALOG, layers=layers, model_c=0.5, min_model_examples=20)
    assert head is not None
    mean = layers.astype(np.float64).mean(axis=0)
    standard = (layers - mean) / layers.astype(np.float64).std(axis=0)
    labels = 1.0 - np.array(kinds, dtype=np.float64)
    reference = LogisticRegression(C=0.5, max_iter=2000).fit(standard, labels)
    expected = reference.predict_proba(standard[:6])[:, 1]
    got = [head.predict(vectors[i], layers=layers[i]).success_of(NANO) for i in range(6)]
    assert got == pytest.approx(expected, abs=1e-3)


def test_layers_must_match_the_examples() -> None:
    vectors, layers, kinds = layered(40)
    facts = [
        example(i, outcomes=(ObservedOutcome(NANO, float(k), 1),)) for i, k in enumerate(kinds)
    ]
    with pytest.raises(ValueError, match="39 layer rows for 40 examples"):
        train_head(vectors, facts, CATALOG, layers=layers[:39])


def test_soft_labels_fit_as_two_weighted_rows_and_hard_ones_as_one() -> None:
    """Only labels strictly between 0 and 1 are split into a success and a failure row; the
    fit is the one on every row split (a 0/1 label's second row weighs nothing)."""
    from sklearn.linear_model import LogisticRegression

    from routebook.decide.head import _fit_success

    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 5))
    values = np.clip(np.round(rng.random(120) * 4) / 4, 0.0, 1.0)  # 0, .25, .5, .75, 1
    assert {0.0, 0.25, 1.0} <= set(values.tolist())
    w, b = _fit_success(x, values, 1.0, 0)
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(
        np.vstack([x, x]),
        np.concatenate([np.ones(120), np.zeros(120)]),
        sample_weight=np.concatenate([values, 1.0 - values]),
    )
    assert w == pytest.approx(reference.coef_[0], abs=1e-4)
    assert b == pytest.approx(reference.intercept_[0], abs=1e-4)
