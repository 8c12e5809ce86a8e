"""`routebook eval` and `routebook calibrate`: measure the router on a dataset, tune it to a goal.

Kept apart from cli.py because they are batch jobs with their own options. Like every command,
they import torch, FAISS and scikit-learn only when run, so `routebook --help` stays instant.
A caller (the tests) may hand in a loaded embedder through click's context object
(`obj={"embedder": ...}`), so the model loads once per test session.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _common(func: Any) -> Any:
    options = [
        click.option("--index", "index_path", type=_FILE, required=True, help="JSONL to index."),
        click.option("--config", "config_file", type=_FILE, help="TOML settings (k, target, ...)."),
        click.option("--k", type=click.IntRange(1, 1000), help="Neighbours per decision."),
        click.option(
            "--catalog",
            "catalog_path",
            type=_FILE,
            help="Route file whose catalog prices the models (default: RouteLLM's pair).",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the bootstrap, the calibration split and the linear head.",
        ),
        click.option(
            "--resamples",
            type=click.IntRange(1),
            default=1000,
            show_default=True,
            help="Bootstrap resamples.",
        ),
        click.option("--limit", type=click.IntRange(1), help="Use only the first N test rows."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Embedding cache (default ~/.cache/routebook; env ROUTEBOOK_CACHE_DIR).",
        ),
        click.option("--model-path", help="Local sentence-transformers model folder."),
        click.option(
            "--target-mode",
            type=click.Choice(["absolute", "relative"]),
            help="Quality target as an absolute success estimate, or as a share of the best "
            "model's estimate (default: the setting, else absolute).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _fail(exc: ValueError) -> None:
    """A data file's ValueError as an `error:` line, as the `routebook` group does for a
    RoutebookError."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


def _inputs(
    ctx: click.Context,
    config_file: Path | None,
    k: int | None,
    model_path: str | None,
    catalog_path: Path | None,
    cache_dir: Path | None,
    target_mode: str | None,
    environment: bool = True,
    layers: bool = False,
) -> Any:
    from routebook.jobs.run import Inputs

    embedder = (ctx.obj or {}).get("embedder")
    return Inputs.make(
        config_file=config_file,
        k=k,
        model_path=model_path,
        catalog_path=catalog_path,
        cache_dir=cache_dir,
        embedder=embedder,
        target_mode=target_mode,
        environment=environment,
        layers=layers,
    )


