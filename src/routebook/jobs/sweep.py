"""The whole cost-quality curve of a router from one pass of decisions, by sweeping the target.

Why not call the router once per threshold: a kNN estimate takes as many distinct values as
there are queries, so an exact sweep is thousands of settings. Instead every query is described
by a step function of the quality target t:

- a SEMANTIC query answers with the cheapest model whose estimate reaches t, else the strongest
  (exactly `decide`'s rule), so model j answers for t in (max est[<j], max est[<=j]];
- a CASCADE (cold-start) query tries models cheapest first and accepts the first answer whose
  recorded quality reaches t (the plan's `min_quality` is the target), paying every attempt;
  with a fixed acceptance bar (`cascade_min_quality`) it accepts the first reaching the bar
  instead, whatever t, so its answer is one point of every curve.

"Cheapest" is this query's cost, as in `decide`: with a long prompt a model with dear output and
cheap input can cost less than one listed below it. Columns then follow each query's own order
(`order`), with one more column for the fallback, the strongest model, wherever it stands.

Both are "the first model j whose key reaches t" with keys = running maximum of the estimates
(or of the recorded qualities). Lowering t past a key switches that query to a cheaper model, so
the totals at every distinct key follow from one sorted cumulative sum of per-query changes
("events"). Weighting events by how often each query was drawn gives a bootstrap resample at the
cost of one more cumulative sum, which keeps 1,000 resamples cheap.

Thresholds are the distinct keys themselves, never quantiles: kNN scores tie a lot, and a
decile split on tied scores yields empty or merged bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-query step functions: column j answers when t lies in (keys[j-1], keys[j]].

    `keys` rows are non-decreasing and the last column is +inf (the fallback);
    `quality[i, j]` and `cost[i, j]` are what query i gets and pays when column j is final, and
    `model[i, j]` is the catalog index of the model column j stands for.
    """

    keys: FloatArray
    quality: FloatArray
    cost: FloatArray
    model: IntArray


def policy(
    estimates: FloatArray,
    cold: BoolArray,
    quality: FloatArray,
    call_cost: FloatArray,
    order: IntArray | None = None,
    cascade_bar: float | None = None,
) -> Policy:
    """Build the step functions from decide's estimates, its cold flags and the recorded outcomes.

    All arrays are (n_queries, n_models) with models in catalog order (the last the strongest),
    except `cold` (n_queries,). `order[i]` lists query i's models cheapest first for that query
    (None: the catalog order for every query). `cascade_bar`: the cascades' fixed acceptance
    bar (None: the target is the bar, as `decide` has it without `cascade_min_quality`).
    """
    built = _policy(estimates, cold, quality, call_cost, order)
    return built if cascade_bar is None else _fixed_bar(built, cold, cascade_bar)


def _fixed_bar(p: Policy, cold: BoolArray, bar: float) -> Policy:
    """Cold rows answered by their first column whose recorded quality reaches `bar` (else the
    last), at every target: keys -inf before it and +inf from it on, and the columns after it
    copies of it, so that the all-strongest start of the sweep has cascades there already."""
    accepted = p.quality >= bar
    accepted[:, -1] = True
    final = np.argmax(accepted, axis=1)
    rows = np.flatnonzero(cold)
    after = np.arange(p.quality.shape[1])[None, :] >= final[rows][:, None]
    keys, quality, cost, model = p.keys.copy(), p.quality.copy(), p.cost.copy(), p.model.copy()
    keys[rows] = np.where(after, np.inf, -np.inf)
    for values in (quality, cost, model):
        values[rows] = np.where(after, values[rows, final[rows]][:, None], values[rows])
    return Policy(keys=keys, quality=quality, cost=cost, model=model)


def _policy(
    estimates: FloatArray,
    cold: BoolArray,
    quality: FloatArray,
    call_cost: FloatArray,
    order: IntArray | None,
) -> Policy:
    n, m = quality.shape
    if order is None or bool((order == np.arange(m)).all()):
        source = np.where(cold[:, None], quality, estimates)
        keys = np.maximum.accumulate(source, axis=1)
        keys[:, m - 1] = np.inf
        cost = np.where(cold[:, None], np.cumsum(call_cost, axis=1), call_cost)
        model = np.broadcast_to(np.arange(m, dtype=np.int64), (n, m)).copy()
        return Policy(keys=keys, quality=quality.astype(np.float64), cost=cost, model=model)
    rows = np.arange(n)
    by_row = rows[:, None]
    q = quality[by_row, order].astype(np.float64)
    c = call_cost[by_row, order]
    source = np.where(cold[:, None], q, estimates[by_row, order])
    # The extra last column: a semantic query no model serves goes to the strongest model; a
    # cascade that accepts nothing ends on its last attempt.
    fallback = np.where(cold, order[:, -1], m - 1).astype(np.int64)
    spent = np.cumsum(c, axis=1)
    keys = np.hstack([np.maximum.accumulate(source, axis=1), np.full((n, 1), np.inf)])
    fallback_cost = np.where(cold, spent[:, -1], call_cost[rows, fallback])
    return Policy(
        keys=keys,
        quality=np.hstack([q, quality[rows, fallback][:, None].astype(np.float64)]),
        cost=np.hstack([np.where(cold[:, None], spent, c), fallback_cost[:, None]]),
        model=np.hstack([order.astype(np.int64), fallback[:, None]]),
    )


