"""From neighbours to a Choice, within the policy envelope: an allowed override → OVERRIDE; a
model forced by policy → POLICY; cold start → CASCADE; otherwise the cheapest allowed model
whose estimate reaches the quality target (SEMANTIC), or the strongest allowed when none does.

"Cheapest" is this request's estimated cost (its prompt and answer lengths at each model's input
and output prices), so a long prompt goes to the model whose input is cheap even when the
catalog lists it above another; "strongest" is the catalog's order, by list price.

A namespace's learned head (`decide/head.py`), when the request carries its prediction, is the
prior of the neighbour vote and adds to the route vote and the cold-start support; without one
the rule is exactly the plain neighbour vote.

Estimates are made over the whole catalog (a label for a model policy removed still says the
cheaper models fail), and the choice is made among the allowed models only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from routebook.catalog import Catalog
from routebook.decide.cascade import cascade_plan
from routebook.decide.coldstart import cold_start_reason
from routebook.decide.estimate import (
    estimate_models,
    evidence_weight,
    head_support,
    neighbour_weight,
    vote_route,
)
from routebook.domain import (
    Choice,
    HeadPrediction,
    ModelEstimate,
    Neighbour,
    PolicyEffect,
    ReasonCode,
    Strategy,
)


@dataclass(frozen=True, slots=True)
class DecisionParams:
    """The tunables of the decision rule (calibrated by `routebook calibrate`)."""

    quality_target: float = 0.8
    cold_start_threshold: float = 0.55
    similarity_floor: float = 0.3
    min_support: float = 0.25
    prior_success: float = 0.5
    prior_strength: float = 0.25
    weight_power: float = 1.0
    #: "absolute": a model meets the target when its estimate reaches `quality_target`.
    #: "relative": when it reaches `quality_target` times the best allowed model's estimate,
    #: i.e. "keeps that share of the quality the best model is expected to give". Relative
    #: spends strong calls where they are expected to gain most, not where the cheap model is
    #: merely unlikely to succeed (a query every model fails stays cheap); on MMLU's dev index
    #: this raised APGR from 0.58 to 0.66 (docs/evaluation.md).
    target_mode: str = "absolute"
    #: Weight of the head's P(success) as the prior of each model's estimate, in neighbour-weight
    #: units (a neighbour at similarity 1 weighs 1); 0 ignores the head. Cross-validated on the
    #: GSM8K and MMLU dev indexes with k 100, power 2, floor 0: 10 (GSM8K APGR 0.646 -> 0.691;
    #: MMLU unchanged, 0.658). Used only when the request carries a head prediction.
    head_strength: float = 10.0
    #: Weight of the head's route probabilities in the route vote and the cold-start support;
    #: 0 ignores them. CLINC150 / Banking77 train folds (k 20-50, power 8): 1-3 best.
    route_head_strength: float = 3.0
    #: The quality a cascade's answer must reach to be accepted (the plan's `min_quality`);
    #: None: `quality_target`. Apart because a target tuned on estimates (calibrate may choose
    #: 0.14 in absolute mode) is no bar for a grader's score.
    cascade_min_quality: float | None = None

    @property
    def cascade_bar(self) -> float:
        """The quality a cascade's answer must reach: `cascade_min_quality`, else the target."""
        return self.quality_target if self.cascade_min_quality is None else self.cascade_min_quality


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """Everything one decision needs; `neighbours` come most similar first, weights unset."""

    neighbours: Sequence[Neighbour]
    catalog: Catalog
    params: DecisionParams
    index_size: int
    input_tokens: int
    output_tokens: int
    #: The models policy allows (None: all). Must leave at least one.
    allowed: frozenset[str] | None = None
    #: A model the caller asked for, already checked against policy.
    override: str | None = None
    #: A model policy alone picks (e.g. budget exhausted).
    forced: str | None = None
    policy: tuple[PolicyEffect, ...] = field(default_factory=tuple)
    #: The namespace head's prediction for this query (None: no head, the plain vote).
    head: HeadPrediction | None = None


