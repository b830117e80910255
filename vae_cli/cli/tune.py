"""`vae tune`: a sweep on Optuna, each trial a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vae_cli.cli.app import app
from vae_cli.cli.options import DataDir, RunsDir, command_line, seed_option, with_default
from vae_cli.config.settings import MAX_MEMBERS


@app.command(short_help="Search hyperparameters with Optuna, each trial a run.")
def tune(
    ctx: typer.Context,
    config_file: Annotated[
        Path, typer.Option("--config", help="TOML with fixed settings and a [search] table.")
    ],
    study: Annotated[
        str | None,
        typer.Option(
            help=with_default("Study name.", "the config file's name"), show_default=False
        ),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials this worker adds.")] = 10,
    storage: Annotated[
        str | None,
        typer.Option(
            help=with_default("SQLAlchemy URL of the study.", "RUNS_DIR/STUDY/study.db"),
            show_default=False,
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Minutes after which no new trial starts; a trial already running finishes "
            "(Ctrl-C stops it at once, saved and resumable)."
        ),
    ] = None,
    pruner: Annotated[
        str, typer.Option(help="median (stop poor trials early) or none.")
    ] = "median",
    seed: Annotated[
        int | None, seed_option("Seed of the sampler (one worker: repeatable).")
    ] = None,
    summary: Annotated[
        bool, typer.Option(help="Only show the study's best trials and plots; no new trials.")
    ] = False,
    parallel: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_MEMBERS,
            help="Trials asked at a time; those that share a shape train in one stacked step.",
        ),
    ] = 1,
) -> None:
    """Search hyperparameters with Optuna; every trial is a run folder in RUNS_DIR/STUDY/."""
    from vae_cli.cli import console, tables
    from vae_cli.commands.sweep import start_sweep

    result = start_sweep(
        config_file,
        study=study,
        trials=0 if summary else trials,
        storage=storage,
        runs_dir=runs_dir,
        data_dir=data_dir,
        timeout=timeout,
        pruner=pruner,
        seed=seed,
        command=command_line(ctx),
        parallel=parallel,
        display=lambda label, **kw: console.TrainingDisplay(
            quiet=False, label=label, panel=False, **kw
        ),
        notify=lambda line: typer.echo(line),  # flushed at once: a trial's line as it ends
        warn=lambda message: typer.echo(f"Warning: {message}", err=True),
    )
    tables.tune_summary(result)
