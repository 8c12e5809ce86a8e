"""What `eval` and `calibrate` share: settings → decision parameters, the embedder (once, with
its disk cache), the catalog, and loading either kind of dataset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from routebook.catalog import Catalog
from routebook.config import Settings, load_settings
from routebook.decide import DecisionParams
from routebook.embed import Embedder
from routebook.jobs import replay
from routebook.jobs.datasets import detect_kind, load_intent_rows, load_outcome_rows
from routebook.jobs.embedcache import EmbeddingCache, default_cache_dir
from routebook.jobs.evaluate import RunOptions, evaluate_intents, evaluate_outcomes
from routebook.jobs.intent_eval import IntentEvaluation
from routebook.jobs.outcome_eval import OutcomeEvaluation
from routebook.jobs.progress import Tracker
from routebook.wiring import decision_params


def params_from_settings(settings: Settings) -> DecisionParams:
    """The decision rule's tunables, exactly as `serve` builds them."""
    return decision_params(settings)


@dataclass(frozen=True)
class Inputs:
    settings: Settings
    params: DecisionParams
    cache: EmbeddingCache
    catalog: Catalog | None
    fixed_k: bool = False
    """True when k was given on the command line: calibrate then keeps it instead of searching."""

    @property
    def k(self) -> int:
        return self.settings.k

    @classmethod
    def make(
        cls,
        *,
        config_file: Path | None = None,
        k: int | None = None,
        model_path: str | None = None,
        catalog_path: Path | None = None,
        cache_dir: Path | None = None,
        embedder: Embedder | None = None,
        target_mode: str | None = None,
        environment: bool = True,
        layers: bool = False,
    ) -> Inputs:
        """`environment`: whether ROUTEBOOK_* variables apply over the file (as for `serve`);
        the gate reads its files alone. `layers`: build the embedder with layer pools even if
        the file's head reads the vector (a gate whose other side reads them, a calibration
        that tries both)."""
        settings = load_settings(
            {"k": k, "model_path": model_path}, config_file, environment=environment
        )
        params = params_from_settings(settings)
        if target_mode is not None:
            params = replace(params, target_mode=target_mode)
        if embedder is None:
            from routebook.wiring import load_embedder  # the backend the server would use

            pools = settings.model_copy(update={"head_features": "layers"}) if layers else settings
            embedder = load_embedder(pools)
        catalog = None
        if catalog_path is not None:
            from routebook.routefiles import load_route_file

            catalog = load_route_file(catalog_path).to_catalog()
        return cls(
            settings=settings,
            params=params,
            cache=EmbeddingCache(embedder, cache_dir or default_cache_dir()),
            catalog=catalog,
            fixed_k=k is not None,
        )


def run_eval(
    inputs: Inputs,
    index_path: Path,
    test_path: Path,
    *,
    seed: int = 0,
    resamples: int = 1000,
    limit: int | None = None,
    tracker: Tracker | None = None,
    oos_recall_goal: float = 0.8,
    params: DecisionParams | None = None,
    k: int | None = None,
    answer_tokens: int | None = None,
) -> OutcomeEvaluation | IntentEvaluation:
    """`answer_tokens`: the answer length calls are priced at (default: the settings'
    `default_output_tokens`, at which the router decides, as `serve` does)."""
    kind = detect_kind(index_path)
    if detect_kind(test_path) != kind:
        raise ValueError(f"{index_path} and {test_path} hold different kinds of data")
    options = RunOptions(
        params=params or inputs.params,
        k=k or inputs.k,
        resamples=resamples,
        seed=seed,
        serving=replay.Serving.of(inputs.settings),
        answer_tokens=answer_tokens,
    )
    if kind == "outcome":
        index_rows = load_outcome_rows(index_path)
        test_rows = load_outcome_rows(test_path)[:limit]
        catalog = inputs.catalog or replay.routellm_catalog()
        return evaluate_outcomes(index_rows, test_rows, inputs.cache, catalog, options, tracker)
    intent_index = load_intent_rows(index_path)
    intent_test = load_intent_rows(test_path)[:limit]
    return evaluate_intents(
        intent_index, intent_test, inputs.cache, options, tracker, oos_recall_goal
    )
