"""`routebook admin …`: the Admin API from the command line, against a running server; and
`routebook reindex`, the batch job that runs in its own process."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from routebook.errors import RoutebookError


def connection_options(func: Any) -> Any:
    """--target, --token and TLS: how `admin`, `check` and `drift` reach a server. A TLS
    server refuses plaintext, and the token must not travel in it."""
    for option in reversed(
        (
            click.option(
                "--target",
                default="127.0.0.1:50051",
                show_default=True,
                help="host:port of a routebook server.",
            ),
            click.option(
                "--token",
                envvar="ROUTEBOOK_ADMIN_TOKEN",
                help="Admin bearer token (env ROUTEBOOK_ADMIN_TOKEN).",
            ),
            click.option(
                "--tls",
                is_flag=True,
                help="Connect with TLS, trusting the system's CAs (a publicly signed server).",
            ),
            click.option(
                "--tls-ca",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="Connect with TLS, trusting this CA's PEM certificate (a private CA or a "
                "self-signed server certificate).",
            ),
        )
    ):
        func = option(func)
    return func


def _connection(
    target: str, token: str | None, timeout: float, tls: bool, tls_ca: Path | None
) -> dict[str, Any]:
    """The context object every admin command reads: where and how to connect."""
    root = None
    if tls_ca is not None:
        root = tls_ca.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" not in root:
            raise click.BadParameter(
                f"{tls_ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                param_hint="--tls-ca",
            )
    return {"target": target, "token": token, "timeout": timeout, "tls": tls, "root": root}


def _stub(ctx: click.Context) -> tuple[Any, list[tuple[str, str]]]:
    """The command's one Admin stub: made on first use, its channel closed when the whole
    command ends. One per call would leave a channel open per poll of `reindex --wait`."""
    from routebook.client import open_channel
    from routebook.v1 import admin_pb2_grpc

    obj = ctx.obj
    if "stub" not in obj:
        channel = open_channel(obj["target"], tls=obj["tls"], root_certificates=obj["root"])
        ctx.find_root().call_on_close(channel.close)
        obj["stub"] = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    token = obj["token"]
    metadata = [("authorization", f"Bearer {token}")] if token else []
    return obj["stub"], metadata


def _call(ctx: click.Context, method: str, request: Any) -> Any:
    import grpc

    stub, metadata = _stub(ctx)
    try:
        return getattr(stub, method)(request, metadata=metadata, timeout=ctx.obj["timeout"])
    except grpc.RpcError as exc:
        click.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
        sys.exit(1)


def _print(message: Any) -> None:
    from google.protobuf.json_format import MessageToDict

    click.echo(json.dumps(MessageToDict(message), indent=2))


@click.group()
@connection_options
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per call.")
@click.pass_context
def admin(
    ctx: click.Context,
    target: str,
    token: str | None,
    tls: bool,
    tls_ca: Path | None,
    timeout: float,
) -> None:
    """Manage namespaces, catalogs and examples on a running server (prints JSON)."""
    ctx.obj = _connection(target, token, timeout, tls, tls_ca)


def _catalog_from_file(path: Path) -> list[Any]:
    from routebook.routefiles import load_route_file
    from routebook.v1 import admin_pb2 as admin_pb

    try:
        route_file = load_route_file(path)
    except RoutebookError as exc:
        raise click.BadParameter(str(exc)) from None
    return [admin_pb.CatalogModel(**m.model_dump()) for m in route_file.catalog]


@admin.command("create-namespace")
@click.argument("name")
@click.option(
    "--catalog",
    "catalog_file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="A route file whose catalog the namespace gets.",
)
@click.option("--description", default="")
@click.pass_context
def create_namespace(ctx: click.Context, name: str, catalog_file: Path, description: str) -> None:
    """Create namespace NAME with the catalog of a route file."""
    from routebook.v1 import admin_pb2 as admin_pb

    request = admin_pb.CreateNamespaceRequest(
        name=name, description=description, catalog=_catalog_from_file(catalog_file)
    )
    _print(_call(ctx, "CreateNamespace", request))


@admin.command("show-namespace")
@click.argument("name")
@click.pass_context
def show_namespace(ctx: click.Context, name: str) -> None:
    """Print a namespace, its catalog and its catalog version."""
    from routebook.v1 import admin_pb2 as admin_pb

    _print(_call(ctx, "GetNamespace", admin_pb.GetNamespaceRequest(name=name)))


@admin.command("update-catalog")
@click.argument("namespace")
@click.option(
    "--catalog",
    "catalog_file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="A route file whose catalog replaces the current one.",
)
@click.option(
    "--version",
    "expected_version",
    type=click.IntRange(0, 2**63 - 1),
    required=True,
    help="The catalog_version you read (a stale one is refused with ABORTED).",
)
@click.pass_context
def update_catalog(
    ctx: click.Context, namespace: str, catalog_file: Path, expected_version: int
) -> None:
    """Replace NAMESPACE's catalog."""
    from routebook.v1 import admin_pb2 as admin_pb

    request = admin_pb.UpdateCatalogRequest(
        namespace=namespace,
        expected_version=expected_version,
        catalog=_catalog_from_file(catalog_file),
    )
    _print(_call(ctx, "UpdateCatalog", request))


