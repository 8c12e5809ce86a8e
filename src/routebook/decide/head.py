"""A namespace's learned head: logistic regressions on the frozen embeddings of its index.

Why: the neighbour vote sees k precedents; a head sees the whole index at once, and on intent
data a linear head on the same embeddings beats the vote (docs/evaluation.md). The head never
replaces the neighbours. `decide` uses its prediction as the *prior* of the neighbour vote
(`decide/estimate.py`), so the neighbours stay the evidence every answer carries, and an
outcome recorded now moves the next estimate at once, before the head is retrained.

Two parts, each trained only when the index has the labels for it:

- model success: per catalog model, P(success | query) from a logistic regression on the
  embedding plus the standardised log prompt length (prompt length predicts difficulty: on
  GSM8K's dev index it alone ranks queries at APGR 0.62). Labels are `evidence_for`'s values:
  observed mean quality as a soft label, else the `best_model` label's 0/1.
- routes: one multinomial logistic regression over the examples' routes.

The success part reads one of two kinds of features (`head_features`): the query's vector, or
`layers`, the mean pool of every hidden layer of the same forward pass (7 x 384 floats for
MiniLM, standardised with the training examples' mean and spread). The final vector is what
neighbours are found by; the inner layers keep what the last one pools away (the words, the
kind of question), and on MMLU a success head reading them ranks queries better (docs/
evaluation.md, "Better decisions", item 12). Routes always read the vector.

Inference is numpy only (a matrix-vector product per part, microseconds); training uses
scikit-learn, imported lazily, and takes seconds on tens of thousands of examples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routebook.catalog import Catalog, estimate_tokens
from routebook.decide.estimate import evidence_for
from routebook.domain import ExampleFacts, HeadPrediction

FloatArray = npt.NDArray[np.float64]

#: The two kinds of features a success head reads (the `head_features` setting).
VECTOR = "vector"
LAYERS = "layers"

#: Inverse L2 penalty of the per-model success regressions. Outcomes are noisy 0/1 results, so
#: a strong penalty: cross-validated on GSM8K's and MMLU's dev index (0.1 beat 1 and 10).
MODEL_C = 0.1
#: The same on standardised layer pools (2,688 features of ~7,000 noisy rows, so a far stronger
#: penalty: MMLU dev_index 5-fold CV, docs/evaluation.md item 12).
LAYERS_MODEL_C = 1e-4
#: Inverse L2 penalty of the route regression (CLINC150 / Banking77 train folds: 10 best,
#: 3 and 30 within 0.1-0.7 points).
ROUTE_C = 10.0
#: The length feature is multiplied by this before fitting, which divides its penalty by its
#: square: length is one strong feature among 384 weak ones (GSM8K folds: 1 to 10 all equal).
LENGTH_SCALE = 3.0
#: Fewer labelled examples than these: no head for that part (decide then uses the plain vote).
#: Success labels are noisy, so the model part needs more: on MT-Bench's 36-row dev index (6-fold
#: CV) a head cut APGR from 0.68 to 0.43, and on GSM8K subsamples it lost at 25 rows and gained
#: from 50 on. A route head helped even at 3 routes x 8 utterances (CLINC150 subsamples).
MIN_MODEL_EXAMPLES = 100
MIN_ROUTE_EXAMPLES = 20


@dataclass(frozen=True, slots=True, eq=False)
class Head:
    """Trained weights of one namespace's head; `predict` is all the serving path calls."""

    models: tuple[str, ...]
    #: (len(models), features + 1): feature weights, then the weight of the length feature.
    #: A layers head's weights read the raw pools: the standardisation it was fitted on is
    #: folded into them and into `model_bias`.
    model_weights: FloatArray
    model_bias: FloatArray
    length_mean: float
    length_std: float
    routes: tuple[str, ...]
    #: (len(routes), dim)
    route_weights: FloatArray
    route_bias: FloatArray
    trained_on: int
    generation: int = 0
    #: What the success part reads: "vector", or "layers".
    features: str = VECTOR

    @property
    def reads_layers(self) -> bool:
        return self.features == LAYERS and bool(self.models)

    def predict(
        self,
        vector: npt.ArrayLike,
        input_tokens: int | None = None,
        layers: npt.ArrayLike | None = None,
    ) -> HeadPrediction:
        """The head's view of one query (a unit vector, and its layer pools when the head
        reads them); without `input_tokens` the length feature is taken at its training mean."""
        x = np.asarray(vector, dtype=np.float64).reshape(-1)
        success: tuple[tuple[str, float], ...] = ()
        if self.models:
            if self.features == LAYERS:
                if layers is None:
                    raise ValueError("this head reads every layer's pools: pass `layers`")
                features = np.asarray(layers, dtype=np.float64).reshape(-1)
            else:
                features = x
            z = 0.0
            if input_tokens is not None:
                z = (math.log(max(input_tokens, 1)) - self.length_mean) / self.length_std
            logits = self.model_weights[:, :-1] @ features + self.model_weights[:, -1] * (
                LENGTH_SCALE * z
            )
            p = 1.0 / (1.0 + np.exp(-(logits + self.model_bias)))
            success = tuple((m, float(v)) for m, v in zip(self.models, p, strict=True))
        routes: tuple[tuple[str, float], ...] = ()
        if self.routes:
            logits = self.route_weights @ x + self.route_bias
            e = np.exp(logits - logits.max())
            q = e / e.sum()
            routes = tuple((r, float(v)) for r, v in zip(self.routes, q, strict=True))
        return HeadPrediction(
            success=success, routes=routes, generation=self.generation, trained_on=self.trained_on
        )


