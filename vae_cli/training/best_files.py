"""A run folder's best.pt across a crash and across phases: which file holds the best epoch
after a resume, and where an earlier phase's best goes when a new phase starts its own."""

from __future__ import annotations

from typing import Any

from vae_cli.checkpoint import load_checkpoint
from vae_cli.config.plan import Phase
from vae_cli.files import write_atomically
from vae_cli.runs.best import criterion, selection_criterion
from vae_cli.runs.folder import RunFolder


def repair_best(folder: RunFolder, checkpoint: dict[str, Any]) -> None:
    """After a crash between an epoch's two writes (last.pt, then best.pt) best.pt is an
    earlier epoch's while last.pt says that epoch was the best: last.pt is the truth, and its
    bytes are that epoch's best.pt."""
    best = checkpoint["best"]
    if checkpoint.get("position") or best["epoch"] != checkpoint["epoch"] or not best["epoch"]:
        return
    if folder.best.is_file() and load_checkpoint(folder.best)["epoch"] == best["epoch"]:
        return
    write_atomically(folder.best, folder.last.read_bytes())


def keep_best_of_earlier_phase(
    folder: RunFolder, history: list[dict[str, Any]], phase: Phase
) -> None:
    """A phase (or resume) that changes the objective (or k) starts a new best.pt; the earlier
    phase's best stays as best-<criterion>.pt (e.g. best-elbo.pt) instead of being overwritten."""
    if not history or not folder.best.is_file():
        return
    earlier = selection_criterion(history[-1])
    train = phase.settings.train
    if earlier != criterion(train.objective, train.k):
        write_atomically(folder.checkpoints / f"best-{earlier}.pt", folder.best.read_bytes())
