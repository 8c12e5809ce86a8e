"""evaluate_router on data where the share-of-strong-calls axis does not exist: figures that
need it are undefined (None or NaN), never a crash, and the rest are still reported."""

from __future__ import annotations

import math

import numpy as np

from routebook.jobs.outcome_eval import Priced, Scored, evaluate_router, reference

QUALITY = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
KEYS = np.array([[0.9, 0.95], [0.3, 0.9], [0.5, 0.6], [0.85, 0.2]])


def test_equal_prices_leave_apgr_and_cpt_undefined_and_the_rest_reported() -> None:
    scored = Scored(name="r", estimates=KEYS, cold=np.zeros(4, dtype=bool))
    figures = evaluate_router(scored, Priced(QUALITY, np.ones((4, 2))), ("a", "b"), 0.8, 50, 1)
    assert math.isnan(figures.apgr.estimate)
    assert figures.cpt50 is None and figures.cpt80 is None
    # Target 0.8: queries 0 and 3 go to a (0.9, 0.85), 1 goes to b (0.9), 2 to b (the
    # strongest, none reaches 0.8): qualities 0, 1, 1, 1.
    assert figures.operating.quality == 0.75
    assert figures.operating.answer_share == {"a": 0.5, "b": 0.5}
    assert figures.operating.cost_per_query == 1.0


def test_one_model_and_free_models_do_not_crash() -> None:
    one = Scored(name="r", estimates=KEYS[:, :1], cold=np.zeros(4, dtype=bool))
    alone = evaluate_router(one, Priced(QUALITY[:, :1], np.ones((4, 1))), ("a",), 0.8, 50, 1)
    assert math.isnan(alone.apgr.estimate) and alone.operating.quality == 0.5
    scored = Scored(name="r", estimates=KEYS, cold=np.zeros(4, dtype=bool))
    free = evaluate_router(scored, Priced(QUALITY, np.zeros((4, 2))), ("a", "b"), 0.8, 50, 1)
    assert math.isnan(free.apgr.estimate) and free.saving95 is None
    assert reference(QUALITY, np.zeros((4, 2)), ("a", "b")).random_saving95 is None
