"""One run folder: where each of its files lives, its name, and making or replacing it safely.

Plain paths, no torch: `vae runs`, the trainer and TensorBoard find a run's files alike.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vae_cli.errors import UserError

POPULATION_FILE = "population.json"  # marks a population's folder: its members, its summary


@dataclass
class RunFolder:
    """Where each file of one run folder lives."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def pseudo_inputs(self) -> Path:
        return self.root / "pseudo_inputs.png"

    def written(self) -> list[Path]:
        """What training wrote into the folder, as a user looks for it: the files, then the
        picture folders (each epoch's samples and reconstructions) and TensorBoard's."""
        files = [self.config, self.last, self.best, self.metrics, self.curves, self.pseudo_inputs]
        folders = [self.root / name for name in ("samples", "reconstructions", "tensorboard")]
        return [path for path in [*files, *folders] if path.exists()]

    def sample_picture(self, epoch: int) -> Path:
        return self.root / "samples" / f"epoch_{epoch:03d}.png"

    def reconstruction_picture(self, epoch: int) -> Path:
        return self.root / "reconstructions" / f"epoch_{epoch:03d}.png"


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
