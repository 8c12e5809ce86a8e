"""The composition root: the one place that builds store, embedder, indexes and services from
settings. Nothing happens at import; `build()` does the work, in this order: check the inputs
other than the store (route files, shadow candidate, model folder, decision log), migrate the
store, load route files into an empty store, load every namespace's index (newest snapshot,
else built from the store) and catch it up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
from sqlalchemy.exc import IntegrityError

from routebook import routefiles
from routebook.catalog import out_of_bounds
from routebook.config import Settings, load_settings
from routebook.decide import DecisionParams
from routebook.decide.head import LAYERS
from routebook.embed import Embedder
from routebook.embed.batcher import MicroBatcher
from routebook.embed.cache import CachedEmbedder
from routebook.embed.protocol import background_layers, layers_dim_of
from routebook.embed.sentence import model_folder
from routebook.errors import ConfigError, RoutebookError
from routebook.index import IndexRegistry
from routebook.index.snapshot import store_folder
from routebook.service import (
    ExampleService,
    NamespaceDirectory,
    OutcomeRecorder,
    RoutingService,
)
from routebook.service.cooldowns import CooldownBook, CooldownRules
from routebook.service.decision_writer import DecisionWriter
from routebook.service.drift import DriftLevels, DriftWatch
from routebook.service.drift_keeper import DriftKeeper
from routebook.service.escalation import EscalationGuard
from routebook.service.follower import StoreFollower
from routebook.service.head_layers import TrainingLayers
from routebook.service.head_layers_file import PoolsFiles
from routebook.service.heads import HeadBook, HeadSettings
from routebook.service.indexing import IndexBuilder
from routebook.service.namespace_admin import NamespaceAdmin
from routebook.service.namespaces import NamespaceInfo
from routebook.service.reindex import Reindexer
from routebook.service.requests import RoutingLimits
from routebook.service.retention import DecisionTextSweeper, HistorySweeper
from routebook.service.routing import ShadowCandidate
from routebook.service.sessions import StickySessions
from routebook.service.spend import SpendLedger
from routebook.service.stats import unmeasured_by_shadow
from routebook.service.telemetry import DecisionLog, Telemetry
from routebook.store import migrate
from routebook.store.db import Store, open_store
from routebook.store.identity import store_id
from routebook.store.namespaces import holds_namespaces

log = logging.getLogger("routebook")


@dataclass(slots=True)
class App:
    settings: Settings
    store: Store
    embedder: Embedder
    registry: IndexRegistry
    directory: NamespaceDirectory
    follower: StoreFollower
    examples: ExampleService
    namespaces: NamespaceAdmin
    reindexer: Reindexer
    routing: RoutingService
    outcomes: OutcomeRecorder
    telemetry: Telemetry
    decision_log: DecisionLog
    decision_writer: DecisionWriter
    drift: DriftWatch
    #: Keeps the drift references in the store; started with the server (in-process
    #: commands neither adopt nor write references).
    drift_keeper: DriftKeeper
    heads: HeadBook
    #: Clears decisions' query text past `decision_text_hours`; started with the server.
    text_sweeper: DecisionTextSweeper
    #: Deletes history examples past `history_days` (none when 0); started with the server.
    history_sweeper: HistorySweeper

    def prepare_thread(self) -> None:
        """Run in every thread that serves calls. OpenMP's thread count is per thread: the
        main thread's setting does not reach gRPC's workers, whose FAISS searches would
        otherwise fan out over every core (measured: cached Decide at 10k 5-6 ms, not 1-2)."""
        faiss.omp_set_num_threads(self.settings.faiss_threads)

    def close(self) -> None:
        self.text_sweeper.stop()
        self.history_sweeper.stop()
        self.drift_keeper.stop()
        self.heads.stop()
        self.follower.stop()
        self.decision_writer.close()
        self.decision_log.close()
        self.store.dispose()


def decision_params(settings: Settings) -> DecisionParams:
    """The decision rule as configured. With head_enabled off there is no head to weigh, so its
    strengths are 0: eval, the gate and shadow mode then measure what the server will run."""
    on = settings.head_enabled
    return DecisionParams(
        quality_target=settings.quality_target,
        cold_start_threshold=settings.cold_start_threshold,
        similarity_floor=settings.similarity_floor,
        min_support=settings.min_support,
        prior_success=settings.prior_success,
        prior_strength=settings.prior_strength,
        weight_power=settings.weight_power,
        target_mode=settings.target_mode,
        head_strength=settings.head_strength if on else 0.0,
        route_head_strength=settings.route_head_strength if on else 0.0,
        cascade_min_quality=settings.cascade_min_quality,
    )


def shadow_candidate(settings: Settings) -> ShadowCandidate | None:
    """The candidate of shadow mode, read from its settings file like `serve --config`, with
    the rules of `shadow_rules` if given. A `shadow_rules` without `shadow_config` is an error,
    not ignored: there is no candidate to give the rules to, and a server that started
    without a word left the operator believing their rules were in shadow."""
    if settings.shadow_config is None:
        if settings.shadow_rules is not None:
            raise ConfigError(
                f"shadow_rules: {settings.shadow_rules} is set but shadow_config is not, so "
                "there is no shadow candidate to give its rules to: set shadow_config (the "
                "candidate's settings file; to shadow rules alone, a copy of the live "
                "settings), or unset shadow_rules"
            )
        return None
    try:
        candidate = load_settings({}, settings.shadow_config, environment=False)
    except ConfigError as exc:  # its message names the file; this says which setting gave it
        raise ConfigError(f"shadow_config: {exc}") from None
    params = decision_params(candidate)
    unmeasured = unmeasured_by_shadow(settings, candidate)
    if unmeasured is not None:
        log.warning("shadow_config %s: %s", settings.shadow_config, unmeasured)
    if candidate.head_features != settings.head_features and params.head_strength > 0:
        # One head per namespace: the candidate reads the live server's, whatever its file says
        # (its routes read the vector either way, so only the success part's weight matters).
        raise ConfigError(
            f"shadow_config {settings.shadow_config} means head_features = "
            f'"{candidate.head_features}" (a file without it means "vector") but the server '
            f'runs "{settings.head_features}": the shadow candidate reads the live head, so give '
            "both the same value, or head_strength = 0 in the candidate (compare head features "
            "with `routebook eval --baseline A --candidate B`)"
        )
    rules = {}
    if settings.shadow_rules is not None:
        files = _shadow_route_files(settings.shadow_rules)
        rules = {f.namespace: f.policy.to_policy().rules for _, f in files}
    return ShadowCandidate(params, candidate.k, candidate.default_output_tokens, rules)


def _shadow_route_files(path: Path) -> list[tuple[Path, routefiles.RouteFile]]:
    """shadow_rules' route files. Their errors name the setting: a mistyped path read as
    "routes folder … does not exist", a problem with `--routes` (and the path was a file)."""
    if not path.exists():
        raise ConfigError(f"shadow_rules: route file or folder {path} does not exist")
    try:
        return routefiles.load_routes(path)
    except ConfigError as exc:
        raise ConfigError(f"shadow_rules: {exc}") from None


def load_embedder(settings: Settings) -> Embedder:
    """The model the settings name; with `head_features = "layers"` it also gives the mean
    pool of every layer (a LayerEmbedder), for the head to read."""
    layers = settings.head_features == LAYERS
    if settings.embed_backend == "onnx":
        from routebook.embed.onnx import OnnxEmbedder

        cache = Path(settings.model_cache_dir) if settings.model_cache_dir else None
        return OnnxEmbedder(
            settings.model_path or None,
            cache_dir=cache,
            threads=settings.embed_threads,
            precision=settings.embed_precision,
            layers=layers,
        )
    if settings.embed_precision != "float32":
        raise ConfigError(
            f'embed_precision = {settings.embed_precision!r} needs embed_backend = "onnx"'
        )
    from routebook.embed.sentence import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings.model_path or None, layers=layers)


def training_layers(settings: Settings, store: Store, embedder: Embedder) -> TrainingLayers:
    """Where heads get their training texts' layer pools: from the model itself, not the query
    path's cache and batcher (a retraining must not evict queries or queue ahead of Decide),
    kept in the store's snapshot folder across restarts."""
    return TrainingLayers(
        background_layers(embedder),
        layers_dim_of(embedder),
        PoolsFiles(store_folder(settings.snapshot_dir, store_id(store)), embedder.model_id),
    )


