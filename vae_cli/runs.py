"""Run folders: creating them safely, the manifest that says what produced them, listing them."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_cli import __version__
from vae_cli.config import Config, load_config
from vae_cli.errors import UserError
from vae_cli.files import json_object, read_lines
from vae_cli.population import best_member, is_population
from vae_cli.run_files import POPULATION_FILE


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


MAX_NAME_LENGTH = 100  # file names stop at 255 bytes; a trial's folder adds its own


def check_folder_name(name: str, flag: str) -> None:
    """A run or study name is one folder inside --runs-dir: no path separators, no '.' or
    '..' (with --overwrite, `--name .` would have replaced the whole runs folder)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"{flag} {name!r}: use letters, digits, '.', '_' and '-' only")
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(f"{flag} {name!r}: too long (at most {MAX_NAME_LENGTH} characters)")


def check_new_run(root: Path, *, overwrite: bool) -> None:
    """Refuse to reuse an existing run folder unless the user asked for --overwrite, and
    never let --overwrite delete a folder that is not a run or a population (a sweep's study,
    say)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder")
    if not any(root.iterdir()):
        return
    if not overwrite:
        raise UserError(
            f"{root}: run already exists; pick another --name, continue it with "
            f"--resume {root}, or replace it with --overwrite"
        )
    if not ((root / "config.toml").is_file() or (root / POPULATION_FILE).is_file()):
        raise UserError(
            f"{root}: not a run folder (no config.toml), so --overwrite will not delete it; "
            "pick another --name"
        )


def replace_folder(root: Path) -> None:
    """--overwrite: remove a run or population folder that check_new_run allowed."""
    if root.exists():
        shutil.rmtree(root)


def git_commit() -> str:
    """The commit of the vae-cli source tree, when it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def build_manifest(
    command: str, device_name: str, data_dir: Path, md5: dict[str, str]
) -> dict[str, Any]:
    import torch

    return {
        "command": command,
        "vae_cli_version": __version__,
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
        "device": device_name,
        "git_commit": git_commit(),
        "data_dir": str(data_dir.resolve()),  # read back by eval, reconstruct, …
        "dataset_md5": [f"{name}:{digest}" for name, digest in sorted(md5.items())],
    }


@dataclass
class RunSummary:
    name: str
    date: str
    epochs_done: int
    epochs_planned: int | None  # every phase's epochs; None when a time budget ends a phase
    best_test_loss: float | None
    binarize: str
    latent_dims: list[int]  # each stochastic layer's size, bottom (z1) first
    arch: str
    status: str

    @property
    def epochs(self) -> str:
        """e.g. "3/3", or "412 (time budget)" when a time budget, not a count, ends a phase."""
        if self.epochs_planned is None:
            return f"{self.epochs_done} (time budget)"
        return f"{self.epochs_done}/{self.epochs_planned}"

    @property
    def latent(self) -> str:
        """z's size, or "z1 100, z2 50" for a two-layer model."""
        if len(self.latent_dims) == 1:
            return str(self.latent_dims[0])
        return ", ".join(f"z{layer} {size}" for layer, size in enumerate(self.latent_dims, 1))


def planned_epochs(config: Config) -> int | None:
    """The epochs of every phase together; None when some phase is ended by its time budget
    (its epoch count is then only an upper bound, or none at all)."""
    phases = [config.phase(index).train for index in range(len(config.phases) + 1)]
    if any(train.time_budget for train in phases):
        return None
    return sum(train.epochs for train in phases)


def summarize_run(root: Path) -> RunSummary | None:
    """What `vae runs` shows of one folder, or None when it is not a run."""
    from vae_cli.run_files import read_status

    if not (root / "config.toml").is_file():
        return None
    try:
        config = load_config(root / "config.toml")
    except UserError:
        return None
    # A line cut by a crash, or a file edited by hand, is skipped rather than fatal.
    lines = read_lines(root / "metrics.jsonl")
    metrics = [m for m in map(json_object, lines) if m and isinstance(m.get("epoch"), int)]
    losses = [m["test_loss"] for m in metrics if isinstance(m.get("test_loss"), float)]
    model = config.model
    layers = [model.latent_dim] + ([model.latent2_dim] if model.stochastic_layers == 2 else [])
    return RunSummary(
        name=root.name,
        date=time.strftime(
            "%Y-%m-%d %H:%M", time.localtime((root / "config.toml").stat().st_mtime)
        ),
        epochs_done=max((m["epoch"] for m in metrics), default=0),
        epochs_planned=planned_epochs(config),
        best_test_loss=min(losses) if losses else None,
        binarize=config.data.binarize,
        latent_dims=layers,
        arch=config.model.arch,
        status=read_status(root),
    )