@click.command("eval")
@_common
@click.option("--test", "test_path", type=_FILE, required=True, help="JSONL to route and score.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the cost-quality curve to this PNG.",
)
@click.option(
    "--oos-recall",
    type=click.FloatRange(0, 1),
    default=0.8,
    show_default=True,
    help="Intent data: OOS recall goal for choosing the baselines' thresholds.",
)
@click.option(
    "--baseline",
    "baseline_file",
    type=_FILE,
    help="Gate: settings TOML of the current router (as `serve --config` reads it).",
)
@click.option(
    "--candidate",
    "candidate_file",
    type=_FILE,
    help="Gate: settings TOML that must not be worse than --baseline.",
)
@click.option(
    "--tolerance-quality",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Gate: how far the candidate's quality figures may fall below the baseline's.",
)
@click.option(
    "--min-saving",
    type=click.FloatRange(max=1),
    default=0.0,
    show_default=True,
    help="Gate, outcome data: least share of the baseline's cost per query the candidate must "
    "save (negative: the extra cost allowed).",
)
@click.option(
    "--answer-tokens",
    type=click.IntRange(0),
    help="Outcome data: the answer length (output tokens) every call is priced at, e.g. one "
    "measured on your traffic (default: the settings' default_output_tokens; in the gate, the "
    "baseline's). The router still decides at each file's default_output_tokens, as serve does.",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    index_path: Path,
    test_path: Path,
    config_file: Path | None,
    k: int | None,
    catalog_path: Path | None,
    seed: int,
    resamples: int,
    limit: int | None,
    cache_dir: Path | None,
    model_path: str | None,
    target_mode: str | None,
    as_json: bool,
    plot_path: Path | None,
    oos_recall: float,
    baseline_file: Path | None,
    candidate_file: Path | None,
    tolerance_quality: float,
    min_saving: float,
    answer_tokens: int | None,
) -> None:
    """Route every query of --test through a namespace filled from --index, and score it.

    Outcome data (prompt + outcomes) gives APGR, CPT(50%), CPT(80%), quality and cost; intent
    data (text + label) gives accuracy, macro-F1 and out-of-scope detection. Both beside the
    random router, a kNN vote and a linear head, with bootstrap 95% intervals.

    Gate (--baseline and --candidate, two settings files as `serve --config` reads them; k and
    the decision settings come from the files, so --config, --k and --target-mode are refused):
    the data is embedded once and routed with each file at its own quality target, and both are
    shown side by side. Each side decides with everything of its file that serve applies
    (default_output_tokens, head_max_examples and the index kind included); both are charged at
    one answer length, the baseline's default_output_tokens unless --answer-tokens is given, so
    a candidate that only assumes shorter answers is charged what its choices really cost.
    The candidate fails, with exit code 1 and a one-line reason on stderr,
    when its quality falls more than --tolerance-quality below the baseline's, or when it saves
    less than --min-saving of the baseline's cost per query. Quality is the mean quality
    relative to the strongest model's (outcome data), or in-scope accuracy and OOS recall
    (intent data; --min-saving above 0 is refused there, intent data has no cost). Otherwise
    the exit code is 0. Bad input also exits 1, with "error:" on stderr.

    \b
    Example: fail unless tuned.toml keeps quality within 1 point and saves 10%:
      routebook eval --index index.jsonl --test test.jsonl \\
        --baseline current.toml --candidate tuned.toml \\
        --tolerance-quality 0.01 --min-saving 0.1 --json
    """
    if baseline_file is not None or candidate_file is not None:
        _gate(
            ctx,
            baseline_file,
            candidate_file,
            index_path=index_path,
            test_path=test_path,
            refused={
                "--config": config_file,
                "--k": k,
                "--target-mode": target_mode,
                "--plot": plot_path,
            },
            catalog_path=catalog_path,
            seed=seed,
            resamples=resamples,
            limit=limit,
            cache_dir=cache_dir,
            model_path=model_path,
            as_json=as_json,
            tolerance_quality=tolerance_quality,
            min_saving=min_saving,
            answer_tokens=answer_tokens,
        )
        return
    if plot_path is not None:
        from routebook.jobs.datasets import detect_kind

        try:
            intent = detect_kind(index_path) == "intent"
        except ValueError as exc:  # a malformed data file (RoutebookError: the group's handler)
            _fail(exc)
        if intent:  # said now, not after the whole run
            raise click.UsageError(
                "--plot draws the cost-quality curve of outcome data; intent data has none"
            )
    try:
        from routebook.jobs import report
        from routebook.jobs.progress import rich_tracker
        from routebook.jobs.run import run_eval

        inputs = _inputs(ctx, config_file, k, model_path, catalog_path, cache_dir, target_mode)
        with rich_tracker(enabled=not as_json) as tracker:
            evaluation = run_eval(
                inputs,
                index_path,
                test_path,
                seed=seed,
                resamples=resamples,
                limit=limit,
                tracker=tracker,
                oos_recall_goal=oos_recall,
                answer_tokens=answer_tokens,
            )
        if plot_path is not None:
            report.plot(evaluation, plot_path, title=test_path.name)
    except ValueError as exc:  # a malformed data file (RoutebookError: the group's handler)
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_json(evaluation), indent=2))
    else:
        report.render(evaluation)
        if plot_path is not None:
            click.echo(f"curve written to {plot_path}")


def _gate(
    ctx: click.Context,
    baseline_file: Path | None,
    candidate_file: Path | None,
    *,
    index_path: Path,
    test_path: Path,
    refused: dict[str, object],
    catalog_path: Path | None,
    seed: int,
    resamples: int,
    limit: int | None,
    cache_dir: Path | None,
    model_path: str | None,
    as_json: bool,
    tolerance_quality: float,
    min_saving: float,
    answer_tokens: int | None,
) -> None:
    """`eval --baseline A --candidate B`: exit 0 when B passes the gate, 1 (reason on stderr)
    when it does not."""
    if baseline_file is None or candidate_file is None:
        raise click.UsageError("the gate needs both --baseline and --candidate")
    given = [flag for flag, value in refused.items() if value is not None]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} cannot be combined with --baseline/--candidate: put the "
            "settings in the two TOML files"
        )
    try:
        from routebook.jobs import gate
        from routebook.jobs.progress import rich_tracker

        # The baseline's file only builds the shared pieces (embedder, cache, catalog) here,
        # with layer pools if either side's head reads them.
        layers = any(
            gate.load_side(label, path, model_path)[0].serving.reads_layers
            for label, path in (("baseline", baseline_file), ("candidate", candidate_file))
        )
        inputs = _inputs(
            ctx,
            baseline_file,
            None,
            model_path,
            catalog_path,
            cache_dir,
            None,
            environment=False,
            layers=layers,
        )
        with rich_tracker(enabled=not as_json) as tracker:
            result = gate.run_gate(
                inputs,
                baseline_file,
                candidate_file,
                index_path,
                test_path,
                tolerance_quality=tolerance_quality,
                min_saving=min_saving,
                model_path=model_path,
                seed=seed,
                resamples=resamples,
                limit=limit,
                tracker=tracker,
                answer_tokens=answer_tokens,
            )
    except ValueError as exc:  # a malformed data file (RoutebookError: the group's handler)
        _fail(exc)
    if as_json:
        click.echo(json.dumps(gate.to_json(result), indent=2))
    else:
        gate.render(result)
    if not result.passed:
        click.echo(f"gate failed: {result.reason}", err=True)
        sys.exit(1)
    if not as_json:
        rules = ", ".join(c.figure for c in result.checks)
        click.echo(f"gate passed: the candidate holds on every rule ({rules})")