def initial_routes(settings: Settings) -> list[tuple[Path, routefiles.RouteFile]]:
    """The route files an empty store starts with: routes_dir, a folder of them or one file.
    Read before the store is opened, so a mistake in them stops the start before the store is
    created or migrated.

    A routes_dir given explicitly (flag, environment or config file) must hold some: a
    mistyped `--routes` used to start a server on an empty store, every Decide NOT_FOUND.
    The default may be absent or empty (namespaces can come through the Admin API instead):
    that gives none, which `build` warns about if the store turns out empty."""
    path = settings.routes_dir
    given = "routes_dir" in settings.model_fields_set
    if not given and not _holds_route_files(path):
        return []
    return routefiles.load_routes(path)


def _holds_route_files(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and bool(routefiles.route_file_paths(path)))


def _check_before_the_store(
    settings: Settings, embedder: Embedder | None, load_routes: bool
) -> tuple[list[tuple[Path, routefiles.RouteFile]], ShadowCandidate | None]:
    """Check what start-up reads besides the store, cheaply, before the store is touched: a
    mistyped --routes, shadow_config or model_path is a setting to fix, and used to be found
    only after the store had been created or migrated. Returns the route files and the
    shadow candidate, which `build` uses."""
    try:
        files = initial_routes(settings) if load_routes else []
    except ConfigError as exc:
        if not holds_namespaces(settings.database_url):
            raise
        # Route files are loaded into an empty store only: one broken file must not stop a
        # restart of a store already serving (every replica of a rolling restart would stop).
        log.warning(
            "route files not read, the store already holds namespaces (use `routebook routes "
            "sync` to change them): %s",
            exc,
        )
        files = []
    shadow = shadow_candidate(settings)
    if embedder is None:
        model_folder(settings.model_path)  # the model itself is loaded after the store
    return files, shadow