def import_trainer() -> None:
    """Import scikit-learn, which training uses, now rather than at the first training: its
    import (scipy's with it) holds the GIL for one to two seconds, which a server pays before
    it serves instead of beside its first Decide calls."""
    import sklearn.linear_model  # type: ignore[import-untyped]  # noqa: F401


def train_head(
    vectors: npt.NDArray[np.float32],
    facts: Sequence[ExampleFacts],
    catalog: Catalog,
    *,
    layers: npt.NDArray[np.floating[Any]] | None = None,
    generation: int = 0,
    model_c: float | None = None,
    route_c: float = ROUTE_C,
    min_model_examples: int = MIN_MODEL_EXAMPLES,
    min_route_examples: int = MIN_ROUTE_EXAMPLES,
    seed: int = 0,
) -> Head | None:
    """Train a head on an index's examples (`vectors[i]` embeds `facts[i].text`).

    With `layers` (row i: `facts[i]`'s layer pools) the success part reads them instead of the
    vector, at `LAYERS_MODEL_C` unless `model_c` is given. Returns None when neither part has
    enough labels (a model with fewer than
    `min_model_examples` labelled examples is left out; routes need `min_route_examples` and at
    least two of them); `decide` then behaves exactly as without a head. Pure CPU work with no
    shared state, so it can run on a background thread.
    """
    if len(facts) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors for {len(facts)} examples")
    if layers is not None and len(layers) != len(facts):
        raise ValueError(f"{len(layers)} layer rows for {len(facts)} examples")
    if len(facts) < min(min_model_examples, min_route_examples):
        return None
    x = np.asarray(vectors, dtype=np.float64)
    dim = x.shape[1]
    lengths = np.array([math.log(estimate_tokens(f.text)) for f in facts], dtype=np.float64)
    length_mean = float(lengths.mean())
    length_std = float(lengths.std()) if lengths.std() > 1e-9 else 1.0
    length_column = LENGTH_SCALE * ((lengths - length_mean) / length_std)[:, None]
    if layers is None:
        kind, c = VECTOR, MODEL_C if model_c is None else model_c
        # float64: the vector head's fits stay as they were measured.
        with_length: npt.NDArray[np.floating[Any]] = np.hstack([x, length_column])
    else:
        kind, c = LAYERS, LAYERS_MODEL_C if model_c is None else model_c
        # One float32 matrix, standardised in place (scikit-learn fits float32 as it is):
        # 2,688 features of 50,000 examples are 540 MB, and every extra copy as much again.
        layers_mean = layers.mean(axis=0, dtype=np.float64)
        pools = layers.shape[1]
        with_length = np.empty((len(facts), pools + 1), dtype=np.float32)
        centred = with_length[:, :pools]
        np.subtract(layers, layers_mean.astype(np.float32), out=centred)
        spread = np.sqrt(_column_squares(centred) / len(facts))  # numpy's std: a float64 copy
        layers_scale = np.where(spread > 1e-6, spread, 1.0)
        centred /= layers_scale.astype(np.float32)
        with_length[:, pools] = length_column[:, 0]
    width = with_length.shape[1]

    models: list[str] = []
    weights: list[FloatArray] = []
    biases: list[float] = []
    for name in catalog.names:
        labelled = [
            (i, v) for i, f in enumerate(facts) if (v := evidence_for(f, name, catalog)) is not None
        ]
        if len(labelled) < min_model_examples:
            continue
        rows = np.array([i for i, _ in labelled], dtype=np.int64)
        values = np.clip(np.array([v for _, v in labelled], dtype=np.float64), 0.0, 1.0)
        chosen = with_length if rows.size == len(facts) else with_length[rows]  # no copy if all
        w, b = _fit_success(chosen, values, c, seed)
        if kind == LAYERS:  # w · (l - mean) / scale = (w / scale) · l - (w / scale) · mean
            w[:-1] /= layers_scale
            b -= float(w[:-1] @ layers_mean)
        models.append(name)
        weights.append(w)
        biases.append(b)

    if kind == LAYERS and not any(np.any(w[:-1]) for w in weights):
        # Only one-sided labels (a constant per model): nothing read from the layers, so the
        # head needs none at Decide (an intent namespace's success part, say).
        kind, width = VECTOR, dim + 1
        weights = [np.concatenate([np.zeros(dim), w[-1:]]) for w in weights]

    routed = [i for i, f in enumerate(facts) if f.route]
    labels = [facts[i].route or "" for i in routed]
    route_names: tuple[str, ...] = ()
    route_weights = np.zeros((0, dim))
    route_bias = np.zeros(0)
    if len(routed) >= min_route_examples and len(set(labels)) >= 2:
        route_names, route_weights, route_bias = _fit_routes(x[routed], labels, route_c, seed)

    if not models and not route_names:
        return None
    return Head(
        models=tuple(models),
        model_weights=np.array(weights, dtype=np.float64).reshape(len(models), width),
        model_bias=np.array(biases, dtype=np.float64),
        length_mean=length_mean,
        length_std=length_std,
        routes=route_names,
        route_weights=route_weights,
        route_bias=route_bias,
        trained_on=len(facts),
        generation=generation,
        features=kind if models else VECTOR,
    )