def cost_order(call_cost: FloatArray) -> IntArray:
    """Each query's models, cheapest first for that query (ties: catalog order, as `decide`)."""
    order: IntArray = np.argsort(call_cost, axis=1, kind="stable").astype(np.int64)
    return order


@dataclass(frozen=True, slots=True)
class Events:
    """Per-query changes, sorted by threshold from high to low, ready for cumulative sums."""

    threshold: FloatArray
    query: IntArray
    d_quality: FloatArray
    d_cost: FloatArray
    base_quality: FloatArray
    base_cost: FloatArray
    levels: FloatArray
    level_end: IntArray


def events(p: Policy, min_threshold: float = 0.0) -> Events:
    """Every switch from a dearer to a cheaper answer as the target falls past a key.

    Only targets above `min_threshold` are kept (decide accepts targets in (0, 1]).
    """
    n, m = p.quality.shape
    rows = np.arange(n)
    current = np.full(n, m - 1)
    parts: list[tuple[FloatArray, IntArray, FloatArray, FloatArray]] = []
    for j in range(m - 2, -1, -1):
        lower = p.keys[:, j - 1] if j > 0 else np.full(n, -np.inf)
        reach = (p.keys[:, j] > lower) & (p.keys[:, j] > min_threshold)
        # Column j may stand for the model already answering (the fallback column repeats the
        # strongest or last model): the answer does not change, so no event, but it is current.
        same = reach & (p.model[:, j] == p.model[rows, current])
        current[same] = j
        reach &= ~same
        idx = rows[reach]
        prev = current[reach]
        parts.append(
            (
                p.keys[idx, j],
                idx,
                p.quality[idx, j] - p.quality[idx, prev],
                p.cost[idx, j] - p.cost[idx, prev],
            )
        )
        current[reach] = j
    threshold = np.concatenate([x[0] for x in parts]) if parts else np.zeros(0)
    order = np.argsort(-threshold, kind="stable")
    threshold = threshold[order]
    levels, first = np.unique(-threshold, return_index=True)
    counts = np.diff(np.append(first, threshold.size))
    return Events(
        threshold=threshold,
        query=np.concatenate([x[1] for x in parts])[order] if parts else np.zeros(0, np.int64),
        d_quality=np.concatenate([x[2] for x in parts])[order] if parts else np.zeros(0),
        d_cost=np.concatenate([x[3] for x in parts])[order] if parts else np.zeros(0),
        base_quality=p.quality[:, m - 1],
        base_cost=p.cost[:, m - 1],
        levels=-levels,
        level_end=(first + counts - 1).astype(np.int64),
    )


@dataclass(frozen=True, slots=True)
class Curve:
    """Mean quality and mean cost per query at each target, from the highest target down.

    Index 0 is "every semantic query on the strongest model" (t above every estimate); then one
    entry per distinct key, in decreasing order of target.
    """

    targets: FloatArray
    quality: FloatArray
    cost: FloatArray


def curve(ev: Events, weights: FloatArray | None = None) -> Curve:
    """The curve for the queries weighted by `weights` (a bootstrap draw count), default 1 each."""
    n = ev.base_quality.size
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    base_q = float(w @ ev.base_quality)
    base_c = float(w @ ev.base_cost)
    ew = w[ev.query]
    cum_q = np.cumsum(ew * ev.d_quality)[ev.level_end] if ev.threshold.size else np.zeros(0)
    cum_c = np.cumsum(ew * ev.d_cost)[ev.level_end] if ev.threshold.size else np.zeros(0)
    return Curve(
        targets=np.concatenate(([np.inf], ev.levels)),
        quality=np.concatenate(([base_q], base_q + cum_q)) / total,
        cost=np.concatenate(([base_c], base_c + cum_c)) / total,
    )


def columns_at(p: Policy, target: float) -> IntArray:
    """The column each query ends on at `target` (first key reaching it)."""
    picked: IntArray = np.argmax(p.keys >= target, axis=1).astype(np.int64)
    return picked


def choices_at(p: Policy, target: float) -> IntArray:
    """The catalog index of the model each query ends on at `target`."""
    picked: IntArray = p.model[np.arange(p.model.shape[0]), columns_at(p, target)]
    return picked
