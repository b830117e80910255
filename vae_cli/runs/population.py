"""A population's folder: one ordinary run folder per member (RUN/seed-S/) and population.json,
which names the members and, once training ends, each one's test bound at the epoch chosen on
validation (or its last), with their mean and standard deviation. Plain files, no torch."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vae_cli.config.settings import Config
from vae_cli.errors import UserError
from vae_cli.files import json_object, read_lines, write_atomically
from vae_cli.runs.best import best_epoch, chosen_on, selection_loss, test_loss
from vae_cli.runs.folder import POPULATION_FILE, RunFolder
from vae_cli.runs.metrics import read_metrics
from vae_cli.runs.status import read_status


def member_label(seed: int) -> str:
    return f"seed-{seed}"


def member_config(config: Config, seed: int) -> Config:
    """A member's own settings: the population's, with its seed (its config.toml reproduces
    it as a single `vae train --config`)."""
    return config.replace({"seed": seed})


def is_population(folder: Path) -> bool:
    return (folder / POPULATION_FILE).is_file()


def read_population(root: Path) -> dict[str, Any]:
    return json_object("\n".join(read_lines(root / POPULATION_FILE))) or {}


def member_folders(root: Path) -> list[Path]:
    """The members of the population in `root`, in their order (a member whose folder is
    gone is left out)."""
    names = read_population(root).get("members")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{root / POPULATION_FILE}: not a population file (no members list)")
    return [root / name for name in names if (root / name).is_dir()]


def write_population(root: Path, record: dict[str, Any]) -> None:
    write_atomically(root / POPULATION_FILE, (json.dumps(record, indent=2) + "\n").encode())


def summarize_members(root: Path, members: list[Path]) -> dict[str, Any]:
    """Each member's status and the epoch its best.pt holds (chosen on validation, or its last
    epoch without a split), with that epoch's test and validation bounds; the mean ± standard
    deviation of those test bounds over the members that have one."""
    rows = []
    for folder in members:
        metrics = read_metrics(RunFolder(folder))
        best = best_epoch(metrics)
        rows.append(
            {
                "run": folder.name,
                "status": read_status(folder),
                "best_epoch": best["epoch"] if best else None,
                "chosen_on": chosen_on(best) if best else None,
                "best_test_loss": test_loss(best) if best else None,
                "best_val_loss": selection_loss(best) if best and "val_loss" in best else None,
                "last_train_loss": metrics[-1]["train_loss"] if metrics else None,
            }
        )
    return {"members": rows, "best_test_loss": spread(row["best_test_loss"] for row in rows)}


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation and count of the finite values."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return {
        "mean": statistics.fmean(finite) if finite else None,
        "std": statistics.stdev(finite) if len(finite) > 1 else None,
        "members": len(finite),
    }


def best_member(root: Path) -> tuple[Path, str]:
    """The member a command that needs one model uses, and what chose it: the lowest
    validation bound, or without a split the lowest training loss of the last epoch (never
    the test set); the first member when none has a finite value yet."""
    members = member_folders(root)
    if not members:
        raise UserError(f"{root}: a population folder without members")
    rows = summarize_members(root, members)["members"]
    for key, basis in (("best_val_loss", "validation loss"), ("last_train_loss", "training loss")):
        scored = [
            (row[key], folder)
            for row, folder in zip(rows, members, strict=True)
            if row[key] is not None and math.isfinite(row[key])
        ]
        if scored:
            return min(scored, key=lambda pair: pair[0])[1], basis
    return members[0], "its order (no member has finished an epoch)"


# One epoch's checkpoints of every member are one step: each member's new files are written
# next to the old ones as *.pending, then COMMIT_FILE (written atomically) lists the renames,
# then they are made. A kill before the commit file leaves every member at the previous step;
# after it, `settle_checkpoints` finishes the renames. So a resume never finds the members
# saved at different steps.
COMMIT_FILE = "commit.json"
PENDING_SUFFIX = ".pending"


def pending_path(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def commit_checkpoints(root: Path, written: list[Path]) -> None:
    """Make the pending files `written` (each some member's NAME.pending) the members'
    checkpoints, all or none (the writer thread calls this after writing them)."""
    renames = [
        [str(path.relative_to(root)), str(path.relative_to(root))[: -len(PENDING_SUFFIX)]]
        for path in written
    ]
    write_atomically(root / COMMIT_FILE, (json.dumps({"renames": renames}) + "\n").encode())
    settle_checkpoints(root)


def settle_checkpoints(root: Path) -> None:
    """Finish a commit that a kill interrupted, or drop the pending files of one that never
    came (the members keep their previous step). Called before a population is resumed."""
    import os

    record = json_object("\n".join(read_lines(root / COMMIT_FILE))) or {}
    renames = record.get("renames")
    for source, target in renames if isinstance(renames, list) else []:
        if (root / source).is_file():
            os.replace(root / source, root / target)
    for leftover in root.glob(f"*/checkpoints/*{PENDING_SUFFIX}"):
        leftover.unlink()
    for folder in {(root / target).parent for _, target in renames or []}:
        fsync_folder(folder)
    (root / COMMIT_FILE).unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    """Make the renames in a folder durable."""
    import os

    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
