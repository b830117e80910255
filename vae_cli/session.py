"""Starting or resuming a training run: config precedence, run folder, data, then the trainer.

Everything a `vae train` invocation decides before the loop starts, in the order that refuses
bad input before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vae_cli.config import FIELDS, Config, apply_flags, flag_name, load_config
from vae_cli.errors import UserError

# Settings a resumed run may change: they affect neither the model nor the data (e.g. an
# IWAE or lower-learning-rate fine-tune of a finished run).
RESUMABLE = {
    "epochs",
    "device",
    "amp",
    "compile",
    "cuda_graph",
    "tensorboard",
    "max_bad_steps",
    "lr",
    "adam_beta2",
    "lr_schedule",
    "final_lr",
    "time_budget",
    "grad_clip",
    "beta",
    "kl_warmup_epochs",
    "free_bits",
    "objective",
    "k",
}


def build_config(flags: dict[str, Any], config_file: Path | None) -> Config:
    """Built-in defaults < config file < command-line flags."""
    base = load_config(config_file) if config_file is not None else Config()
    return apply_flags(base, flags)


def resume_target(target: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for --resume given a run folder or a checkpoint file."""
    if target.is_dir():
        checkpoint = target / "checkpoints" / "last.pt"
        if not checkpoint.is_file():
            raise UserError(f"--resume {target}: no checkpoints/last.pt in that folder")
        return target, checkpoint
    if not target.exists():
        raise UserError(f"--resume {target}: no such run folder or checkpoint")
    if target.suffix == ".safetensors":
        raise UserError(
            f"--resume {target}: an export holds the weights only; resume from the run's "
            "checkpoints/last.pt (or its run folder)"
        )
    root = target.parent.parent if target.parent.name == "checkpoints" else target.parent
    return root, target


# What a resume of a run with [[phases]] may change: how it runs, not what it trains.
RESUMABLE_WITH_PHASES = {"device", "amp", "compile", "cuda_graph", "tensorboard", "max_bad_steps"}


def resumed_config(stored: Config, flags: dict[str, Any]) -> Config:
    """The checkpoint's config with the flags a resume may change; others must agree."""
    given = {key: value for key, value in flags.items() if value is not None}
    current = {key: getattr(getattr(stored, FIELDS[key][0]), key) for key in given}
    for key, value in given.items():
        if stored.phases and key in RESUMABLE - RESUMABLE_WITH_PHASES and value != current[key]:
            raise UserError(
                f"{flag_name(key)}: this run trains in [[phases]] from its config; a resume "
                "continues them as written (start a new run to change them)"
            )
        if key not in RESUMABLE and value != current[key]:
            raise UserError(
                f"{flag_name(key)} {value} differs from the resumed run's "
                f"{current[key]}; a resumed run keeps its model and data settings "
                "(start a new run with --name instead)"
            )
    return apply_flags(stored, {key: given[key] for key in given if key in RESUMABLE})


def update_run_config(root: Path, config: Config, command: str, notes: list[str]) -> None:
    """A resume that changed settings rewrites config.toml, keeping the original manifest and
    adding the resume's command and what it changed about the run's numbers."""
    from vae_cli.config import to_toml
    from vae_cli.files import write_atomically
    from vae_cli.runs import read_manifest

    manifest = read_manifest(root)
    for key, added in (("resumed_with", [command]), ("resume_notes", notes)):
        earlier = manifest.get(key)
        if added:
            manifest[key] = [*(earlier if isinstance(earlier, list) else []), *added]
    write_atomically(root / "config.toml", to_toml(config, manifest).encode())


def resume_notes(checkpoint: dict[str, Any], config: Config, device_type: str) -> list[str]:
    """What makes a resumed run differ from an uninterrupted one, for the manifest."""
    from vae_cli.streams import saved_device_type

    step, stored = checkpoint["step"], checkpoint["config"].train
    notes = []
    if (saved := saved_device_type(checkpoint)) != device_type:
        notes.append(
            f"step {step}: {saved} -> {device_type}; the noise and binarization streams were "
            "re-derived from the seed and the step"
        )
    horizon = (config.train.epochs, config.train.time_budget)
    if config.train.lr_schedule == "cosine" and horizon != (stored.epochs, stored.time_budget):
        notes.append(
            f"step {step}: the cosine schedule's horizon changed (epochs {stored.epochs} -> "
            f"{config.train.epochs}, time budget {stored.time_budget} -> "
            f"{config.train.time_budget}); the learning rate from here follows the new one"
        )
    return notes


def check_unfinished(resume: Path, config: Config, checkpoint: dict[str, Any]) -> None:
    """A resume must have training left to do: epochs, time budget or phases."""
    from vae_cli.plan import resume_done

    if not resume_done(config, checkpoint):
        return
    if config.phases:
        raise UserError(f"--resume {resume}: the run has finished all its phases")
    raise UserError(
        f"--resume {resume}: the run has completed {checkpoint['epoch']} of "
        f"{config.train.epochs} epochs"
        + (" or spent its time budget" if config.train.time_budget else "")
        + f"; pass --epochs N with N > {checkpoint['epoch']} (or a larger --time-budget) "
        "to train it further"
    )


def check_phase_lengths(config: Config, flags: dict[str, Any], config_file: Path | None) -> None:
    """--epochs and --time-budget set one length; a config in phases has one per phase, and
    changing only the first would hide how long the others still run."""
    given = [key for key in ("epochs", "time_budget") if flags.get(key) is not None]
    if config.phases and given:
        raise UserError(
            f"{flag_name(given[0])}: {config_file} trains in {len(config.phases) + 1} phases, "
            f"each with its own length; to shorten the run, copy the file and lower each "
            "phase's epochs or time_budget"
        )