@click.command()
@_common
@click.option(
    "--test",
    "test_path",
    type=_FILE,
    required=True,
    help="JSONL the chosen setting is reported on (never tuned on).",
)
@click.option(
    "--calib",
    "calib_path",
    type=_FILE,
    help="Calibration JSONL (default: leave-one-out over --index for outcome data; 20% of "
    "each label plus every oos row, held out of --index, for intent data).",
)
@click.option(
    "--goal",
    required=True,
    help="quality=0.95 (share of the strongest model's quality, outcome data) or "
    "oos_recall=0.8 (intent data).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the chosen settings to this TOML file (read by serve and eval).",
)
@click.option(
    "--no-cascade",
    is_flag=True,
    help="Outcome data: only settings where no query goes cold (a cascade needs a caller who "
    "can grade answers).",
)
@click.option(
    "--head-features",
    type=click.Choice(["vector", "layers", "both"]),
    default="both",
    show_default=True,
    help="Outcome data: what the namespace head may read (head_features); with both, each is "
    "tried and the cheaper setting at the goal wins. When no head wins, the file says vector (a "
    "head without weight reads nothing). Intent data keeps the config's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def calibrate(
    ctx: click.Context,
    index_path: Path,
    test_path: Path,
    calib_path: Path | None,
    goal: str,
    out_path: Path | None,
    config_file: Path | None,
    k: int | None,
    catalog_path: Path | None,
    seed: int,
    resamples: int,
    limit: int | None,
    cache_dir: Path | None,
    model_path: str | None,
    target_mode: str | None,
    no_cascade: bool,
    head_features: str,
    as_json: bool,
) -> None:
    """Choose k, the cold-start threshold, the quality target and the head for --goal on a
    calibration split, report that setting on --test, and write it as a config file."""
    try:
        from routebook.jobs import calibrate as calibration
        from routebook.jobs import report
        from routebook.jobs.progress import rich_tracker

        parsed = calibration.parse_goal(goal)
        kinds = calibration.HEAD_FEATURES if head_features == "both" else (head_features,)
        inputs = _inputs(
            ctx,
            config_file,
            k,
            model_path,
            catalog_path,
            cache_dir,
            target_mode,
            layers="layers" in kinds and parsed.metric == "quality",
        )
        with rich_tracker(enabled=not as_json) as tracker:
            result = calibration.run_calibration(
                inputs,
                index_path,
                test_path,
                calib_path,
                parsed,
                seed=seed,
                resamples=resamples,
                limit=limit,
                tracker=tracker,
                cascade=not no_cascade,
                # --target-mode limits the search to that mode; without it, both are tried
                modes=(target_mode,) if target_mode else calibration.TARGET_MODES,
                head_features=kinds,
            )
        if out_path is not None:
            calibration.write_config(result, out_path)
    except ValueError as exc:  # a malformed data file (RoutebookError: the group's handler)
        _fail(exc)
    configured = inputs.settings.head_features
    if result.head_features != configured:
        # Else two configs that differ only there calibrate alike, and nothing says why.
        if result.params.head_strength == 0:
            why = (
                "no head (head_strength 0), written as vector: a head without weight reads nothing"
            )
        else:
            why = (
                f'"{result.head_features}" (--head-features both tries each kind; pass '
                f"--head-features {configured} to keep yours)"
            )
        click.echo(
            f'note: the settings say head_features = "{configured}"; calibrate chose {why}',
            err=True,
        )
    if as_json:
        click.echo(json.dumps(calibration.to_json(result), indent=2))
        return
    click.echo(calibration.describe(result))
    report.render(result.test_evaluation)
    if out_path is not None:
        click.echo(f"settings written to {out_path}")
