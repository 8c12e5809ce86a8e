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

from routebook.errors import RoutebookError

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


def _fail(exc: Exception) -> None:
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
) -> None:
    """Route every query of --test through a namespace filled from --index, and score it.

    Outcome data (prompt + outcomes) gives APGR, CPT(50%), CPT(80%), quality and cost; intent
    data (text + label) gives accuracy, macro-F1 and out-of-scope detection. Both beside the
    random router, a kNN vote and a linear head, with bootstrap 95% intervals.
    """
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
            )
        if plot_path is not None:
            report.plot(evaluation, plot_path, title=test_path.name)
    except (RoutebookError, ValueError) as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_json(evaluation), indent=2))
    else:
        report.render(evaluation)
        if plot_path is not None:
            click.echo(f"curve written to {plot_path}")


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
    as_json: bool,
) -> None:
    """Choose k, the cold-start threshold and the quality target for --goal on a calibration
    split, report that setting on --test, and write it as a config file."""
    try:
        from routebook.jobs import calibrate as calibration
        from routebook.jobs import report
        from routebook.jobs.progress import rich_tracker

        parsed = calibration.parse_goal(goal)
        inputs = _inputs(ctx, config_file, k, model_path, catalog_path, cache_dir, target_mode)
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
            )
        if out_path is not None:
            calibration.write_config(result, out_path)
    except (RoutebookError, ValueError) as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(calibration.to_json(result), indent=2))
        return
    click.echo(calibration.describe(result))
    report.render(result.test_evaluation)
    if out_path is not None:
        click.echo(f"settings written to {out_path}")