def check_training_settings(config: Config) -> None:
    """Settings that contradict each other, in any phase."""
    for index in range(len(config.phases) + 1):
        train = config.phase(index).train
        where = f"phase {index + 1}: " if config.phases else ""
        # The KL weight, its warm-up and free bits shape the ELBO only; IWAE has no KL term.
        if train.objective == "iwae" and (
            train.beta != 1.0 or train.kl_warmup_epochs or train.free_bits
        ):
            raise UserError(
                f"{where}--objective iwae trains the importance-weighted bound (Burda et al. "
                "2016), which has no separate KL term: --beta, --kl-warmup-epochs and "
                "--free-bits apply to --objective elbo only (set them to 1, 0 and 0)"
            )
        if train.lr_schedule == "cosine" and train.final_lr > train.lr:
            raise UserError(
                f"{where}--final-lr {train.final_lr:g} is above --lr {train.lr:g}: a cosine "
                "schedule decays from --lr to --final-lr"
            )


def check_posterior_bounds(config: Config) -> None:
    """The floor on sigma must lie below the ceiling that max_logvar puts on it."""
    model = config.model
    ceiling = math.exp(model.max_logvar / 2)
    if model.min_std >= ceiling:
        raise UserError(
            f"--min-std {model.min_std:g} is not below the largest sigma --max-logvar "
            f"{model.max_logvar:g} allows (exp({model.max_logvar:g} / 2) = {ceiling:.4g}); "
            "lower --min-std or raise --max-logvar"
        )


def start_training(
    flags: dict[str, Any],
    *,
    config_file: Path | None,
    data_dir: Path | None,
    runs_dir: Path,
    name: str | None,
    resume: Path | None,
    overwrite: bool,
    command: str,
    display: Callable[..., Any],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate everything, prepare the run folder, train; returns metrics and paths written."""
    from vae_cli.checkpoint import load_checkpoint
    from vae_cli.runs import check_folder_name, check_new_run, default_run_name, run_data_dir

    checkpoint = None
    if resume is not None:
        if config_file is not None or name is not None or overwrite:
            raise UserError(
                "--resume continues a run with its own config and folder; "
                "drop --config, --name and --overwrite"
            )
        root, checkpoint_path = resume_target(resume)
        checkpoint = load_checkpoint(checkpoint_path)
        config = resumed_config(checkpoint["config"], flags)
        check_unfinished(resume, config, checkpoint)
        data_dir = run_data_dir(root, data_dir)  # as trained, like every command on a run
    else:
        config = build_config(flags, config_file)
        check_phase_lengths(config, flags, config_file)
        if name is not None:
            check_folder_name(name, "--name")
        root = runs_dir / (default_run_name() if name is None else name)
        check_new_run(root, overwrite=overwrite)
    return run_training(
        config,
        root,
        checkpoint,
        data_dir=data_dir,
        command=command,
        display=display,
        overwrite=overwrite,
    )


def run_training(
    config: Config,
    root: Path,
    checkpoint: dict[str, Any] | None,
    *,
    data_dir: Path | None,
    command: str,
    display: Callable[..., Any],
    overwrite: bool = False,
    dataset: Any = None,
    reporter: Any = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Train a new run in `root` (checkpoint None) or continue it from `checkpoint`; `dataset`
    is read from `data_dir` unless given."""
    from vae_cli.callbacks import CallbackGroup, Callbacks
    from vae_cli.data import load_dataset, resolve_data_dir
    from vae_cli.device import device_description, resolve_device
    from vae_cli.errors import TrainingPruned
    from vae_cli.memory import check_step_fits
    from vae_cli.run_files import RunPaths
    from vae_cli.runs import build_manifest, create_run
    from vae_cli.train import Run, train

    check_training_settings(config)
    check_posterior_bounds(config)
    if config.train.tensorboard:
        from vae_cli.board import check_tensorboard_installed

        check_tensorboard_installed()
    device = resolve_device(config.train.device)
    if dataset is None:
        dataset = load_dataset(resolve_data_dir(data_dir), config.data.dataset, config.data.limit)
    check_step_fits(config, device, len(dataset.train_images))
    paths = RunPaths(root)
    if checkpoint is None:
        manifest = build_manifest(
            command, device_description(device), resolve_data_dir(data_dir), dataset.md5
        )
        create_run(root, config, manifest, overwrite=overwrite)
    else:
        notes = resume_notes(checkpoint, config, device.type)
        if config != checkpoint["config"] or notes:
            update_run_config(root, config, command, notes)
    epochs = None if config.phases else config.train.epochs  # phases may end by time budget
    progress = display(run_dir=str(root), epochs=epochs, binarize=config.data.binarize)
    hooks: list[Callbacks] = []  # the run's own: TensorBoard first, so it sees a pruned epoch
    if config.train.tensorboard:
        from vae_cli.board import TensorBoardLogger

        hooks.append(TensorBoardLogger(paths, config, checkpoint["epoch"] if checkpoint else 0))
    if reporter is not None:
        hooks.append(reporter)
    run = Run(config, paths, checkpoint, CallbackGroup(*hooks))
    try:
        (state,) = train([run], dataset=dataset, callbacks=progress)
    finally:
        run.callbacks.close()
        progress.close()
    if state.status == "pruned":
        raise TrainingPruned(f"pruned after epoch {state.progress.epoch}")
    written = [
        str(p)
        for p in (paths.config, paths.last, paths.best, paths.metrics, paths.curves)
        if p.exists()
    ]
    return state.history, written