def decide(request: DecisionRequest) -> Choice:
    params = request.params
    if len(request.catalog) == 0:
        raise ValueError("cannot decide with an empty catalog")
    allowed = request.allowed
    if allowed is not None and not allowed & set(request.catalog.names):
        raise ValueError("policy left no model to choose from")
    neighbours = tuple(
        replace(
            n,
            weight=neighbour_weight(n.similarity, params.similarity_floor, params.weight_power),
        )
        for n in request.neighbours
    )
    estimates = estimate_models(
        neighbours,
        request.catalog,
        prior_success=params.prior_success,
        prior_strength=params.prior_strength,
        quality_target=params.quality_target,
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        head=request.head,
        head_strength=params.head_strength,
    )
    if allowed is not None:
        estimates = tuple(replace(e, allowed=e.model in allowed) for e in estimates)
    bar = _target_bar(params, estimates)
    if bar != params.quality_target:
        estimates = tuple(replace(e, meets_target=e.success >= bar) for e in estimates)
    candidates = tuple(e for e in estimates if e.allowed)
    top_similarity = neighbours[0].similarity if neighbours else 0.0
    from_head = head_support(request.head, params.route_head_strength)
    evidence = evidence_weight(neighbours, request.catalog, allowed)
    support = evidence + from_head
    route = vote_route(neighbours, request.head, params.route_head_strength)
    cold = cold_start_reason(
        index_size=request.index_size,
        top_similarity=top_similarity,
        threshold=params.cold_start_threshold,
        support=support,
        min_support=params.min_support,
    )
    pinned = request.override or request.forced
    if pinned is not None:
        choice = _pinned(pinned, request.override is not None, neighbours, estimates, params, route)
    elif cold is not None:
        choice = _cascade(cold, neighbours, candidates, params, top_similarity, support, from_head)
    else:
        choice = _semantic(neighbours, candidates, params, top_similarity, evidence, route)
    used = from_head > 0 or any(e.head_success is not None for e in estimates)
    if used and choice.strategy is Strategy.SEMANTIC:
        choice = replace(choice, reason=f"{choice.reason}; {_head_note(request.head)}")
    return replace(
        choice,
        estimates=estimates,
        top_similarity=top_similarity,
        policy=request.policy,
        head=request.head if used else None,
    )


def _head_note(head: HeadPrediction | None) -> str:
    """The head's part in the reason, so a reader sees it was not the neighbours alone."""
    if head is None:
        return ""
    parts = [f"{m} {p:.2f}" for m, p in head.success]
    text = f"the index's head (generation {head.generation})"
    if parts:
        text += f" was the prior: success {', '.join(parts)}"
    top = head.top_route
    if top is not None:
        text += f"{';' if parts else ''} put the query in route {top[0]} at {top[1]:.2f}"
    return text


def _target_bar(params: DecisionParams, estimates: Sequence[ModelEstimate]) -> float:
    """The estimate a model must reach: the target itself, or its share of the best allowed."""
    if params.target_mode == "absolute":
        return params.quality_target
    if params.target_mode != "relative":
        raise ValueError(
            f"target_mode must be 'absolute' or 'relative', not {params.target_mode!r}"
        )
    best = max((e.success for e in estimates if e.allowed), default=0.0)
    return params.quality_target * best


