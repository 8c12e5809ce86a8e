"""The intent baselines' cold-start thresholds are set on the index file's `oos` rows scored
against the whole index, as routebook's calibrated threshold is."""

from __future__ import annotations

import numpy as np

from routebook.jobs.baselines import IntentPredictions
from routebook.jobs.intent_eval import _with_oos_rows


def test_the_threshold_comes_from_the_oos_rows_and_the_test_part_is_kept_apart() -> None:
    # Three test queries, then four `oos` rows scoring 0.2, 0.4, 0.5, 0.9.
    predictions = IntentPredictions(
        labels=("a", "b", "a", "a", "b", "a", "b"),
        scores=np.array([0.95, 0.45, 0.3, 0.4, 0.2, 0.9, 0.5]),
    )
    test, threshold = _with_oos_rows(predictions, 3, goal=0.75)
    assert test.labels == ("a", "b", "a") and list(test.scores) == [0.95, 0.45, 0.3]
    # Recall 0.75 of 4 rows = 3 rows cold: the lowest threshold above 0.2, 0.4 and 0.5.
    assert 0.5 < threshold < 0.5 + 1e-12
    assert test.routed(threshold) == ["a", None, None]
    no_rows = IntentPredictions(labels=("a",), scores=np.array([0.3]))
    assert _with_oos_rows(no_rows, 1, goal=0.8)[1] == -np.inf  # nothing to detect: never cold
