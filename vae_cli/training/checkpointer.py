"""Saving and restoring every member's training state, as torchtitan's checkpointer does: each
component gives its own state_dict (the stack its weights and Adam moments, the random streams,
the progress, the member's best, the statistics kept) and one checkpoint collects them.

Writes go through a background thread (training goes on meanwhile); a population's saves of
one step become its members' files together (runs.population.commit_checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vae_cli.checkpoint import load_checkpoint, serialize_checkpoint
from vae_cli.files import OrderedWriter, write_atomically
from vae_cli.runs.best import criterion, selection_criterion
from vae_cli.runs.folder import RunFolder
from vae_cli.runs.metrics import read_metrics, truncate_metrics
from vae_cli.runs.population import commit_checkpoints, pending_path
from vae_cli.training.statistics import saved_sums


class Checkpointer:
    def __init__(self, writer: OrderedWriter, population: Path | None) -> None:
        self.writer, self.population = writer, population
        self.pending: list[Path] = []  # a population's files saved since the last commit

    def save(
        self, trainer: Any, member: int, targets: list[Path], kept: dict[str, float]
    ) -> dict[str, Any] | None:
        """Everything needed to continue member `member` exactly here (`kept`: its running
        sums worth keeping), copied to the CPU; never non-finite weights (the member fails
        instead). Returns what it saves, or None."""
        stack = trainer.stack
        if not torch.isfinite(stack.flat[member]).all():  # one check for all weights
            trainer.fail_member(member, non_finite_weights(stack.training_weights(member)))
            return None
        settings = trainer.plans[member][trainer.progress.phase].settings.train
        parts = stack.member_state_dict(member, lr=trainer.lrs[member], beta2=settings.adam_beta2)
        state = {
            **snapshot(parts),  # weights and Adam state (and a moving average's)
            "config": trainer.members[member].config.to_dict(),
            "rng": trainer.streams[member].state_dict(mid_epoch=trainer.progress.mid_epoch),
            **trainer.progress.state_dict(),
            **trainer.states[member].state_dict(),
            "epoch_stats": kept,
        }
        if self.population is not None:
            targets = [pending_path(target) for target in targets]
            self.pending += targets
        self.writer.submit(write_checkpoints, state, targets)
        return state

    def commit(self) -> None:
        """A population's checkpoints saved since the last commit become the members' files in
        one step, once all of them are written."""
        if self.population is not None and self.pending:
            self.writer.submit(commit_checkpoints, self.population, self.pending)
            self.pending = []

    @staticmethod
    def restore(trainer: Any, member: int) -> None:
        """A resumed member's weights, Adam moments, streams, kept sums, best and history; a
        new member's history starts empty (or as a damaged folder left it)."""
        run, state = trainer.members[member], trainer.states[member]
        checkpoint = run.checkpoint
        if checkpoint is None:
            state.history = read_metrics(run.folder)
            return
        trainer.stack.load_member_state_dict(member, checkpoint)
        trainer.streams[member].load_state_dict(checkpoint)
        if checkpoint.get("epoch_stats") is not None:
            trainer.stack.stats.load_member(member, saved_sums(checkpoint["epoch_stats"]))
        state.load_state_dict(checkpoint)
        repair_best(run.folder, checkpoint)
        state.history = truncate_metrics(run.folder, trainer.progress.epoch)
        plan = trainer.plans[member][trainer.progress.phase]
        keep_best_of_earlier_phase(run.folder, state.history, plan)


def snapshot(value: Any) -> Any:
    """A CPU copy of every tensor in a nested state dict (training mutates the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value


def non_finite_weights(weights: dict[str, torch.Tensor]) -> str:
    """Why a model's weights may not be saved: the first parameter that is not finite."""
    name = next(n for n, p in weights.items() if not torch.isfinite(p).all())
    return f"parameter {name} is not finite; refusing to save it (try a lower --lr)"


def write_checkpoints(state: dict[str, Any], paths: list[Path]) -> None:
    """Serialise once and write the same bytes to each path (last.pt, and best.pt)."""
    data = serialize_checkpoint(state)
    for path in paths:
        write_atomically(path, data)


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
    folder: RunFolder, history: list[dict[str, Any]], phase: Any
) -> None:
    """A phase (or resume) that changes the objective (or k) starts a new best.pt; the earlier
    phase's best stays as best-<criterion>.pt (e.g. best-elbo.pt) instead of being overwritten."""
    if not history or not folder.best.is_file():
        return
    earlier = selection_criterion(history[-1])
    train = phase.settings.train
    if earlier != criterion(train.objective, train.k):
        write_atomically(folder.checkpoints / f"best-{earlier}.pt", folder.best.read_bytes())
