"""Which run and checkpoint a command uses: the one named (a file, a run folder, a population's
best member) or the latest run. No torch: a misspelt path is refused before torch loads."""

from __future__ import annotations

from pathlib import Path

from vae_cli.errors import UserError
from vae_cli.runs.population import best_member, is_population


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
        checkpoint, _ = best_member(checkpoint)
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
