"""Training runs that share a shape in one stacked step (one run, a population's seeds, a
sweep's trials): every check first, then the folders claimed (made and locked), their config
files written, the callbacks put together and the loop run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_cli.config.checks import check_settings
from vae_cli.errors import UserError
from vae_cli.runs.lock import RunLocks
from vae_cli.training.callbacks import CallbackGroup, Callbacks
from vae_cli.training.member import Member
from vae_cli.training.state import MemberState

if TYPE_CHECKING:  # torch and the data load lazily, after every check
    import torch

    from vae_cli.data.dataset import Dataset


def train_members(
    members: list[Member],
    *,
    data_dir: Path | None,
    command: str,
    display: Callable[..., Callbacks],
    overwrite: bool = False,
    dataset: Dataset | None = None,
    device: torch.device | None = None,
    population: Path | None = None,
) -> list[MemberState]:
    """Train `members` in one stacked step: new runs (checkpoint None) get their folders,
    resumed ones continue; `dataset` is read from `data_dir` and `device` resolved from the
    settings unless given (a sweep does both once). Everything is checked before any folder
    is made."""
    from vae_cli.data.dataset import load_dataset
    from vae_cli.data.folders import resolve_data_dir
    from vae_cli.data.split import check_batch_size, check_validation
    from vae_cli.device import flush_denormals, resolve_device
    from vae_cli.training.memory import check_step_fits

    first = members[0].config
    for run in members:
        check_settings(run.config)
    if first.train.tensorboard:
        from vae_cli.training.tensorboard import check_tensorboard_installed

        check_tensorboard_installed()
    if device is None:
        device = resolve_device(first.train.device)
        flush_denormals(device)  # before reading the data starts torch's worker threads
    if dataset is None:
        dataset = load_dataset(resolve_data_dir(data_dir), first.data.dataset, first.data.limit)
    check_validation(first.data.validation, len(dataset.train_images), first.data.limit)
    check_batch_size(first.train.batch_size, len(dataset.train_images) - first.data.validation)
    for run in members:
        check_same_split(run, dataset)
    check_step_fits(first, device, len(dataset.train_images), members=len(members))
    locks = claim_folders(members, population, overwrite=overwrite, command=command)
    try:
        write_run_configs(members, population, command, device, resolve_data_dir(data_dir), dataset)
        return run_loop(members, dataset, device, population, display)
    finally:
        locks.release()


def run_loop(
    members: list[Member],
    dataset: Dataset,
    device: torch.device,
    population: Path | None,
    display: Callable[..., Callbacks],
) -> list[MemberState]:
    """The loop with each member's own callbacks (TensorBoard, then a sweep's reporter, so
    that TensorBoard sees a pruned epoch) and the display; population.json is refreshed after,
    however training ended."""
    from vae_cli.training.loop import train

    first = members[0].config
    epochs = None if first.phases else first.train.epochs  # phases may end by time budget
    shown = population or members[0].folder.root
    progress = display(run_dir=str(shown), epochs=epochs, binarize=first.data.binarize)
    for run in members:
        if run.config.train.tensorboard:
            from vae_cli.training.tensorboard import TensorBoardLogger

            resumed = run.checkpoint["epoch"] if run.checkpoint else 0
            board = TensorBoardLogger(run.folder, run.config, resumed)
            run.callbacks = CallbackGroup(board, run.callbacks)
    try:
        return train(
            members, dataset=dataset, device=device, callbacks=progress, population=population
        )
    finally:
        for run in members:
            run.callbacks.close()
        progress.close()
        for folder in populations_of(members, population):
            finish_population(folder)


def write_run_configs(
    members: list[Member],
    population: Path | None,
    command: str,
    device: torch.device,
    data_dir: Path,
    dataset: Dataset,
) -> None:
    """A new run's config.toml with its manifest (and a new population's population.json); a
    resumed run's config.toml rewritten when the resume changed settings."""
    from vae_cli.commands.resume import resume_notes, update_run_config
    from vae_cli.config.toml import to_toml
    from vae_cli.device import device_description
    from vae_cli.files import write_atomically
    from vae_cli.runs.manifest import build_manifest

    new = [run for run in members if run.checkpoint is None]
    if population is not None and new:
        write_population_record(population, members, command)
    if new:
        import torch

        description = device_description(device)
        manifest = build_manifest(command, description, data_dir, dataset.md5, torch.__version__)
        manifest |= split_record(dataset, members[0].config.data.validation)
        manifest |= cpu_kernels_record()
    for run in members:
        if run.checkpoint is None:
            text = to_toml(run.config, manifest)
            write_atomically(run.folder.config, text.encode())
            continue
        notes = resume_notes(run.checkpoint, run.config, device.type)
        if run.config != run.checkpoint["config"] or notes:
            update_run_config(run.folder.root, run.config, command, notes)


