"""The `routebook` command: a thin layer over the same use-cases the server runs.

Each command parses, builds what it needs through `wiring`, makes one call, prints, and exits
0 (done), 1 (a RoutebookError: the message says what to do) or 2 (bad usage, from click).
Heavy imports (torch, FAISS, SQLAlchemy) happen inside commands, so `--help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from routebook import __version__
from routebook.errors import FailedPrecondition, RoutebookError

if TYPE_CHECKING:
    from routebook.config import Settings
    from routebook.service.examples import SyncReport

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def remote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--target and how to reach it: an API key, TLS (system CAs, or a private CA)."""
    for option in reversed(
        (
            click.option("--target", help="host:port of a running server; default: in-process."),
            click.option(
                "--api-key",
                envvar="ROUTEBOOK_API_KEY",
                help="With --target: the API key (env ROUTEBOOK_API_KEY).",
            ),
            click.option(
                "--tls",
                is_flag=True,
                help="With --target: connect with TLS, trusting the system's CAs.",
            ),
            click.option(
                "--tls-ca",
                type=click.Path(exists=True, dir_okay=False),
                help="With --target: connect with TLS, trusting this CA's PEM certificate.",
            ),
        )
    ):
        command = option(command)
    return command


def store_options(func: F) -> F:
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        envvar="ROUTEBOOK_CONFIG",
        help="TOML settings file.",
    )(func)
    func = click.option(
        "--db",
        "database_url",
        help="Store URL (sqlite:///FILE or postgresql+psycopg://...); env ROUTEBOOK_DATABASE_URL.",
    )(func)
    return func


def _settings(config_file: str | None, **flags: Any) -> Any:
    """The settings, with this command's flags on top; an error names the flag as typed."""
    from routebook.config import load_settings

    command = click.get_current_context().command
    names = {
        param.name: max(param.opts, key=len)
        for param in command.params
        if isinstance(param, click.Option) and param.name
    }
    return load_settings(flags, config_file, flag_names=names)


