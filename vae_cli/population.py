"""A population's folder: one ordinary run folder per member (RUN/seed-S/) and population.json,
which names the members and, once training ends, their best test losses with the mean and
standard deviation. Plain files, no torch."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from vae_cli.config import Config
from vae_cli.errors import UserError
from vae_cli.files import json_object, read_lines, write_atomically
from vae_cli.run_files import POPULATION_FILE, RunPaths, read_metrics, read_status
from vae_cli.selection import best_epoch, selection_loss


def member_label(seed: int) -> str:
    return f"seed-{seed}"


def member_config(config: Config, seed: int) -> Config:
    """A member's own settings: the population's, with its seed (and no seeds of its own, so
    its config.toml reproduces it as a single `vae train --config`)."""
    return config.replace({"seed": seed, "seeds": None})


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
    """Each member's status and best epoch, and the mean ± standard deviation of the best
    test losses (the bound that picks best.pt) over the members that have one."""
    rows = []
    for folder in members:
        best = best_epoch(read_metrics(RunPaths(folder)))
        rows.append(
            {
                "run": folder.name,
                "status": read_status(folder),
                "best_epoch": best["epoch"] if best else None,
                "best_test_loss": selection_loss(best) if best else None,
            }
        )
    losses = [row["best_test_loss"] for row in rows if row["best_test_loss"] is not None]
    losses = [loss for loss in losses if math.isfinite(loss)]
    spread = {
        "mean": statistics.fmean(losses) if losses else None,
        "std": statistics.stdev(losses) if len(losses) > 1 else None,  # sample std
        "members": len(losses),
    }
    return {"members": rows, "best_test_loss": spread}


def best_member(root: Path) -> Path:
    """The member with the lowest best test loss (the first, when none has one yet)."""
    members = member_folders(root)
    if not members:
        raise UserError(f"{root}: a population folder without members")
    rows = summarize_members(root, members)["members"]
    scored = [
        (row["best_test_loss"], folder)
        for row, folder in zip(rows, members, strict=True)
        if row["best_test_loss"] is not None and math.isfinite(row["best_test_loss"])
    ]
    return min(scored, key=lambda pair: pair[0])[1] if scored else members[0]
