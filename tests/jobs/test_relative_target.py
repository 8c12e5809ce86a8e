"""The relative quality target (decide's `target_mode="relative"`) and the sweep's mirror of it.

Two models, weak (cheap) and strong. A neighbour's recorded outcomes set the estimates:
with one neighbour of weight w = 1 (similarity 1) and the prior 0.5 at strength 0.25,
estimate = (0.5 * 0.25 + q) / 1.25.
  weak q = 0.2 -> 0.26; strong q = 0.3 -> 0.34   (both likely fail)
Absolute target 0.8: nobody reaches it -> the strongest model (NONE_MEETS_TARGET).
Relative target 0.8: the bar is 0.8 * 0.34 = 0.272; weak's 0.26 misses it -> strong;
relative target 0.75: bar 0.255 -> weak is good enough: it keeps 76% of what strong would give.
"""

from __future__ import annotations

import numpy as np
import pytest

from routebook.catalog import Catalog, ModelSpec
from routebook.decide import DecisionParams, DecisionRequest, decide
from routebook.domain import ExampleFacts, Neighbour, ObservedOutcome, ReasonCode, Source
from routebook.jobs import sweep
from routebook.jobs.outcome_eval import as_keys

CATALOG = Catalog(
    [ModelSpec("weak", "t", 0.1, 0.1, 1, 1000), ModelSpec("strong", "t", 10, 30, 1, 1000)]
)


def _request(weak: float, strong: float, **params: object) -> DecisionRequest:
    facts = ExampleFacts(
        example_id=1,
        text="x",
        route=None,
        source=Source.HISTORY,
        best_model=None,
        outcomes=(ObservedOutcome("weak", weak, 1), ObservedOutcome("strong", strong, 1)),
    )
    return DecisionRequest(
        neighbours=[Neighbour(facts=facts, similarity=1.0)],
        catalog=CATALOG,
        params=DecisionParams(**params),  # type: ignore[arg-type]
        index_size=1,
        input_tokens=10,
        output_tokens=10,
    )


def test_absolute_target_sends_a_hopeless_query_to_the_strongest() -> None:
    choice = decide(_request(0.2, 0.3))
    assert [e.success for e in choice.estimates] == pytest.approx([0.26, 0.34])
    assert choice.model == "strong"
    assert choice.reason_code is ReasonCode.NONE_MEETS_TARGET


def test_relative_target_compares_with_the_best_estimate() -> None:
    strict = decide(_request(0.2, 0.3, target_mode="relative", quality_target=0.8))
    assert strict.model == "strong"
    assert [e.meets_target for e in strict.estimates] == [False, True]
    loose = decide(_request(0.2, 0.3, target_mode="relative", quality_target=0.75))
    assert loose.model == "weak"
    assert loose.reason_code is ReasonCode.CHEAPEST_MEETS_TARGET
    assert "0.75 of the best estimate 0.34" in loose.reason


def test_unknown_target_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="target_mode"):
        decide(_request(0.2, 0.3, target_mode="sideways"))


def test_sweep_keys_mirror_decide_in_both_modes() -> None:
    rng = np.random.default_rng(5)
    cases = rng.random((40, 2))
    for mode in ("absolute", "relative"):
        for target in (0.3, 0.6, 0.8, 0.95):
            choices = [
                decide(_request(w, s, target_mode=mode, quality_target=target)) for w, s in cases
            ]
            estimates = np.array([[e.success for e in c.estimates] for c in choices])
            ones = np.ones_like(estimates)
            keys = as_keys(estimates, mode)
            picked = sweep.choices_at(
                sweep.policy(keys, np.zeros(len(cases), dtype=bool), ones, ones), target
            )
            assert [CATALOG.names[j] for j in picked] == [c.model for c in choices]