def _fail(exc: RoutebookError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


class _Commands(click.Group):
    """The `routebook` group. A RoutebookError from any of its commands, however deep, ends the
    command with one `error:` line and exit 1: its message is written for a person, so the
    commands need no handler each (one that lacked it printed a traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RoutebookError as exc:
            _fail(exc)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="routebook")
def main() -> None:
    """routebook: route each LLM query to the cheapest model that worked for its precedents."""


@main.command()
@store_options
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="gRPC port (default 50051; 0 picks a free one).")
@click.option(
    "--routes",
    "routes_dir",
    type=click.Path(path_type=Path),
    help="Route file, or folder of them, loaded into an empty store (default routes/).",
)
@click.option("--model-path", help="Local sentence-transformers model folder.")
@click.option("--workers", type=int, help="Threads serving calls.")
@click.option("--grace-seconds", type=float, help="In-flight grace on SIGTERM.")
@click.option("--metrics-port", type=int, help="Serve Prometheus /metrics on this port.")
@click.option("--decision-log", help="JSON decision log: - (stderr), a file, or '' (off).")
def serve(config_file: str | None, **flags: Any) -> None:
    """Migrate the store, load routes on first start, build the indexes and serve gRPC.

    Only a few settings have a flag here; every setting is also a ROUTEBOOK_<NAME> variable and
    a key of the --config file (`routebook settings` lists them all).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _settings(config_file, **flags)
    from routebook.server.app import build_server, serve_forever
    from routebook.wiring import build

    app = build(settings, progress=lambda message: click.echo(message, err=True))
    running = build_server(app)
    click.echo(f"routebook {__version__} serving on {settings.host}:{running.port}", err=True)
    if running.metrics_port is not None:
        metrics = f"http://{settings.metrics_host}:{running.metrics_port}/metrics"
        click.echo(f"metrics on {metrics}", err=True)
    serve_forever(running, settings.grace_seconds)
    app.close()


@main.command()
@click.argument("text")
@store_options
@click.option("--namespace", "-n", default="", help="Namespace (default: the default one).")
@remote_options
@click.option("--quality-target", type=float, help="Success probability to reach.")
@click.option("--tenant", default="", help="Tenant (tier and budget).")
@click.option("--override", "model_override", default="", help="Ask for this model.")
@click.option("--max-latency-ms", type=float, help="Latency SLA in milliseconds.")
@click.option("--tag", "required_tags", multiple=True, help="Required model tag (repeatable).")
@click.option("--pii", "contains_pii", is_flag=True, help="The query contains personal data.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def decide(
    text: str,
    config_file: str | None,
    database_url: str | None,
    target: str | None,
    api_key: str | None,
    tls: bool,
    tls_ca: str | None,
    as_json: bool,
    **fields: Any,
) -> None:
    """Route TEXT and print the decision with its evidence."""
    from google.protobuf.json_format import MessageToDict

    from routebook.cli_render import render_decision
    from routebook.client import decide_request

    request = decide_request(text, **fields)
    if target:
        response = _remote(target, lambda c: c.decide(request), api_key, tls, tls_ca)
    else:
        from routebook.server.convert import decide_query, decide_response
        from routebook.wiring import build

        # A one-shot command is not a server: no decision log on stderr.
        settings = _settings(config_file, database_url=database_url, decision_log="")
        app = build(settings)
        # A server decides with the namespace's learned head, trained in the background
        # after start; a one-shot command waits for it, or it would route by another rule.
        namespace = request.namespace or settings.default_namespace
        app.heads.full_speed()  # nothing else wants the cores meanwhile
        app.heads.refresh(app.directory.resolve(namespace).name)
        decision = app.routing.decide(decide_query(request))
        response = decide_response(decision, settings.snippet_chars, request.tenant)
        app.close()
    if as_json:
        click.echo(json.dumps(MessageToDict(response), indent=2))
    else:
        render_decision(response)


@main.command()
@store_options
@click.option("--model", "-m", required=True, help="The model that was called.")
@click.option("--quality", type=click.FloatRange(0, 1), help="The answer's quality in [0, 1].")
@click.option(
    "--good/--bad", default=None, help="The answer was acceptable or not (quality 1 or 0)."
)
@click.option(
    "--failure-kind",
    # FAILURE_KINDS of routebook.client, spelt out so that --help does not import grpc
    type=click.Choice(["rate_limited", "server_error", "timeout", "content_filter"]),
    help="The call failed instead of answering. Not quality evidence: it counts towards the "
    "model's cooldown.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    help="With --failure-kind rate_limited: the provider's retry-after, in seconds.",
)
@click.option("--decision-id", default="", help="The decision this answers.")
@click.option("--text", help="The query text, when there is no decision id.")
@click.option(
    "--pii",
    "contains_pii",
    is_flag=True,
    help="The query contains personal data: its text is never shown as a neighbour.",
)
@click.option("--namespace", "-n", default="", help="Namespace, with --text.")
@click.option(
    "--tenant",
    default="",
    help="With --text: the tenant whose budget the cost is charged to (by --decision-id, the "
    "decision's own tenant is charged).",
)
@click.option(
    "--outcome-id",
    help="Idempotency key (default: a new random one). To retry a report that may have "
    "reached the server, pass the id it printed or the one you chose.",
)
# At most int32, as the API takes them: the store's columns are 32-bit (PostgreSQL refused a
# bigger count from the in-process path with a DataError traceback).
@click.option("--input-tokens", type=click.IntRange(0, 2**31 - 1), default=0)
@click.option("--output-tokens", type=click.IntRange(0, 2**31 - 1), default=0)
@click.option("--cost-usd", type=float, help="Cost of the call (default: from the catalog).")
@remote_options
def record(
    config_file: str | None,
    database_url: str | None,
    model: str,
    quality: float | None,
    good: bool | None,
    failure_kind: str | None,
    retry_after: float | None,
    decision_id: str,
    text: str | None,
    contains_pii: bool,
    namespace: str,
    tenant: str,
    outcome_id: str | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float | None,
    target: str | None,
    api_key: str | None,
    tls: bool,
    tls_ca: str | None,
) -> None:
    """Report how a model did on a query (by --decision-id or --text): the quality of its
    answer (--quality, --good/--bad), or that the call failed (--failure-kind)."""
    given = [
        name
        for name, value in (
            ("--quality", quality),
            ("--good/--bad", good),
            ("--failure-kind", failure_kind),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise click.UsageError(
            "give one of --quality, --good/--bad (an answer) or --failure-kind (no answer)"
            + (f", not {' and '.join(given)}" if given else "")
        )
    if retry_after is not None and failure_kind != "rate_limited":
        raise click.UsageError("--retry-after goes with --failure-kind rate_limited")
    if tenant and decision_id:
        # Silently ignored, a tenant named here would look charged when it is not.
        raise click.UsageError(
            "--tenant goes with --text: a report by --decision-id is charged to the tenant "
            "the decision was made for"
        )
    if good is not None:
        quality = 1.0 if good else 0.0
    outcome_id = outcome_id or uuid.uuid4().hex
    if target:
        response = _remote(
            target,
            lambda c: c.record_outcome(
                model=model,
                quality=quality,
                failure=failure_kind,
                retry_after=retry_after,
                decision_id=decision_id,
                query=text,
                contains_pii=contains_pii,
                namespace=namespace,
                tenant=tenant,
                outcome_id=outcome_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost_usd,
            ),
            api_key,
            tls,
            tls_ca,
        )
        summary = (response.example_id, response.duplicate, response.quality)
        expired = response.text_expired
        cooldown = response.cooldown_seconds
    else:
        from routebook.domain import Message, OutcomeReport
        from routebook.wiring import build

        app = build(_settings(config_file, database_url=database_url, decision_log=""))
        recorded = app.outcomes.record_outcome(
            OutcomeReport(
                outcome_id=outcome_id,
                model=model,
                quality=0.0 if quality is None else quality,
                failure=failure_kind,
                retry_after_seconds=retry_after,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost_usd,
                decision_id=decision_id or None,
                namespace=namespace or None,
                tenant=tenant,
                messages=(Message("user", text),) if text else (),
                contains_pii=contains_pii,
            )
        )
        summary = (recorded.example_id, recorded.duplicate, recorded.quality)
        expired = recorded.text_expired
        cooldown = recorded.cooldown_seconds
        app.close()
    state = "already recorded" if summary[1] else "recorded"
    if failure_kind is not None:
        cooled = f"{model} cooling down for {cooldown:.0f} s" if cooldown else "no cooldown started"
        click.echo(f"{state}: outcome {outcome_id}, a {failure_kind} failure ({cooled})")
    elif expired:
        click.echo(
            f"{state}: outcome {outcome_id} (quality {summary[2]:.2f}), charged but not learned "
            "from: the decision's query text is past decision_text_hours"
        )
    else:
        click.echo(
            f"{state}: outcome {outcome_id} on example {summary[0]} (quality {summary[2]:.2f})"
        )


@main.group()
def routes() -> None:
    """Route files: sync them into the store (sync --dry-run validates them and prints the
    diff, changing nothing)."""


@routes.command("sync")
@store_options
@click.option(
    "--routes",
    "routes_dir",
    type=click.Path(path_type=Path),
    help="A route file or a folder of them (default routes/).",
)
@click.option("--dry-run", is_flag=True, help="Print the diff, change nothing.")
@click.option("--prune", is_flag=True, help="Remove reference examples that left the files.")
def routes_sync(
    config_file: str | None,
    database_url: str | None,
    routes_dir: Path | None,
    dry_run: bool,
    prune: bool,
) -> None:
    """Upsert route files into the store (idempotent) and rebuild the touched indexes.

    --dry-run reads the store only: it loads no model, and refuses a store that is missing
    or whose schema is not this routebook's (it migrates nothing)."""
    from routebook.routefiles import load_routes

    settings = _settings(config_file, database_url=database_url, routes_dir=routes_dir)
    files = load_routes(settings.routes_dir)
    if dry_run:
        from routebook.service.examples import preview_sync

        reports = read_store(settings, lambda store: preview_sync(store, files, prune=prune))
    else:
        from routebook.wiring import build

        app = build(settings, load_routes=False)
        reports = app.examples.sync_routes(files, prune=prune)
        app.close()
    for report in reports:
        verb = "would change" if dry_run else "synced"
        click.echo(
            f"{verb} {report.namespace} from {report.path}: +{len(report.added)} added, "
            f"~{len(report.changed)} changed, -{len(report.removed)} removed, "
            f"{report.unchanged} unchanged" + _what_else_changed(report)
        )
        if dry_run:
            for sign, texts in (("+", report.added), ("~", report.changed), ("-", report.removed)):
                for text in texts:
                    click.echo(f"  {sign} {text}")


def _what_else_changed(report: SyncReport) -> str:
    """It said "catalog updated" when only the policy section had changed."""
    changed = [
        name
        for name, flag in (("catalog", report.catalog_changed), ("policy", report.policy_changed))
        if flag
    ]
    return f"; {' and '.join(changed)} updated" if changed else ""


@main.group()
def db() -> None:
    """The store's schema."""


@db.command("upgrade")
@store_options
@click.option(
    "--revision",
    default="head",
    show_default=True,
    help="The revision to upgrade to: head, or a revision id.",
)
def db_upgrade(config_file: str | None, database_url: str | None, revision: str) -> None:
    """Apply the Alembic migrations to the store (`serve` does too, at start). A revision the
    store is already at or past is left as it is, and said so: `db downgrade` goes back."""
    from routebook.store import migrate

    moved = _migrated(
        config_file, database_url, lambda engine: migrate.upgrade_to(engine, revision)
    )
    if moved.wrong_way:
        click.echo(
            f"store at revision {moved.before}, already past {moved.asked or 'base'}: nothing "
            f"done (to go back, `routebook db downgrade --revision {moved.asked or 'base'}`)"
        )
    elif moved.before == moved.after:
        at = moved.after or "base (no routebook schema)"
        click.echo(f"store already at revision {at}: nothing to do")
    else:
        click.echo(f"store at revision {moved.after}")


@db.command("downgrade")
@store_options
@click.option(
    "--revision",
    required=True,
    help="The revision to go back to: a revision id, or base (which drops every table).",
)
def db_downgrade(config_file: str | None, database_url: str | None, revision: str) -> None:
    """Roll the store's schema back to an older revision, for going back to an older routebook.

    Runs the downgrade of every migration newer than REVISION, newest first, in one
    transaction on PostgreSQL and SQLite alike. What a newer migration added goes with it
    (its columns and tables, and what they held). First stop every server of this version:
    they need the newer schema, and one started again would upgrade the store back at start.
    Afterwards run servers of the routebook version whose newest migration is REVISION. There
    is no default: a rollback goes to a revision you name."""
    from routebook.store import migrate

    moved = _migrated(
        config_file,
        database_url,
        lambda engine: migrate.downgrade_to(engine, revision),
        create=False,
    )
    if moved.wrong_way:
        raise FailedPrecondition(
            f"the store is at revision {moved.before}, behind {moved.asked}: nothing done "
            f"(to go forward, `routebook db upgrade --revision {moved.asked}`)"
        )
    if moved.before == moved.after:
        click.echo(f"store already at revision {moved.after}: nothing to do")
    elif moved.after is None:
        click.echo(
            f"store downgraded from revision {moved.before} to base: every routebook table is "
            "dropped, with what it held"
        )
    else:
        click.echo(
            f"store downgraded from revision {moved.before} to {moved.after}. From now on run "
            f"servers of the routebook version whose newest migration is {moved.after}: a "
            "server of this version upgrades the store again when it starts."
        )


def _migrated(
    config_file: str | None,
    database_url: str | None,
    move: Callable[[Any], T],
    *,
    create: bool = True,
) -> T:
    """Open the configured store, make one schema change on it, close it. Without `create`, a
    SQLite file that does not exist is an error (a rollback must not make an empty store at a
    mistyped path)."""
    from routebook.store.db import open_store, parse_url

    settings = _settings(config_file, database_url=database_url)
    url = parse_url(settings.database_url)
    sqlite = url.get_backend_name() == "sqlite"
    if not create and sqlite and not Path(url.database or "").is_file():
        raise FailedPrecondition(f"no SQLite store at {url.database!r}: check --db")
    engine = open_store(settings.database_url).engine
    try:
        return move(engine)
    finally:
        engine.dispose()


@main.command()
@store_options
@click.option(
    "--window",
    default="24h",
    show_default=True,
    help="How far back: a number with h (hours) or d (days).",
)
@click.option("--namespace", "-n", help="Only this namespace.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(
    config_file: str | None,
    database_url: str | None,
    window: str,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Cost, quality, escalation and cold-start rates per model and tenant over a window."""
    from dataclasses import asdict

    from routebook.cli_render import render_stats
    from routebook.service.stats import routing_stats

    hours = _hours(window)
    result = _over_store(config_file, database_url, lambda s: routing_stats(s, hours, namespace))
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
    else:
        render_stats(result)


def _over_store(config_file: str | None, database_url: str | None, read: Callable[[Any], T]) -> T:
    """`read_store` with the command's settings."""
    return read_store(_settings(config_file, database_url=database_url), read)


def read_store(settings: Settings, read: Callable[[Any], T]) -> T:
    """Open the configured store, run one read over it, close it.

    A report or a dry run only reads: it never creates a SQLite file (a mistyped path would
    report zeros, or a diff against nothing, from a new, empty store) nor migrates the schema
    under running servers; it asks for `db upgrade` instead."""
    from sqlalchemy.exc import OperationalError

    from routebook.errors import Unavailable
    from routebook.store import migrate
    from routebook.store.db import open_store, parse_url, shown_url

    url = parse_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise FailedPrecondition(f"no SQLite store at {url.database!r}: check --db")
    store = open_store(
        settings.database_url, statement_timeout_seconds=settings.store_statement_timeout_seconds
    )
    where = shown_url(url)
    try:
        at, head = migrate.current(store.engine), migrate.head()
        if at is None:
            raise FailedPrecondition(
                f"the store at {where} has no routebook schema (an empty database): check "
                "--db, or run `routebook db upgrade` to create it"
            )
        if not migrate.knows(at):
            raise FailedPrecondition(
                f"the store at {where} is at schema revision {at}, which this routebook does "
                f"not know (it needs {head}; a newer routebook migrated the store): use that "
                "routebook, or check --db"
            )
        if at != head:
            raise FailedPrecondition(
                f"the store at {where} is at schema revision {at}, this routebook needs "
                f"{head}: run `routebook db upgrade` (which migrates it under any running "
                "servers), or check --db"
            )
        return read(store)
    except OperationalError as exc:  # opened, then failed during the read (locked, timed out)
        raise Unavailable(
            f"the store at {where} failed while it was read: {str(exc.orig).strip()}; "
            "try again (a busy store, a statement timeout) or check the store"
        ) from None
    finally:
        store.dispose()


#: The longest --window `stats` reads back (ten years; longer overflows date arithmetic).
MAX_STATS_DAYS = 3660


def _hours(window: str) -> float:
    units = {"h": 1.0, "d": 24.0}
    try:
        amount = float(window[:-1])
        unit = units[window[-1]]
    except (ValueError, KeyError, IndexError):
        raise click.BadParameter(
            f"{window!r}: use a number and h or d, e.g. 24h or 7d", param_hint="--window"
        ) from None
    if not 0 < amount * unit <= MAX_STATS_DAYS * 24:
        raise click.BadParameter(
            f"the window must be positive and at most {MAX_STATS_DAYS}d", param_hint="--window"
        )
    return amount * unit


def _register_subcommands() -> None:
    from routebook.cli_admin import admin, check, drift, reindex

    main.add_command(admin)
    main.add_command(check)
    main.add_command(drift)
    main.add_command(reindex)


_register_subcommands()


@main.command()
@click.option(
    "--size",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Examples in the namespace.",
)
@click.option(
    "--requests",
    type=click.IntRange(1),
    default=400,
    show_default=True,
    help="Decides per concurrency level.",
)
@click.option(
    "--concurrency",
    default="1,8,32,64",
    show_default=True,
    help="Concurrency levels, comma-separated positive integers, measured in order.",
)
@click.option(
    "--datasets",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("../shared/datasets"),
    show_default=True,
    help="Folder of the shared datasets whose texts fill the index.",
)
@click.option(
    "--db",
    "database_url",
    help="Store to fill (default: a fresh SQLite file); use an empty scratch database.",
)
@click.option(
    "--target",
    help="host:port of a running, filled server to load instead of starting one.",
)
@click.option(
    "--metrics",
    "metrics_url",
    help="With --target: the server's metrics URL (e.g. http://host:9464/metrics), to report "
    "the time spent inside it and in its embed and search stages.",
)
@click.option("--namespace", default="default", show_default=True, help="Namespace to decide in.")
@click.option(
    "--index-only",
    is_flag=True,
    help="Measure the index alone at --size (build, search, recall, snapshot, memory), with "
    "vectors made from cached real embeddings: no model, no server.",
)
@click.option(
    "--kind",
    type=click.Choice(["flat", "hnsw", "ivf"]),
    default="ivf",
    show_default=True,
    help="Index kind for --index-only.",
)
@click.option(
    "--fill-vectors",
    type=click.Choice(["model", "derived"]),
    default="model",
    show_default=True,
    help="Where the fill's vectors come from. model: every fill text embedded by the model "
    "(about 190 texts/s on 2 cores). derived: only the distinct dataset texts are embedded; "
    "each prefix/suffix variation is stored with its base text's vector plus a little seeded "
    "noise, so a large --size fills in minutes. Queries are always embedded by the server.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the filled and started server, as `serve` reads it (repeatable), e.g. "
    "--set embed_precision=int8.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    size: int,
    requests: int,
    concurrency: str,
    datasets: Path,
    database_url: str | None,
    target: str | None,
    metrics_url: str | None,
    namespace: str,
    index_only: bool,
    kind: str,
    fill_vectors: str,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Fill a fresh namespace to --size, start a server process, and measure Decide and friends."""
    from routebook.jobs.bench import as_markdown, run_against, run_bench, to_json

    if metrics_url and not target:
        raise click.UsageError("--metrics is for --target: a started server's are read anyway")
    if fill_vectors != "model" and (index_only or target):
        raise click.UsageError("--fill-vectors is for a fill: not with --index-only or --target")
    if overrides and (index_only or target):
        raise click.UsageError(
            "--set configures the started server: not with --index-only or --target"
        )
    server_settings = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--set {item!r}: write KEY=VALUE, e.g. embed_precision=int8")
        server_settings[key.strip()] = value.strip()
    try:  # refused now, not after the fill and the server's start
        levels = tuple(int(c) for c in concurrency.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise click.UsageError(
            f"--concurrency {concurrency!r}: give positive integers separated by commas, "
            "e.g. 1,8,32"
        )
    if server_settings:
        from routebook.config import load_settings

        try:
            load_settings(server_settings)
        except RoutebookError as exc:
            raise click.UsageError(f"--set: {exc}") from None
    command = " ".join(["routebook", *sys.argv[1:]])
    if index_only:
        from routebook.jobs.bench_index import index_markdown, run_index_bench

        try:
            measured = run_index_bench(size, datasets, kind)
        except (ValueError, FileNotFoundError) as exc:  # e.g. no cached embeddings yet
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        click.echo(
            json.dumps(measured.as_dict(), indent=2)
            if as_json
            else index_markdown(measured, command)
        )
        return

    def progress(message: str) -> None:
        click.echo(message, err=True)

    if target:
        result = run_against(
            target, namespace, datasets, levels, requests, progress, metrics_url=metrics_url
        )
    else:
        result = run_bench(
            size,
            datasets,
            levels,
            requests,
            progress=progress,
            database_url=database_url,
            fill_vectors=fill_vectors,
            server_settings=server_settings,
        )
    if as_json:
        click.echo(to_json(result))
    else:
        click.echo(as_markdown(result, command))


@main.group()
def shadow() -> None:
    """Shadow mode: a candidate rule decided beside the live one (setting shadow_config)."""


@shadow.command("report")
@store_options
@click.option("--window", default="24h", show_default=True, help="How far back: 24h, 7d, ...")
@click.option("--namespace", "-n", help="Only this namespace.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def shadow_report(
    config_file: str | None,
    database_url: str | None,
    window: str,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Agreement, estimated cost and quality of the shadow candidate against the live rule."""
    from dataclasses import asdict

    from routebook.service.stats import shadow_report as build_report

    hours = _hours(window)
    settings = _settings(config_file, database_url=database_url)
    report = read_store(settings, lambda s: build_report(s, hours, namespace))
    warnings = _shadow_warnings(settings)
    if as_json:
        click.echo(json.dumps({**asdict(report), "warnings": warnings}, indent=2))
        return
    for warning in warnings:
        click.echo(f"warning: {warning}")
    click.echo(
        f"{report.decisions} decisions in shadow over {hours:g}h: {report.agreements} agree, "
        f"{report.decisions - report.agreements} differ ({report.disagreement_share:.1%})"
    )
    for pair, count in report.disagreements.items():
        click.echo(f"  {pair}: {count}")
    click.echo(
        f"estimated cost: live ${report.estimated_cost_live_usd:.6f}, candidate "
        f"${report.estimated_cost_candidate_usd:.6f}; estimated success: live "
        f"{_figure(report.estimated_success_live)}, candidate "
        f"{_figure(report.estimated_success_candidate)}"
    )
    click.echo(
        f"outcomes where they differ: live quality {_figure(report.live_quality)} "
        f"({report.live_outcomes}), candidate {_figure(report.candidate_quality)} "
        f"({report.candidate_outcomes})"
    )


def _shadow_warnings(settings: Settings) -> list[str]:
    """What the report cannot show about the candidate configured now (`shadow_config` in
    the report's settings: the file the decisions in the window were made with, unless it
    changed since)."""
    from routebook.config import load_settings
    from routebook.errors import ConfigError
    from routebook.service.stats import unmeasured_by_shadow

    if settings.shadow_config is None:
        return []
    try:
        candidate = load_settings({}, settings.shadow_config, environment=False)
    except ConfigError as exc:
        return [f"shadow_config: {exc}; the report cannot say what it does not measure"]
    unmeasured = unmeasured_by_shadow(settings, candidate)
    return [unmeasured] if unmeasured is not None else []


def _figure(value: float | None) -> str:
    """A mean to three decimals, or "n/a" where nothing was measured (0.000 would read as a
    measured failure)."""
    return "n/a" if value is None else f"{value:.3f}"


@main.command()
def settings() -> None:
    """Print every setting with its environment variable, default and meaning (Markdown)."""
    from routebook.config import settings_markdown

    click.echo(settings_markdown(), nl=False)


def _remote(
    target: str,
    call: Callable[[Any], Any],
    api_key: str | None,
    tls: bool,
    tls_ca: str | None,
) -> Any:
    import grpc

    from routebook.client import RouterClient

    root = Path(tls_ca).read_bytes() if tls_ca else None
    with RouterClient(target, api_key=api_key, tls=tls, root_certificates=root) as client:
        try:
            return call(client)
        except grpc.RpcError as exc:
            click.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
            sys.exit(1)


from routebook.cli_eval import calibrate, evaluate  # noqa: E402

main.add_command(evaluate)
main.add_command(calibrate)
