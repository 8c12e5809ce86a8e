"""Per-model success estimates from the neighbours: a similarity-weighted vote with a prior.

Each neighbour gives, for each model, either a success value in [0, 1] or nothing:
- observed outcomes for that model count as they are (their mean quality);
- otherwise a `best_model = M` label says M and every pricier model succeed, cheaper ones fail
  (a model at M's own prices is neither: the label says nothing of it);
- otherwise the neighbour says nothing about that model.

The estimate is (prior * strength + sum(w * value)) / (strength + sum(w)), so a model with little
evidence stays near the prior instead of swinging on one neighbour. When the namespace has a
learned head (`decide/head.py`), its P(success) for the query is the prior, at `head_strength`:
the head says what the whole index suggests, the neighbours what the closest precedents did, and
a precedent recorded a moment ago counts at once. Routes are voted the same way: each route gets
the weight of its neighbours plus a strength (`route_head_strength`) times the head's
probability for it.

A precedent of this very query (similarity at least `SAME_QUERY_SIMILARITY`) counts each
report of a model on it: its weight is multiplied by the number of outcomes folded into its
mean, so a third failure of the same query moves the estimate as the first did. Other
neighbours count once however often they were reported: more reports of a paraphrase say
more about the paraphrase, not more about this query.

A precedent of this very query also caps the head's strength at the weight of such precedents
(their similarity weight, not their reports'), per model; one that carries a route leaves the
head out of the route vote. What this query itself did outweighs what the whole index suggests
for it. Without the cap a head at strength 10 outweighed an exact precedent ten to one, so a model
reported failing a query three times kept getting it, and an admin's label on an utterance
lost to the head when the utterance was asked word for word. Benchmark test queries have no
exact copy in their index, so the evaluations do not move (docs/evaluation.md, item 13).
"""

from __future__ import annotations

from collections.abc import Sequence

from routebook.catalog import Catalog
from routebook.domain import ExampleFacts, HeadPrediction, ModelEstimate, Neighbour

#: A neighbour at least this similar is the same query (up to the index's rounding: vectors are
#: kept in float16 past `approximate_index_above`); paraphrases score lower.
SAME_QUERY_SIMILARITY = 0.995


def neighbour_weight(similarity: float, floor: float, power: float) -> float:
    """0 at or below the floor, 1 at identity, sharpened by `power` so close precedents dominate."""
    if similarity <= floor:
        return 0.0
    return float(min(1.0, (similarity - floor) / (1.0 - floor)) ** power)


def evidence_for(facts: ExampleFacts, model: str, catalog: Catalog) -> float | None:
    for observed in facts.outcomes:
        if observed.model == model:
            return observed.mean_quality
    best = facts.best_model
    if best is None or best not in catalog or model not in catalog:
        return None
    if model == best:
        return 1.0
    mine, theirs = catalog.tier(model), catalog.tier(best)
    if mine == theirs:
        return None
    return 1.0 if mine > theirs else 0.0


def reports_of(facts: ExampleFacts, model: str) -> int:
    """How many reported outcomes of `model` an example's mean folds in (1 for a label)."""
    for observed in facts.outcomes:
        if observed.model == model:
            return max(1, observed.count)
    return 1


def estimate_models(
    neighbours: Sequence[Neighbour],
    catalog: Catalog,
    *,
    prior_success: float,
    prior_strength: float,
    quality_target: float,
    input_tokens: int,
    output_tokens: int,
    head: HeadPrediction | None = None,
    head_strength: float = 0.0,
) -> tuple[ModelEstimate, ...]:
    """One estimate per catalog model, cheapest first.

    The head's P(success) replaces the constant prior for the models it knows, when
    `head_strength` > 0; other models keep the constant prior.
    """
    estimates = []
    for spec in catalog.models:
        head_success = (
            head.success_of(spec.name) if head is not None and head_strength > 0 else None
        )
        weighted_sum = 0.0
        support = 0.0
        same_query = 0.0  # the weight of precedents of this very query
        for neighbour in neighbours:
            if neighbour.weight <= 0.0:
                continue
            value = evidence_for(neighbour.facts, spec.name, catalog)
            if value is None:
                continue
            weight = neighbour.weight
            if neighbour.similarity >= SAME_QUERY_SIMILARITY:
                # The cap is the precedent's weight, not its reports': the head then weighs as
                # one report, and every further report moves the estimate past it.
                same_query += weight
                weight *= reports_of(neighbour.facts, spec.name)
            weighted_sum += weight * value
            support += weight
        prior, strength = (
            (prior_success, prior_strength)
            if head_success is None
            else (head_success, min(head_strength, same_query) if same_query else head_strength)
        )
        success = (prior * strength + weighted_sum) / (strength + support)
        estimates.append(
            ModelEstimate(
                model=spec.name,
                success=success,
                support=support,
                estimated_cost_usd=spec.cost_usd(input_tokens, output_tokens),
                meets_target=success >= quality_target,
                head_success=head_success,
            )
        )
    return tuple(estimates)


def evidence_weight(
    neighbours: Sequence[Neighbour], catalog: Catalog, allowed: frozenset[str] | None = None
) -> float:
    """Weight of the neighbours that say something about at least one allowed model (all
    catalog models when `allowed` is None). Precedents that only tell how a model policy or a
    cooldown removed did are no evidence for the choice left, so they do not make a query warm.
    """
    names = catalog.names if allowed is None else [m for m in catalog.names if m in allowed]
    return sum(
        n.weight
        for n in neighbours
        if n.weight > 0 and any(evidence_for(n.facts, name, catalog) is not None for name in names)
    )


def vote_route(
    neighbours: Sequence[Neighbour],
    head: HeadPrediction | None = None,
    head_strength: float = 0.0,
) -> str | None:
    """The route with the most weight behind it: its neighbours' weight, plus `head_strength`
    times the head's probability for it, unless a precedent of this very query carries a route
    (an utterance's route is its label, not a noisy outcome); None when nothing carries one."""
    totals: dict[str, float] = {}
    same_query = False
    for n in neighbours:
        if n.facts.route and n.weight > 0:
            totals[n.facts.route] = totals.get(n.facts.route, 0.0) + n.weight
            same_query = same_query or n.similarity >= SAME_QUERY_SIMILARITY
    if head is not None and head_strength > 0 and not same_query:
        for route, p in head.routes:
            totals[route] = totals.get(route, 0.0) + head_strength * p
    if not totals:
        return None
    return max(totals.items(), key=lambda item: (item[1], item[0]))[0]


def head_support(head: HeadPrediction | None, head_strength: float) -> float:
    """What the head adds to the cold-start support test: `head_strength` times its top route's
    confidence above chance (0 for a head that spreads evenly over its R routes, the whole
    strength at probability 1). A query the head confidently places in a route is not out of
    scope even when its neighbours are a little far (CLINC150 train folds: in-scope accuracy at
    OOS recall 0.8 rose from 0.950 with the head's probability alone, or 0.928 with the
    neighbours' weight alone, to 0.958 with the sum). Measured from chance, not from 0, so an
    unsure head over a few routes (1/R is 0.25 for four) cannot make every query warm."""
    if head is None or head_strength <= 0:
        return 0.0
    top = head.top_route
    routes = len(head.routes)
    if top is None or routes < 2:
        return 0.0
    chance = 1.0 / routes
    return head_strength * max(0.0, (top[1] - chance) / (1.0 - chance))