def _warn_out_of_bounds(info: NamespaceInfo) -> None:
    """Say at start that a namespace's stored catalog is out of bounds (stored before catalogs
    were bounded, or written to the store directly). It still routes, and GetNamespace refuses
    it with the same numbers, but the operator learned of it only by calling GetNamespace: a
    NaN latency or a price of 5e12 then decided calls without a word in the log."""
    problems = [
        f"model {spec.name!r}: {problem}"
        for spec in info.catalog.models
        for problem in out_of_bounds(spec)
    ]
    if problems:
        log.warning(
            "namespace %s: its stored catalog is out of bounds (stored before catalogs were "
            "bounded, or written to the store directly): %s. It still routes (a model whose "
            "latency is not a finite number meets no latency SLA); replace it: fix the route "
            "file and run `routebook routes sync`, or send Admin UpdateCatalog",
            info.name,
            "; ".join(problems),
        )


def build(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    load_routes: bool = True,
    load_indexes: bool = True,
    progress: Callable[[str], None] | None = None,
) -> App:
    say = progress or (lambda _message: None)
    # One query at a time gains nothing from FAISS's OpenMP threads and loses a lot to their
    # contention with the gRPC threads (measured 10-30x slower flat search on 2 cores).
    faiss.omp_set_num_threads(settings.faiss_threads)
    files, shadow = _check_before_the_store(settings, embedder, load_routes)
    # Opened before the store too: a log it cannot write is a setting to fix first.
    decision_log = DecisionLog(settings.decision_log or None)
    store = open_store(
        settings.database_url, statement_timeout_seconds=settings.store_statement_timeout_seconds
    )
    try:
        # Through upgrade_to: a store migrated by a newer routebook is one error line, not
        # Alembic's traceback for a revision it cannot find.
        migrate.upgrade_to(store.engine, "head")
    except RoutebookError:
        store.dispose()
        decision_log.close()
        raise
    embedder = embedder if embedder is not None else load_embedder(settings)
    reads_layers = settings.head_features == LAYERS
    if reads_layers and not layers_dim_of(embedder):
        raise ConfigError(
            f'head_features = "layers", but the embedder ({embedder.model_id}) was built '
            "without its layer pools"
        )
    registry = IndexRegistry(embedder.dim)
    directory = NamespaceDirectory(store, settings.default_namespace)
    heads = HeadBook(
        registry,
        lambda namespace: directory.resolve(namespace).catalog,
        HeadSettings(
            # A shadow candidate that would train a head once live is measured with one; the
            # live rule, with head_enabled off, gives it no weight (its strengths are 0).
            enabled=settings.head_enabled or (shadow is not None and shadow.uses_head),
            retrain_after=settings.head_retrain_after,
            check_seconds=settings.head_check_seconds,
            max_examples=settings.head_max_examples,
        ),
        training_layers(settings, store, embedder) if reads_layers else None,
    )
    builder = IndexBuilder(
        store, embedder, settings.approximate_index_above, settings.approximate_index_kind
    )
    follower = StoreFollower(
        store, embedder, registry, directory, builder, settings.follow_interval_seconds
    )
    examples = ExampleService(store, directory, follower, builder, settings.max_query_chars)
    writer = DecisionWriter(store, store_text=settings.decision_text_hours > 0)
    # Queries go through the cache and the micro-batcher; bulk indexing calls the model as is.
    batcher = MicroBatcher(
        embedder, settings.embed_batch_max, settings.embed_batch_wait_ms, settings.embed_workers
    )
    cache = (
        CachedEmbedder(batcher, settings.embed_cache_size)
        if settings.embed_cache_size > 0
        else None
    )
    query_embedder: Embedder = batcher if cache is None else cache
    telemetry = Telemetry(decision_log, settings.log_query_text)
    spend = SpendLedger(store, settings.spend_cache_seconds)
    guard = EscalationGuard(bound_tenants=settings.api_key_tenants.values())
    drift = DriftWatch(
        settings.drift_reference_size,
        settings.drift_window,
        DriftLevels(psi=settings.drift_psi_level, cold_start_delta=settings.drift_cold_start_delta),
    )
    cooldowns = CooldownBook(
        store,
        CooldownRules(
            settings.cooldown_seconds,
            settings.failure_threshold,
            settings.failure_window_seconds,
            settings.max_retry_after_seconds,
        ),
    )
    routing = RoutingService(
        store,
        query_embedder,
        registry,
        directory,
        decision_params(settings),
        RoutingLimits(
            k=settings.k,
            max_query_chars=settings.max_query_chars,
            default_output_tokens=settings.default_output_tokens,
            max_fallbacks=settings.max_fallbacks,
        ),
        spend,
        telemetry,
        writer,
        cooldowns,
        StickySessions(settings.session_idle_seconds),
        guard,
        drift,
        shadow,
        heads,
    )
    outcomes = OutcomeRecorder(
        store,
        query_embedder,
        registry,
        directory,
        settings.max_query_chars,
        spend,
        telemetry,
        writer,
        cooldowns,
        guard,
        drift,
        batch_max=settings.outcome_batch_max,
        batch_wait_ms=settings.outcome_batch_wait_ms,
        default_output_tokens=settings.default_output_tokens,
    )
    app = App(
        settings=settings,
        store=store,
        embedder=embedder,
        registry=registry,
        directory=directory,
        follower=follower,
        examples=examples,
        namespaces=NamespaceAdmin(store, directory, follower),
        reindexer=Reindexer(
            store,
            embedder,
            directory,
            settings.snapshot_dir,
            settings.approximate_index_above,
            settings.approximate_index_kind,
            heartbeat_seconds=settings.reindex_heartbeat_seconds,
        ),
        routing=routing,
        outcomes=outcomes,
        telemetry=telemetry,
        decision_log=decision_log,
        decision_writer=writer,
        drift=drift,
        drift_keeper=DriftKeeper(
            store, drift, registry, directory, embedder.model_id, settings.drift_sync_seconds
        ),
        heads=heads,
        text_sweeper=DecisionTextSweeper(store, settings.decision_text_hours),
        history_sweeper=HistorySweeper(store, settings.history_days, directory, telemetry),
    )
    telemetry.watch_indexes(registry)
    telemetry.watch_drift(drift, registry)
    telemetry.watch_embedder(batcher, cache)
    telemetry.watch_heads(heads)
    infos = directory.refresh()
    if not infos and files:
        say(f"empty store: loading route files from {settings.routes_dir}")
        try:
            examples.sync_routes(files, together=True)
        except IntegrityError:
            say("another server loaded the route files first")
        infos = directory.refresh()
    elif not infos and load_routes:
        path = settings.routes_dir
        log.warning(
            "empty store and no route files: %s %s (routes_dir); create namespaces through "
            "the Admin API, or point routes_dir at your route files",
            path.resolve(),
            "holds no route files" if path.is_dir() else "does not exist",
        )
    for info in infos:
        _warn_out_of_bounds(info)
    if load_indexes:
        for info in infos:
            if not follower.is_loaded(info.name):
                index = follower.load(info)
                say(f"namespace {info.name}: {len(index)} examples, generation {index.generation}")
        if heads.layers is not None:  # pools of namespaces gone from the store, among others
            heads.layers.sweep({info.name for info in infos})
        heads.start()  # trains every namespace's head in the background, then keeps them fresh
    return app