def read_manifest(root: Path) -> dict[str, Any]:
    """The [manifest] table of a run's config.toml; empty when the file is unreadable, not TOML
    or edited into another shape (a run is rebuilt from its checkpoint, not from this file)."""
    try:
        manifest = tomllib.loads((root / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not UTF-8, or not TOML
        return {}
    table = manifest.get("manifest")
    return table if isinstance(table, dict) else {}


def run_data_dir(run_dir: Path, flag: Path | None) -> Path:
    """--data-dir, else $VAE_DATA_DIR, else the folder the run was trained on (its manifest),
    else ./data: every command that reads or resumes a run finds its data as it was trained."""
    from vae_cli.data import resolve_data_dir

    if flag is not None or os.environ.get("VAE_DATA_DIR"):
        return resolve_data_dir(flag)
    recorded = recorded_data_dir(run_dir)
    if recorded is None:
        return resolve_data_dir(None)
    if not recorded.is_dir():
        raise UserError(
            f"{run_dir} was trained on data in {recorded}, which is gone; "
            "pass --data-dir or set VAE_DATA_DIR to the folder that holds MNIST/raw/"
        )
    return recorded


def recorded_data_dir(run_dir: Path) -> Path | None:
    """The data folder in a run's config.toml manifest, if the run has one."""
    recorded = read_manifest(run_dir).get("data_dir")
    return Path(recorded) if isinstance(recorded, str) and recorded else None


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run folder, a population's members as NAME/MEMBER."""
    if not runs_dir.is_dir():
        return []
    summaries = []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if (folder / POPULATION_FILE).is_file():
            for member in sorted(p for p in folder.iterdir() if p.is_dir()):
                summary = summarize_run(member)
                if summary is not None:
                    summary.name = f"{folder.name}/{member.name}"
                    summaries.append(summary)
        elif (summary := summarize_run(folder)) is not None:
            summaries.append(summary)
    return summaries


def checkpoint_time(folder: Path) -> float | None:
    """When a run folder's checkpoints last changed (None: it holds none)."""
    checkpoints = folder / "checkpoints"
    if not checkpoints.is_dir() or not any(checkpoints.glob("*.pt")):
        return None
    return checkpoints.stat().st_mtime


def find_latest_run(runs_dir: Path) -> Path:
    """The run or population in runs_dir whose checkpoints changed last (a population counts
    as its newest member): a population then answers as when it is named, by its best member."""
    candidates: dict[Path, float] = {}
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    for folder in folders:
        members = [m for m in folder.iterdir() if m.is_dir()] if is_population(folder) else []
        times = [t for m in members or [folder] if (t := checkpoint_time(m)) is not None]
        if times:
            candidates[folder] = max(times)
    if not candidates:
        raise UserError(
            f"no runs with checkpoints in {runs_dir}/ yet; train one with "
            "`vae train`, or pass --checkpoint PATH"
        )
    return max(candidates, key=candidates.__getitem__)


def resolve_checkpoint(checkpoint: Path | None, runs_dir: Path, prefer: str = "best") -> Path:
    """--checkpoint as a file, a run folder (its best.pt), a population's folder (its best
    member's best.pt) or, when omitted, the latest run or population. No torch: a misspelt
    path is refused before the model's libraries load."""
    if checkpoint is None:
        checkpoint = find_latest_run(runs_dir)
    if checkpoint.is_dir() and is_population(checkpoint):
        checkpoint = best_member(checkpoint)
    if checkpoint.is_dir():
        folder = checkpoint / "checkpoints" if (checkpoint / "checkpoints").is_dir() else checkpoint
        for name in (f"{prefer}.pt", "best.pt", "last.pt"):
            if (folder / name).is_file():
                return folder / name
        raise UserError(f"{checkpoint}: folder holds no checkpoint (best.pt or last.pt)")
    if not checkpoint.exists():
        raise UserError(f"{checkpoint}: checkpoint not found")
    return checkpoint


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (where default outputs go)."""
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent
