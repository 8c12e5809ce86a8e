"""The two baselines every routebook figure is shown beside, on the same data and vectors.

- kNN vote: the k nearest index examples, weighted by cosine similarity; per model the
  weighted mean of their recorded quality (outcome data), or the label with the most weight
  (intent data). One cold-start threshold on the top similarity, nothing else.
- Linear head: logistic regression on the frozen embeddings (scikit-learn). Outcome data: one
  model per LLM predicting its success, with graded quality as soft labels (a row counts as a
  success with weight q and a failure with weight 1 - q). Intent data: one multinomial model over
  the labels; the maximum probability is the cold-start test.

They return the same shapes as the routebook replay (estimates per model cheapest first, or
(label, score) per query), so one sweep and one report treat all routers alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Vectors = npt.NDArray[np.float32]

#: Inverse regularisation of the linear heads. Unit-length 384-d inputs need a weak penalty;
#: 10 was fixed once on the dev splits and is not tuned per run.
LINEAR_C = 10.0


@dataclass(frozen=True, slots=True)
class IntentPredictions:
    """A label per query and the score its cold-start test compares with a threshold."""

    labels: tuple[str, ...]
    scores: FloatArray

    def routed(self, threshold: float) -> list[str | None]:
        return [
            None if s < threshold else label
            for label, s in zip(self.labels, self.scores, strict=True)
        ]


def _neighbours(
    index_vectors: Vectors, query_vectors: Vectors, k: int
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Exact top-k by inner product (numpy: the baseline must not depend on routebook's index)."""
    k = min(k, index_vectors.shape[0])
    sims = (query_vectors @ index_vectors.T).astype(np.float64)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def knn_outcome_estimates(
    index_vectors: Vectors, index_quality: FloatArray, query_vectors: Vectors, k: int
) -> tuple[FloatArray, FloatArray]:
    """(estimates (n, models), top similarity (n,)): similarity-weighted mean quality."""
    ids, sims = _neighbours(index_vectors, query_vectors, k)
    w = np.clip(sims, 0.0, None) + 1e-9
    est = np.einsum("nk,nkm->nm", w, index_quality[ids]) / w.sum(axis=1, keepdims=True)
    return est, sims[:, 0].astype(np.float64)


def knn_intent(
    index_vectors: Vectors, index_labels: Sequence[str], query_vectors: Vectors, k: int
) -> IntentPredictions:
    ids, sims = _neighbours(index_vectors, query_vectors, k)
    labels = []
    for row_ids, row_sims in zip(ids, sims, strict=True):
        totals: dict[str, float] = {}
        for i, s in zip(row_ids, row_sims, strict=True):
            totals[index_labels[i]] = totals.get(index_labels[i], 0.0) + max(float(s), 0.0)
        labels.append(max(totals.items(), key=lambda item: (item[1], item[0]))[0])
    return IntentPredictions(labels=tuple(labels), scores=sims[:, 0].astype(np.float64))


def linear_outcome_estimates(
    index_vectors: Vectors, index_quality: FloatArray, query_vectors: Vectors, seed: int = 0
) -> FloatArray:
    """P(success) per model from one soft-label logistic regression each."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    n, m = index_quality.shape
    x = np.concatenate([index_vectors, index_vectors])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    columns = []
    for j in range(m):
        q = index_quality[:, j]
        if np.all(q == q[0]):  # one class only: the rate is the prediction
            columns.append(np.full(query_vectors.shape[0], float(q[0])))
            continue
        weights = np.concatenate([q, 1.0 - q])
        head = LogisticRegression(C=LINEAR_C, max_iter=2000, random_state=seed)
        head.fit(x, y, sample_weight=weights)
        columns.append(head.predict_proba(query_vectors)[:, 1])
    return np.stack(columns, axis=1).astype(np.float64)


def linear_intent(
    index_vectors: Vectors, index_labels: Sequence[str], query_vectors: Vectors, seed: int = 0
) -> IntentPredictions:
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=LINEAR_C, max_iter=3000, random_state=seed)
    head.fit(index_vectors, np.asarray(index_labels))
    proba = head.predict_proba(query_vectors)
    best = proba.argmax(axis=1)
    return IntentPredictions(
        labels=tuple(str(head.classes_[i]) for i in best),
        scores=proba.max(axis=1).astype(np.float64),
    )
