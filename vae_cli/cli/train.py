"""`vae train`: every setting a flag (made from its field, see SettingFlags), one call into
commands.train, a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vae_cli.cli.app import app
from vae_cli.cli.options import DataDir, RunsDir, SettingFlags, command_line, with_default
from vae_cli.config.run_options import SEEDS_HELP


@app.command(short_help="Train a VAE, or one per seed with --seeds.")
@SettingFlags
def train(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML file of settings; flags override it.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help=SEEDS_HELP, show_default=False)] = None,
    data_dir: DataDir = None,
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[
        str | None,
        typer.Option(help=with_default("Run folder name.", "a timestamp"), show_default=False),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this folder (or from this checkpoint).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing run of that --name.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            help="Only one line per epoch and the files written: no start panel, progress "
            "bars or summary table (warnings and errors still show)."
        ),
    ] = False,
    *,
    settings: dict[str, Any],
) -> None:
    """Train a VAE (or one per seed with --seeds, stacked); writes config, checkpoints,
    metrics and pictures to runs/NAME/ (runs/NAME/seed-S/ per member)."""
    from vae_cli.cli import console, tables
    from vae_cli.commands.train import train_command

    trained = train_command(
        settings,
        seeds=seeds,
        config_file=config_file,
        data_dir=data_dir,
        runs_dir=runs_dir,
        name=name,
        resume=resume,
        overwrite=overwrite,
        command=command_line(ctx),
        display=lambda **kw: console.TrainingDisplay(quiet=quiet, **kw),
    )
    tables.training_summary(trained, tables=not quiet)