def cpu_kernels_record() -> dict[str, Any]:
    """What CPU bit-identity depends on beyond the seed and config: torch picks its kernels by
    the CPU's instruction set (AVX2, AVX-512, ...) and splits work by thread count, and each sums
    in its own order, so runs agree to the bit only where both match."""
    import torch

    from vae_cli.openmp import wait_policy

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_wait_policy": wait_policy(),  # speed only, never the numbers
    }


def split_record(dataset: Dataset, validation: int) -> dict[str, Any]:
    """The manifest's record of the validation split: its size and its indices' digest."""
    from vae_cli.data.split import split_digest, validation_indices

    indices = validation_indices(len(dataset.train_images), validation)
    return {"validation_images": validation, "validation_sha256": split_digest(indices)}


def check_same_split(run: Member, dataset: Dataset) -> None:
    """A resumed run must hold out the images it was trained without (its manifest says
    which); runs from before the split record none and held none out."""
    from vae_cli.runs.manifest import read_manifest

    if run.checkpoint is None:
        return
    recorded = read_manifest(run.folder.root).get("validation_sha256")
    now = split_record(dataset, run.config.data.validation)["validation_sha256"]
    if recorded is not None and recorded != now:
        raise UserError(
            f"{run.folder.root}: its validation split ({recorded}) is not the one these "
            f"data give ({now}); resume it on the data it was trained on"
        )


def populations_of(members: list[Member], population: Path | None) -> list[Path]:
    """The populations whose members were trained: the one trained, or the one a member
    resumed alone belongs to (its population.json then shows the member's new state)."""
    from vae_cli.runs.population import is_population

    if population is not None:
        return [population]
    parents = {run.folder.root.parent for run in members}
    return sorted(parent for parent in parents if is_population(parent))


def claim_folders(
    members: list[Member], population: Path | None, *, overwrite: bool, command: str
) -> RunLocks:
    """Every folder this invocation trains, made (a new run's) and locked before anything is
    written into it: one trainer per run folder. --overwrite replaces a folder only when no
    trainer holds it or any run inside it."""
    from vae_cli.files import make_folder
    from vae_cli.runs.folder import check_new_run, replace_folder
    from vae_cli.runs.lock import check_not_training

    top = population if population is not None else members[0].folder.root
    creating = any(run.checkpoint is None for run in members)
    if creating and overwrite and top.is_dir():
        for folder in [top, *(child for child in top.iterdir() if child.is_dir())]:
            check_not_training(folder)
        replace_folder(top)
    roots = [run.folder.root for run in members]
    if population is not None:
        roots.insert(0, population)
        make_folder(population, "population folder")
    for run in members:
        if run.checkpoint is None:
            check_new_run(run.folder.root, overwrite=False)
            make_folder(run.folder.root, "run folder")
    locks = RunLocks(roots)
    locks.acquire(command)
    return locks


def write_population_record(root: Path, members: list[Member], command: str) -> None:
    """population.json, listing the members before any trains."""
    from vae_cli.runs.population import write_population

    seeds = [run.config.train.seed for run in members]
    names = [run.folder.root.name for run in members]
    write_population(root, {"command": command, "seeds": seeds, "members": names})


def finish_population(root: Path) -> None:
    """population.json gains the members' statuses and best test losses, with their mean and
    standard deviation (also after Ctrl-C or a failure: what the members reached so far)."""
    from vae_cli.runs.population import (
        member_folders,
        read_population,
        summarize_members,
        write_population,
    )

    record = read_population(root)
    record["summary"] = summarize_members(root, member_folders(root))
    write_population(root, record)
