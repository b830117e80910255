"""`vae tune`'s start: every flag, the search space and the data checked before Optuna or torch
loads or a study is touched, then the sweep (commands/tune.py) runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_cli.config.search import Dimension, largest_sizes, searched_values
from vae_cli.config.settings import Config
from vae_cli.errors import UserError
from vae_cli.runs.folder import check_folder_name
from vae_cli.training.callbacks import Callbacks

if TYPE_CHECKING:  # torch loads after every check
    import torch

    from vae_cli.data.dataset import Dataset


def check_fixed_settings(config: Config, space: list[Dimension]) -> None:
    """The settings every trial shares must be valid before the study is touched: a trial
    that failed on them would be left in the study for nothing."""
    from vae_cli.config.checks import check_settings

    check_settings(config)


def check_largest_trial_fits(
    config: Config, space: list[Dimension], n_train: int, device: torch.device, parallel: int = 1
) -> None:
    """The memory check of `vae train` on `device`, for a stack of `parallel` of the largest
    trial the space can draw (before any trial is asked: a stack that cannot fit would leave
    them)."""
    from vae_cli.training.memory import check_step_fits

    largest = largest_sizes(space)
    check_step_fits(
        config.replace(largest), device, n_train, members=parallel, members_flag="--parallel"
    )


def start_sweep(
    config_file: Path,
    *,
    study: str | None,
    trials: int,
    storage: str | None,
    runs_dir: Path,
    data_dir: Path | None,
    timeout: float | None,
    pruner: str,
    seed: int | None,
    command: str,
    parallel: int = 1,
    display: Callable[..., Callbacks] = lambda label, **_: Callbacks(),
    notify: Callable[[str], None] = lambda line: None,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Check every flag, the search space and the data before the study is touched; then run
    `trials` trials (0: only the summary), `parallel` at a time in stacks. A sweep chooses on
    a validation split, never on the test set: a config without one gets SWEEP_VALIDATION
    images, said through `notify` (as is each trial's end; warnings go to `warn`)."""
    from vae_cli.config.search import load_tune_config

    if pruner not in ("median", "none"):
        raise UserError(f"--pruner: expected median or none, got {pruner!r}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--timeout: expected minutes > 0, got {timeout}")
    name = config_file.stem if study is None else study
    check_folder_name(name, "--study")
    config, space = load_tune_config(config_file)
    dataset = device = None
    if trials:
        config, dataset, device, data_dir = prepare_trials(
            config, space, data_dir, parallel=parallel, source=config_file, notify=notify
        )
    from vae_cli.commands.tune import Sweep, tune

    sweep = Sweep(
        config, space, runs_dir / name, data_dir, command, display, dataset, device, notify, warn
    )
    return tune(
        sweep,
        storage,
        name,
        trials=trials,
        timeout_minutes=timeout,
        pruner=pruner,
        seed=seed,
        summary_only=trials == 0,
        parallel=parallel,
    )


def prepare_trials(
    config: Config,
    space: list[Dimension],
    data_dir: Path | None,
    *,
    parallel: int,
    source: Path,
    notify: Callable[[str], None],
) -> tuple[Config, Dataset, torch.device, Path]:
    """Before any trial is asked: the shared settings checked, the device resolved once, the
    data read once, a validation split set when the config has none, and the largest trial
    checked to fit. Returns the config the trials start from, the data, device and folder."""
    from vae_cli.data.dataset import load_dataset
    from vae_cli.data.folders import resolve_data_dir
    from vae_cli.data.split import check_batch_size, check_validation, sweep_validation
    from vae_cli.device import flush_denormals, resolve_device

    check_fixed_settings(config, space)
    device = resolve_device(config.train.device)  # once, for every trial
    flush_denormals(device)  # before torch's worker threads
    resolved = resolve_data_dir(data_dir)
    dataset = load_dataset(resolved, config.data.dataset, config.data.limit)
    if not config.data.validation:
        held_out = sweep_validation(len(dataset.train_images))
        config = config.replace({"validation": held_out})
        notify(
            f"{source} sets no [data] validation: trials are chosen and pruned on "
            f"{held_out:,} held-out training images (set validation to change it)"
        )
    check_validation(config.data.validation, len(dataset.train_images), config.data.limit)
    largest_batch = max(searched_values(config, space, "batch_size"))
    check_batch_size(largest_batch, len(dataset.train_images) - config.data.validation)
    check_largest_trial_fits(config, space, len(dataset.train_images), device, parallel)
    return config, dataset, device, resolved
