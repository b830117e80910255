"""The trained model a command reads: loaded from a checkpoint or an export onto a device, the
line that says which run it is when the user named none, its test images, and writing a
picture with disk problems as one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vae_cli.checkpoint import load_checkpoint
from vae_cli.config.settings import Config, describe_model
from vae_cli.config.values import show_value
from vae_cli.data.dataset import load_dataset, prepare_images, to_float
from vae_cli.device import resolve_device
from vae_cli.errors import UserError
from vae_cli.model.vae import VAE
from vae_cli.runs.locate import run_dir_of
from vae_cli.runs.manifest import run_data_dir


@dataclass
class Loaded:
    model: VAE
    config: Config
    checkpoint: dict[str, Any]
    path: Path
    device: torch.device
    picked: dict[str, Any] | None = None  # why this model, when the user named none

    @property
    def run_dir(self) -> Path:
        """The run folder a checkpoint belongs to (where default outputs go)."""
        return run_dir_of(self.path)

    def data_dir(self, flag: Path | None) -> Path:
        return run_data_dir(self.run_dir, flag)


def note_latest_run(loaded: Loaded, runs_dir: Path) -> None:
    """Record that the latest run was picked (which, with its status if not finished)."""
    from vae_cli.runs.population import best_member, is_population, member_folders
    from vae_cli.runs.status import read_status

    status = read_status(loaded.run_dir)
    state = "" if status == "finished" else f", {status}"
    epoch = loaded.checkpoint["epoch"]
    population = loaded.run_dir.parent
    which = f"the latest run in {runs_dir}{state}"
    if is_population(population):  # the same member as --checkpoint POPULATION picks
        count = len(member_folders(population))
        basis = best_member(population)[1]
        which = f"the best by {basis} of the {count} members of {population}, {which}"
    loaded.picked = {
        "run": str(loaded.run_dir),
        "checkpoint": str(loaded.path),
        "status": status,
        "line": f"using {loaded.run_dir} ({which}): {loaded.path.name}, epoch {epoch}",
    }


def note_population_member(loaded: Loaded, population: Path) -> None:
    """Record which member of a population was used for a command that needs one model."""
    from vae_cli.runs.population import best_member, member_folders

    count, basis = len(member_folders(population)), best_member(population)[1]
    loaded.picked = {
        "run": str(loaded.run_dir),
        "checkpoint": str(loaded.path),
        "status": "",
        "line": f"using {loaded.run_dir}: the best of the {count} members of {population} by "
        f"{basis} (pass --checkpoint {population}/MEMBER for another)",
    }


def load_model(path: Path, device_name: str = "auto") -> Loaded:
    device = resolve_device(device_name)
    checkpoint = load_checkpoint(path, map_location=device)
    config = checkpoint["config"]
    model = VAE(config.model).to(device)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise UserError(
            f"{path}: weights do not match the model its config describes "
            f"({describe_model(config.model)}, hidden {show_value(config.model.hidden_dims)}, "
            f"arch {config.model.arch})"
        ) from None
    model.eval()
    return Loaded(model, config, checkpoint, path, device)


def save_picture(save: Callable[[], Path], path: Path) -> Path:
    """Run a picture writer, turning disk problems into one-line errors."""
    from vae_cli.commands.outputs import check_output_name, make_output_folder

    check_output_name(path)
    make_output_folder(path)
    try:
        return save()
    except OSError as error:
        raise UserError(f"--out {path}: cannot write ({error.strerror or error})") from None


def test_images(
    loaded: Loaded, data_dir: Path, limit: int | None, binarize: str | None = None
) -> tuple[torch.Tensor, ...]:
    """The checkpoint's dataset's test images as floats (in the checkpoint's binarization
    unless `binarize` says otherwise), and their labels."""
    dataset = load_dataset(data_dir, loaded.config.data.dataset, limit)
    test = prepare_images(dataset, binarize or loaded.config.data.binarize).test
    return to_float(test).to(loaded.device), dataset.test_labels


def validation_images(
    loaded: Loaded, data_dir: Path, limit: int | None, binarize: str | None = None
) -> tuple[torch.Tensor, ...]:
    """The run's validation split (the training images it held out, in the fixed draw its
    epochs were scored on) as floats, and their labels; the first `limit` of them."""
    held_out = loaded.config.data.validation
    if not held_out:
        raise UserError(
            f"{loaded.path}: this run held out no validation images (train with --validation N)"
        )
    data = loaded.config.data  # the split is drawn from the training set the run read
    dataset = load_dataset(data_dir, data.dataset, data.limit)
    pixels = prepare_images(dataset, binarize or data.binarize, held_out)
    labels = dataset.train_labels[pixels.validation_indices]
    return to_float(pixels.validation[:limit]).to(loaded.device), labels[:limit]


def dataset_images(loaded: Loaded, data_dir: Path, split: str) -> tuple[torch.Tensor, ...]:
    """The test or train images of the checkpoint's dataset, as floats on its device in its
    pixels (a binarized model's training images: one fixed draw, as its test set has), and
    their labels."""
    if split == "test":
        return test_images(loaded, data_dir, None)
    dataset = load_dataset(data_dir, loaded.config.data.dataset, None)
    binarize = "none" if loaded.config.data.binarize == "none" else "static"
    train = prepare_images(dataset, binarize).train
    return to_float(train).to(loaded.device), dataset.train_labels