def _pinned(
    model: str,
    is_override: bool,
    neighbours: tuple[Neighbour, ...],
    estimates: tuple[ModelEstimate, ...],
    params: DecisionParams,
    route: str | None,
) -> Choice:
    """The caller (OVERRIDE) or policy (POLICY) named the model; the evidence is still shown."""
    estimate = next(e for e in estimates if e.model == model)
    if is_override:
        strategy, code = Strategy.OVERRIDE, ReasonCode.OVERRIDE
        reason = f"the caller asked for {model} and policy allows it"
    else:
        strategy, code = Strategy.POLICY, ReasonCode.BUDGET_EXHAUSTED
        reason = f"budget exhausted: policy routes to the cheapest allowed model, {model}"
    return Choice(
        model=model,
        route=route,
        strategy=strategy,
        confidence=estimate.success,
        estimated_cost_usd=estimate.estimated_cost_usd,
        reason_code=code,
        reason=f"{reason}; its estimated success is {estimate.success:.2f}",
        neighbours=neighbours,
        estimates=estimates,
        cascade=None,
        quality_target=params.quality_target,
        top_similarity=0.0,
    )


def _cascade(
    reason_code: ReasonCode,
    neighbours: tuple[Neighbour, ...],
    estimates: tuple[ModelEstimate, ...],
    params: DecisionParams,
    top_similarity: float,
    support: float,
    from_head: float,
) -> Choice:
    plan = cascade_plan(estimates, params.cascade_bar)
    first = next(e for e in estimates if e.model == plan.steps[0].model)
    why = {
        ReasonCode.COLD_EMPTY_INDEX: "the namespace has no examples yet",
        ReasonCode.COLD_LOW_SIMILARITY: (
            f"the closest precedent has similarity {top_similarity:.2f}, under the cold-start "
            f"threshold {params.cold_start_threshold:.2f}"
        ),
        ReasonCode.COLD_LOW_SUPPORT: (
            f"the precedents carry weight {support:.2f}"
            + (f" ({from_head:.2f} of it the head's confidence)" if from_head > 0 else "")
            + f", under the minimum {params.min_support:.2f}"
        ),
    }[reason_code]
    return Choice(
        model=first.model,
        route=None,
        strategy=Strategy.CASCADE,
        confidence=first.success,
        estimated_cost_usd=first.estimated_cost_usd,
        reason_code=reason_code,
        reason=f"cold start: {why}; cascade over {len(plan.steps)} models, cheapest first",
        neighbours=neighbours,
        estimates=estimates,
        cascade=plan,
        quality_target=params.quality_target,
        top_similarity=top_similarity,
    )


def _semantic(
    neighbours: tuple[Neighbour, ...],
    estimates: tuple[ModelEstimate, ...],
    params: DecisionParams,
    top_similarity: float,
    evidence: float,
    route: str | None,
) -> Choice:
    """`evidence`: the weight of the neighbours that say something about an allowed model."""
    meeting = [e for e in estimates if e.meets_target]
    backing = sum(1 for n in neighbours if n.weight > 0)
    if meeting:
        chosen = min(meeting, key=lambda e: e.estimated_cost_usd)  # ties: the catalog's order
        code = ReasonCode.CHEAPEST_MEETS_TARGET
        goal = (
            f"the target {params.quality_target:.2f}"
            if params.target_mode == "absolute"
            else f"{params.quality_target:.2f} of the best estimate "
            f"{max(e.success for e in estimates):.2f}"
        )
        why = (
            f"{chosen.model} is the cheapest model whose estimated success {chosen.success:.2f} "
            f"reaches {goal}"
        )
    else:
        chosen = estimates[-1]
        code = ReasonCode.NONE_MEETS_TARGET
        best = max(estimates, key=lambda e: e.success)
        why = (
            f"no model reaches the target {params.quality_target:.2f} (best: {best.model} at "
            f"{best.success:.2f}), so the strongest allowed model {chosen.model}"
        )
    return Choice(
        model=chosen.model,
        route=route,
        strategy=Strategy.SEMANTIC,
        confidence=chosen.success,
        estimated_cost_usd=chosen.estimated_cost_usd,
        reason_code=code,
        reason=(
            f"{why}; {backing} neighbours with weight {evidence:.2f}, "
            f"top similarity {top_similarity:.2f}"
        ),
        neighbours=neighbours,
        estimates=estimates,
        cascade=None,
        quality_target=params.quality_target,
        top_similarity=top_similarity,
    )
