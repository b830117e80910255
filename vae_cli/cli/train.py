"""`vae train`: every setting a flag (its help from the config field), one call into
commands.train, a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vae_cli.cli.app import app
from vae_cli.cli.options import DataDir, RunsDir, command_line, config_option
from vae_cli.config.run_options import SEEDS_HELP

# train's options that are not config fields.
RUN_OPTIONS = (
    "ctx", "config_file", "seeds", "data_dir", "runs_dir", "name", "resume", "overwrite", "quiet",
)  # fmt: skip


@app.command()
def train(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML file of settings; flags override it.")
    ] = None,
    arch: Annotated[str | None, config_option("arch")] = None,
    latent_dim: Annotated[int | None, config_option("latent_dim")] = None,
    hidden_dim: Annotated[int | None, config_option("hidden_dim")] = None,
    activation: Annotated[str | None, config_option("activation")] = None,
    stochastic_layers: Annotated[int | None, config_option("stochastic_layers")] = None,
    latent2_dim: Annotated[int | None, config_option("latent2_dim")] = None,
    hidden2_dim: Annotated[int | None, config_option("hidden2_dim")] = None,
    prior: Annotated[str | None, config_option("prior")] = None,
    pseudo_inputs: Annotated[int | None, config_option("pseudo_inputs")] = None,
    max_logvar: Annotated[float | None, config_option("max_logvar")] = None,
    min_std: Annotated[float | None, config_option("min_std")] = None,
    dataset: Annotated[str | None, config_option("dataset")] = None,
    binarize: Annotated[str | None, config_option("binarize")] = None,
    limit: Annotated[int | None, config_option("limit")] = None,
    epochs: Annotated[int | None, config_option("epochs")] = None,
    batch_size: Annotated[int | None, config_option("batch_size")] = None,
    lr: Annotated[float | None, config_option("lr")] = None,
    adam_beta2: Annotated[float | None, config_option("adam_beta2")] = None,
    lr_schedule: Annotated[str | None, config_option("lr_schedule")] = None,
    final_lr: Annotated[float | None, config_option("final_lr")] = None,
    time_budget: Annotated[float | None, config_option("time_budget")] = None,
    seed: Annotated[int | None, config_option("seed")] = None,
    seeds: Annotated[str | None, typer.Option(help=SEEDS_HELP, show_default=False)] = None,
    grad_clip: Annotated[float | None, config_option("grad_clip")] = None,
    max_bad_steps: Annotated[int | None, config_option("max_bad_steps")] = None,
    beta: Annotated[float | None, config_option("beta")] = None,
    kl_warmup_epochs: Annotated[int | None, config_option("kl_warmup_epochs")] = None,
    free_bits: Annotated[float | None, config_option("free_bits")] = None,
    objective: Annotated[str | None, config_option("objective")] = None,
    k: Annotated[int | None, config_option("k")] = None,
    dreg: Annotated[bool | None, config_option("dreg")] = None,
    device: Annotated[str | None, config_option("device")] = None,
    amp: Annotated[bool | None, config_option("amp")] = None,
    compile: Annotated[bool | None, config_option("compile")] = None,
    cuda_graph: Annotated[bool | None, config_option("cuda_graph")] = None,
    tensorboard: Annotated[bool | None, config_option("tensorboard")] = None,
    data_dir: DataDir = None,
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[
        str | None, typer.Option(help="Run folder name (default: a timestamp).")
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
) -> None:
    """Train a VAE (or one per seed with --seeds, stacked); writes config, checkpoints,
    metrics and pictures to runs/NAME/ (runs/NAME/seed-S/ per member)."""
    flags = {key: value for key, value in locals().items() if key not in RUN_OPTIONS}
    from vae_cli.cli import console, tables
    from vae_cli.commands.train import train_command

    trained = train_command(
        flags,
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
