"""Evaluate routers on outcome data (prompt + per-model quality): curves, APGR, CPT, savings.

For each router (routebook's decision rule, the kNN vote, the linear head) the quality target
is swept over every distinct estimate (`jobs.sweep`), giving a cost-quality curve. The cost axis
of RouteLLM's figures is the share of strong-model calls; routebook's cold-start queries may make
two calls (a cascade), so the axis here is the *strong-call equivalent*: mean cost per query,
with each model priced at its mean call cost over the test set, rescaled so that the cheapest
model alone is 0 and the strongest alone is 1. For a router that makes one call per query and two
models this is exactly RouteLLM's share of strong calls; a cascade's wasted cheap call counts at
its price. With more than two models the same axis is "normalised dollars", and APGR/CPT are
measured between the cheapest and the strongest model (see docs/evaluation.md).

Every figure gets a percentile-bootstrap 95% interval over test queries (`metrics.bootstrap_ci`;
the same seed gives every router the same resamples) and the random router at the same cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routebook.catalog import Catalog
from routebook.decide import DecisionParams
from routebook.domain import Choice, Strategy
from routebook.jobs import metrics, sweep
from routebook.jobs.metrics import ConfidenceInterval, CostPoint, CurvePoint
from routebook.jobs.replay import HeadSummary

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Share of the strongest model's quality the cost saving is measured at (the issue's 95%).
SAVING_AT = 0.95


@dataclass(frozen=True, slots=True)
class Operating:
    """The router at one quality target: what it answers with, what it pays."""

    target: float
    quality: float
    relative_quality: float
    strong_equivalent: float
    cost_per_query: float
    cold_share: float
    answer_share: dict[str, float]
    call_share: dict[str, float]
    random_quality: float


@dataclass(frozen=True, slots=True)
class RouterFigures:
    name: str
    apgr: ConfidenceInterval
    cpt50: ConfidenceInterval | None
    cpt80: ConfidenceInterval | None
    saving95: ConfidenceInterval | None
    operating: Operating
    operating_quality: ConfidenceInterval
    operating_random: ConfidenceInterval
    curve: tuple[tuple[float, float, float], ...]
    """(strong-call equivalent, mean quality, mean $ per query), highest target first."""


@dataclass(frozen=True, slots=True)
class Reference:
    """What any router on this data is measured against."""

    models: tuple[str, ...]
    mean_quality: dict[str, float]
    mean_cost: dict[str, float]
    oracle_quality: float
    oracle_apgr: float | None
    random_apgr: float | None
    random_cpt50: float | None
    random_cpt80: float | None
    random_saving95: float | None
    oracle_curve: tuple[tuple[float, float], ...]
    apgr_undefined: str | None = None
    """Why APGR and CPT are not defined on this data (every one of them is then None, the
    routers' too), or None when they are."""


@dataclass(frozen=True, slots=True)
class OutcomeEvaluation:
    n_index: int
    n_test: int
    k: int
    params: DecisionParams
    reference: Reference
    routers: tuple[RouterFigures, ...]
    #: The namespace head routebook's rows decided with (the baselines have their own).
    head: HeadSummary


@dataclass(frozen=True, slots=True)
class Scored:
    """One router's view of the test set: estimates per model and which queries go cold."""

    name: str
    estimates: FloatArray
    cold: BoolArray
    #: The cascades' fixed acceptance bar (`cascade_min_quality`); None: the target.
    cascade_bar: float | None = None


def as_keys(estimates: FloatArray, target_mode: str) -> FloatArray:
    """What is compared with the target: decide's estimates or their share of the best one
    ("relative"); for the baselines, "gain": 1 minus how far below the best estimate a model is,
    i.e. ranking queries by the expected gain of the stronger model, as RouteLLM's routers do."""
    if target_mode == "absolute":
        return estimates
    if target_mode == "gain":
        gain: FloatArray = 1.0 - (estimates.max(axis=1, keepdims=True) - estimates)
        return gain
    best = estimates.max(axis=1, keepdims=True)
    keys: FloatArray = np.divide(estimates, best, out=np.ones_like(estimates), where=best > 0)
    return keys


def scored_from_choices(
    name: str, choices: list[Choice], catalog: Catalog, params: DecisionParams
) -> Scored:
    """A router's view from `decide`'s choices under `params`: what its estimates are compared
    with the target as (`target_mode`), and the bar its cascades accept at."""
    estimates = np.array([[e.success for e in c.estimates] for c in choices], dtype=np.float64)
    cold = np.array([c.strategy is Strategy.CASCADE for c in choices], dtype=bool)
    keys = as_keys(estimates.reshape(len(choices), len(catalog)), params.target_mode)
    return Scored(name=name, estimates=keys, cold=cold, cascade_bar=params.cascade_min_quality)


def share_axis_problem(quality: FloatArray, call_cost: FloatArray) -> str | None:
    """Why the share-of-strong-calls axis, and with it APGR and CPT, does not exist on this
    data, or None when it does. The axis runs from the cheapest model alone (0) to the
    strongest alone (1), the catalog's first and last, so it needs two models and the last to
    cost more than the first on these queries."""
    if quality.shape[1] < 2:
        return "one model: there is no cheaper and stronger model to route between"
    mean = call_cost.mean(axis=0)
    if not mean[0] < mean[-1]:
        return (
            "the catalog's strongest (last) model costs no more per query than its cheapest "
            "(first) on these queries: there is no share of strong calls to measure"
        )
    return None


class Priced:
    """The test set's qualities and costs, shared by every router.

    `call_cost` is what each call is charged; `decided_cost`, when given, what `decide`
    compared to find each query's cheapest model (its own assumed answer length, which may not
    be the one the calls are priced at)."""

    def __init__(
        self, quality: FloatArray, call_cost: FloatArray, decided_cost: FloatArray | None = None
    ) -> None:
        self.quality = quality
        self.call_cost = call_cost
        strongest = float(call_cost.mean(axis=0)[-1])
        unit = call_cost.mean(axis=0) / strongest if strongest > 0 else np.ones(quality.shape[1])
        self.unit_cost = np.broadcast_to(unit, quality.shape).copy()
        #: Each query's models cheapest first for that query, the order `decide` uses.
        self.order = sweep.cost_order(call_cost if decided_cost is None else decided_cost)
        self.cheap_unit = float(unit[0])
        self.n = quality.shape[0]
        #: The share-of-strong-calls axis needs the strongest model to cost more than the
        #: cheapest: with one model, or equal prices, APGR and CPT are undefined (reported
        #: as such, not as a crash).
        self.share_axis = share_axis_problem(quality, call_cost) is None


def _policy(scored: Scored, priced: Priced, cost: FloatArray) -> sweep.Policy:
    return sweep.policy(
        scored.estimates, scored.cold, priced.quality, cost, priced.order, scored.cascade_bar
    )


def _weights(idx: npt.NDArray[np.int64], n: int) -> FloatArray:
    return np.bincount(idx, minlength=n).astype(np.float64)


class _RouterCurves:
    """Events for the share axis and the dollar axis of one router, and figures from them."""

    def __init__(self, scored: Scored, priced: Priced) -> None:
        self.priced = priced
        self.unit = sweep.events(_policy(scored, priced, priced.unit_cost))
        self.dollars = sweep.events(_policy(scored, priced, priced.call_cost))

    def share_points(self, w: FloatArray | None) -> tuple[list[CurvePoint], float, float]:
        ww = np.ones(self.priced.n) if w is None else w
        means = ww @ self.priced.quality / ww.sum()
        if not self.priced.share_axis:
            return [], float(means[0]), float(means[-1])
        c = sweep.curve(self.unit, w)
        x = (c.cost - self.priced.cheap_unit) / (1.0 - self.priced.cheap_unit)
        # Unclipped above 1 (a cascade may spend more than the strong model alone; the metrics
        # cut the curve there), and in the order the sweep walks, cheapest setting first, so
        # that points tied on the share axis keep that order.
        points = [
            CurvePoint(float(max(s, 0.0)), float(q))
            for s, q in zip(x[::-1], c.quality[::-1], strict=True)
        ]
        return points, float(means[0]), float(means[-1])

    def cost_points(self, w: FloatArray | None) -> tuple[list[CostPoint], float, float]:
        c = sweep.curve(self.dollars, w)
        ww = np.ones(self.priced.n) if w is None else w
        strong_q = float(ww @ self.priced.quality[:, -1] / ww.sum())
        strong_c = float(ww @ self.priced.call_cost[:, -1] / ww.sum())
        points = [CostPoint(float(a), float(b)) for a, b in zip(c.cost, c.quality, strict=True)]
        points.append(CostPoint(strong_c, strong_q))
        return points, strong_c, strong_q


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _ci(
    statistic: Callable[[npt.NDArray[np.int64]], float], n: int, resamples: int, seed: int
) -> ConfidenceInterval:
    return metrics.bootstrap_ci(statistic, np.arange(n), n_resamples=resamples, seed=seed)


def _optional_ci(
    statistic: Callable[[npt.NDArray[np.int64]], float], n: int, resamples: int, seed: int
) -> ConfidenceInterval | None:
    ci = _ci(statistic, n, resamples, seed)
    return None if math.isnan(ci.estimate) else ci


def evaluate_router(
    scored: Scored,
    priced: Priced,
    models: tuple[str, ...],
    target: float,
    resamples: int,
    seed: int,
) -> RouterFigures:
    curves = _RouterCurves(scored, priced)
    n = priced.n

    def apgr_of(idx: npt.NDArray[np.int64]) -> float:
        points, weak, strong = curves.share_points(_weights(idx, n))
        if weak == strong or not priced.share_axis:
            return math.nan
        return metrics.apgr(points, weak, strong)

    def cpt_of(level: float) -> Callable[[npt.NDArray[np.int64]], float]:
        def stat(idx: npt.NDArray[np.int64]) -> float:
            points, weak, strong = curves.share_points(_weights(idx, n))
            if weak == strong or not priced.share_axis:
                return math.nan
            return _nan(metrics.cpt(points, weak, strong, level))

        return stat

    def saving_of(idx: npt.NDArray[np.int64]) -> float:
        points, strong_c, strong_q = curves.cost_points(_weights(idx, n))
        if strong_c <= 0:  # a free strongest model: nothing to save against
            return math.nan
        return _nan(metrics.cost_saving_at_quality(points, strong_c, strong_q, SAVING_AT))

    p_unit = _policy(scored, priced, priced.unit_cost)
    p_dollars = _policy(scored, priced, priced.call_cost)
    column = sweep.columns_at(p_unit, target)  # the same columns in both: keys ignore cost
    rows = np.arange(n)
    final = p_unit.model[rows, column]
    answer_q = p_unit.quality[rows, column]
    unit_paid = p_unit.cost[rows, column]
    dollars = p_dollars.cost[rows, column]
    strong_equiv = (
        (unit_paid - priced.cheap_unit) / (1.0 - priced.cheap_unit)
        if priced.share_axis
        else np.full(n, math.nan)
    )

    def op_quality(idx: npt.NDArray[np.int64]) -> float:
        return float(answer_q[idx].mean())

    def op_random(idx: npt.NDArray[np.int64]) -> float:
        share = float(np.clip(strong_equiv[idx].mean(), 0.0, 1.0))
        q = priced.quality[idx]
        return share * float(q[:, -1].mean()) + (1 - share) * float(q[:, 0].mean())

    # A cascade calls every model up to its final one in the query's order; a semantic query
    # calls only its model.
    position = np.argsort(priced.order, axis=1)  # position[i, j]: model j's place in query i's
    called = (position <= position[rows, final][:, None]) & scored.cold[:, None]
    called[rows, final] = True
    calls = called.sum(axis=0).astype(np.float64)
    answers = np.bincount(final, minlength=len(models)).astype(np.float64)
    strong_mean = float(priced.quality[:, -1].mean())
    share = float(np.clip(strong_equiv.mean(), 0.0, 1.0))
    operating = Operating(
        target=target,
        quality=float(answer_q.mean()),
        relative_quality=float(answer_q.mean()) / strong_mean if strong_mean else math.nan,
        strong_equivalent=float(strong_equiv.mean()),
        cost_per_query=float(dollars.mean()),
        cold_share=float(scored.cold.mean()),
        answer_share={m: float(answers[j] / n) for j, m in enumerate(models)},
        call_share={m: float(calls[j] / n) for j, m in enumerate(models)},
        random_quality=(
            metrics.random_router_quality(priced.quality[:, -1], priced.quality[:, 0], share)
            if priced.share_axis
            else math.nan
        ),
    )
    points, _, _ = curves.share_points(None)
    dollar_curve = sweep.curve(curves.dollars)
    dollar_costs = dollar_curve.cost if points else np.zeros(0)
    return RouterFigures(
        name=scored.name,
        apgr=_ci(apgr_of, n, resamples, seed),
        cpt50=_optional_ci(cpt_of(0.5), n, resamples, seed),
        cpt80=_optional_ci(cpt_of(0.8), n, resamples, seed),
        saving95=_optional_ci(saving_of, n, resamples, seed),
        operating=operating,
        operating_quality=_ci(op_quality, n, resamples, seed),
        operating_random=_ci(op_random, n, resamples, seed),
        curve=tuple(  # highest target first, as the dollar curve
            (p.strong_share, p.quality, float(c))
            for p, c in zip(points[::-1], dollar_costs, strict=True)
        ),
    )


def reference(quality: FloatArray, call_cost: FloatArray, models: tuple[str, ...]) -> Reference:
    """The random router and the oracle on this data.

    APGR and CPT need the share axis and a quality gap between its ends (PGR divides by it).
    Without them the routers' figures are undefined, and so are these: the diagonal's 0.5,
    50% and 80% are the random router's figures *on that axis*, and with two models at equal
    prices, ordered by name, the oracle's APGR came out negative (-0.86) against a "strong"
    model that was the weaker one."""
    strong, weak = quality[:, -1], quality[:, 0]
    two = quality.shape[1] == 2
    best = quality.max(axis=1)
    gap = float(strong.mean() - weak.mean())
    undefined = share_axis_problem(quality, call_cost)
    if undefined is None and gap == 0:
        undefined = (
            "the cheapest and the strongest model have the same mean quality on these queries: "
            "there is no gap for a router to recover"
        )
    defined = undefined is None
    shares = [i / 100 for i in range(101)]
    oracle_points = metrics.oracle_curve(strong, weak, shares) if two and defined else []
    random_line = [
        CostPoint(float(call_cost[:, 0].mean()), float(weak.mean())),
        CostPoint(float(call_cost[:, -1].mean()), float(strong.mean())),
    ]
    return Reference(
        models=models,
        mean_quality={m: float(quality[:, j].mean()) for j, m in enumerate(models)},
        mean_cost={m: float(call_cost[:, j].mean()) for j, m in enumerate(models)},
        oracle_quality=float(best.mean()),
        oracle_apgr=(
            metrics.apgr(oracle_points, float(weak.mean()), float(strong.mean()))
            if two and defined
            else None
        ),
        random_apgr=(
            metrics.apgr(
                metrics.random_router_curve(strong, weak), float(weak.mean()), float(strong.mean())
            )
            if defined
            else None
        ),
        random_cpt50=0.5 if defined else None,
        random_cpt80=0.8 if defined else None,
        random_saving95=(
            metrics.cost_saving_at_quality(
                random_line, float(call_cost[:, -1].mean()), float(strong.mean()), SAVING_AT
            )
            if call_cost[:, -1].mean() > 0
            else None
        ),
        oracle_curve=tuple((p.strong_share, p.quality) for p in oracle_points),
        apgr_undefined=undefined,
    )


def check_matches_decide(scored: Scored, choices: list[Choice], catalog: Catalog) -> None:
    """The sweep's choice at the decide target must be decide's own choice, query by query.

    This guards the one shortcut the evaluation takes: it derives every other target's choices
    from the estimates instead of calling decide once per target.
    """
    if not choices:
        return
    target = choices[0].quality_target
    n = len(choices)
    ones = np.ones((n, len(catalog)))
    costs = np.array([[e.estimated_cost_usd for e in c.estimates] for c in choices])
    order = sweep.cost_order(costs)
    picked = sweep.choices_at(
        sweep.policy(scored.estimates, scored.cold, ones, ones, order), target
    )
    for i, choice in enumerate(choices):
        if choice.strategy is Strategy.SEMANTIC and catalog.rank(choice.model) != picked[i]:
            raise RuntimeError(
                f"query {i}: decide chose {choice.model} but the sweep picks "
                f"{catalog.names[picked[i]]}; the sweep no longer mirrors decide's rule"
            )