@admin.command("upsert")
@click.argument("namespace")
@click.argument("jsonl", type=click.File("r"))
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Examples per streamed batch.",
)
@click.pass_context
def upsert(ctx: click.Context, namespace: str, jsonl: Any, batch: int) -> None:
    """Stream reference examples from JSONL rows {"text", "route", "best_model"} (- = stdin)."""
    import grpc

    from routebook.v1 import admin_pb2 as admin_pb

    # The whole file is read and checked before anything is sent: the server commits each
    # batch as it comes, so a bad line found half-way would leave the earlier batches stored.
    examples: list[Any] = []
    try:
        for number, line in enumerate(jsonl, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, route, model = row["text"], row.get("route", ""), row["best_model"]
                if not all(isinstance(v, str) for v in (text, route, model)):
                    raise TypeError("text, route and best_model must be strings")
                # Raises UnicodeEncodeError (a ValueError) on a lone surrogate, valid JSON
                # ("\ud800") but no Unicode text.
                examples.append(admin_pb.ExampleInput(text=text, route=route, best_model=model))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                click.echo(f"error: {jsonl.name} line {number}: {exc}; nothing was sent", err=True)
                sys.exit(1)
    except UnicodeDecodeError as exc:
        click.echo(f"error: {jsonl.name} is not UTF-8 text: {exc}; nothing was sent", err=True)
        sys.exit(1)
    if not examples:
        click.echo(f"error: {jsonl.name} holds no examples; nothing was sent", err=True)
        sys.exit(1)
    requests = [
        admin_pb.UpsertExamplesRequest(namespace=namespace, examples=examples[i : i + batch])
        for i in range(0, len(examples), batch)
    ]

    stub, metadata = _stub(ctx)
    try:
        # The deadline is per batch: each is embedded before the next is read.
        response = stub.UpsertExamplesStream(
            iter(requests), metadata=metadata, timeout=ctx.obj["timeout"] * len(requests)
        )
    except grpc.RpcError as exc:
        click.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
        sys.exit(1)
    click.echo(
        f"added {response.added}, updated {response.updated}, unchanged {response.unchanged}"
    )


@admin.command("delete")
@click.argument("namespace")
@click.argument("example_ids", type=click.IntRange(1, 2**63 - 1), nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, namespace: str, example_ids: tuple[int, ...]) -> None:
    """Delete examples of NAMESPACE by id."""
    from routebook.v1 import admin_pb2 as admin_pb

    request = admin_pb.DeleteExamplesRequest(namespace=namespace, example_ids=list(example_ids))
    _print(_call(ctx, "DeleteExamples", request))


@admin.command("list")
@click.argument("namespace")
@click.option("--source", type=click.Choice(["reference", "history"]))
@click.option("--model", default="")
@click.option("--prefix", "text_prefix", default="")
@click.option("--route", default="")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--page-token", default="")
@click.pass_context
def list_examples(
    ctx: click.Context, /, namespace: str, source: str | None, **filters: Any
) -> None:
    """List a page of NAMESPACE's examples (pass nextPageToken to --page-token for more)."""
    from routebook.v1 import admin_pb2 as admin_pb
    from routebook.v1 import router_pb2 as pb

    sources: dict[str | None, Any] = {
        "reference": pb.SOURCE_REFERENCE,
        "history": pb.SOURCE_HISTORY,
        None: 0,
    }
    request = admin_pb.ListExamplesRequest(namespace=namespace, source=sources[source], **filters)
    _print(_call(ctx, "ListExamples", request))


@admin.command("stats")
@click.option("--namespace", default="")
@click.pass_context
def admin_stats(ctx: click.Context, namespace: str) -> None:
    """Counts and index state per namespace, from the server."""
    from routebook.v1 import admin_pb2 as admin_pb

    _print(_call(ctx, "GetStats", admin_pb.GetStatsRequest(namespace=namespace)))


@admin.command("check")
@click.option("--namespace", default="")
@click.pass_context
def admin_check(ctx: click.Context, namespace: str) -> None:
    """Compare the server's index with the store; exit 1 when they differ."""
    from routebook.v1 import admin_pb2 as admin_pb

    response = _call(ctx, "CheckIndex", admin_pb.CheckIndexRequest(namespace=namespace))
    _print(response)
    if not response.consistent:
        sys.exit(1)


REBASELINE_HELP = (
    "After the report, start a new reference window with the next decisions (after a "
    "deliberate change, such as a prune); the stored reference is replaced for every server."
)


@admin.command("drift")
@click.option("--namespace", default="")
@click.option("--rebaseline", is_flag=True, help=REBASELINE_HELP)
@click.pass_context
def admin_drift(ctx: click.Context, namespace: str, rebaseline: bool = False) -> None:
    """The server's drift figures and verdict; exit 1 when a namespace drifted."""
    from routebook.v1 import admin_pb2 as admin_pb

    request = admin_pb.GetDriftRequest(namespace=namespace, rebaseline=rebaseline)
    response = _call(ctx, "GetDrift", request)
    _print(response)
    for entry in response.namespaces:
        verdict = "DRIFTED: " + "; ".join(entry.moved) if entry.drifted else "stable"
        click.echo(f"{entry.namespace}: {verdict}", err=True)
    if any(entry.drifted for entry in response.namespaces):
        sys.exit(1)


@click.command("check")
@connection_options
@click.option("--namespace", default="")
@click.pass_context
def check(
    ctx: click.Context,
    target: str,
    token: str | None,
    tls: bool,
    tls_ca: Path | None,
    namespace: str,
) -> None:
    """Compare a running server's index with the store (same as `routebook admin check`)."""
    ctx.obj = _connection(target, token, 30.0, tls, tls_ca)
    ctx.invoke(admin_check, namespace=namespace)


@click.command("drift")
@connection_options
@click.option("--namespace", default="")
@click.option("--rebaseline", is_flag=True, help=REBASELINE_HELP)
@click.pass_context
def drift(
    ctx: click.Context,
    target: str,
    token: str | None,
    tls: bool,
    tls_ca: Path | None,
    namespace: str,
    rebaseline: bool,
) -> None:
    """Drift figures of a running server with a verdict (same as `routebook admin drift`)."""
    ctx.obj = _connection(target, token, 30.0, tls, tls_ca)
    ctx.invoke(admin_drift, namespace=namespace, rebaseline=rebaseline)


@admin.command("reindex")
@click.option("--namespace", default="")
@click.option("--index-type", type=click.Choice(["flat", "hnsw", "ivf"]))
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.pass_context
def admin_reindex(ctx: click.Context, namespace: str, index_type: str | None, wait: bool) -> None:
    """Start a reindex on the server; with --wait, follow it to the end."""
    from routebook.v1 import admin_pb2 as admin_pb

    job = _call(
        ctx, "Reindex", admin_pb.ReindexRequest(namespace=namespace, index_kind=index_type or "")
    )
    while wait and job.state == admin_pb.JOB_STATE_RUNNING:
        time.sleep(0.5)
        job = _call(ctx, "GetReindexJob", admin_pb.GetReindexJobRequest(job_id=job.job_id))
    _print(job)
    if index_type and job.index_kind and job.index_kind != index_type:
        from routebook.index.kinds import why_not

        why = why_not(index_type, job.index_kind, job.index_examples)
        click.echo(f"published a {job.index_kind} index, not {index_type}: {why}", err=True)
    if job.state == admin_pb.JOB_STATE_FAILED:
        sys.exit(1)


@click.command()
@click.option("--db", "database_url", help="Store URL; env ROUTEBOOK_DATABASE_URL.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="ROUTEBOOK_CONFIG")
@click.option("--namespace", "-n", default=None, help="One namespace (default: all).")
@click.option("--model", "model_path", help="Embed with this local model folder instead.")
@click.option(
    "--index-type",
    type=click.Choice(["flat", "hnsw", "ivf"]),
    help="Index kind (default: chosen by size).",
)
@click.option("--snapshot-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--reuse-vectors",
    is_flag=True,
    help="Reuse vectors cached for this model instead of re-embedding.",
)
def reindex(
    database_url: str | None,
    config_file: str | None,
    namespace: str | None,
    model_path: str | None,
    index_type: str | None,
    snapshot_dir: Path | None,
    reuse_vectors: bool,
) -> None:
    """Re-embed every example, build a new index generation off to the side, snapshot it and
    publish it: running servers on the same store swap to it. Safe to kill and run again."""
    from rich.progress import Progress

    from routebook.config import load_settings
    from routebook.wiring import build

    settings = load_settings(
        {
            "database_url": database_url,
            "model_path": model_path,
            "snapshot_dir": snapshot_dir,
            "decision_log": "",
        },
        config_file,
    )
    app = build(settings, load_routes=False, load_indexes=False)
    job_id = app.reindexer.start(namespace, index_type)
    total = app.reindexer.status(job_id).total
    with Progress(transient=False) as bar:
        task = bar.add_task("re-embedding", total=total)
        status = app.reindexer.run(
            job_id, namespace, index_type, _advance(bar, task), reembed=not reuse_vectors
        )
    app.close()
    from routebook.index.kinds import why_not

    click.echo(
        f"reindex {status.job_id}: {status.state}, {status.done} examples"
        # A job over every namespace has no one generation: each is listed below.
        + (f", generation {status.generation}" if status.namespace else "")
    )
    for published in status.published:
        # The kind built, and why when it is not the one asked for (IVF needs enough vectors).
        asked = why_not(index_type, published.kind, published.examples) if index_type else ""
        click.echo(
            f"  {published.namespace}: generation {published.generation}, {published.kind} "
            f"index of {published.examples} examples"
            + (f" (not {index_type}: {asked})" if asked else "")
        )


def _advance(bar: Any, task: Any) -> Callable[[int], None]:
    return lambda n: bar.advance(task, n)