def _column_squares(x: npt.NDArray[np.float32], block: int = 4096) -> FloatArray:
    """Σ x² per column, summed in float64 a block of rows at a time."""
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), block):
        rows = x[start : start + block].astype(np.float64)
        total += np.einsum("ij,ij->j", rows, rows)
    return total


def _fit_success(
    x: npt.NDArray[np.floating[Any]], values: FloatArray, c: float, seed: int
) -> tuple[FloatArray, float]:
    """Soft-label logistic regression: an example counts as a success with weight v and as a
    failure with weight 1 - v (only examples strictly between 0 and 1 need both rows, so 0/1
    labels fit `x` as it is, without a copy). One-sided labels give a constant (the smoothed
    rate)."""
    total = values.sum()
    if total <= 0.0 or total >= values.size or np.all(values == values[0]):
        rate = (total + 0.5) / (values.size + 1.0)
        return np.zeros(x.shape[1]), float(math.log(rate / (1.0 - rate)))
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression

    soft = (values > 0.0) & (values < 1.0)
    rows = np.concatenate([x, x[soft]]) if soft.any() else x
    y = np.concatenate([np.where(soft, 1.0, values), np.zeros(int(soft.sum()))])
    sample_weight = np.concatenate([np.where(soft, values, 1.0), 1.0 - values[soft]])
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(rows, y, sample_weight=sample_weight)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


def _fit_routes(
    x: FloatArray, labels: list[str], c: float, seed: int
) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, np.asarray(labels, dtype=object))
    names = tuple(str(r) for r in model.classes_)
    coef = np.asarray(model.coef_, dtype=np.float64)
    bias = np.asarray(model.intercept_, dtype=np.float64)
    if len(names) == 2:  # binary: sklearn keeps one row, for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        bias = np.array([-bias[0] / 2, bias[0] / 2])
    return names, coef, bias
