"""A run's training plan: its phases in order, each with its settings and its length.

Built once from a config's `[train]` table and `[[phases]]` tables; the loop walks it and a
resume starts from a position in it. Plain data, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vae_cli.config.settings import UNBOUNDED_EPOCHS, Config
from vae_cli.config.values import count


class Start(Protocol):
    epoch: int
    step: int
    seconds: float


class Progress(Protocol):
    """Where training stands (training.state.Progress): what a phase's length is measured by."""

    epoch: int
    step: int
    seconds: float
    phase_start: Start


@dataclass(frozen=True)
class Phase:
    number: int  # 1-based, as metrics.jsonl and the terminal name it
    settings: Config  # what training uses in this phase (no phases of its own)

    @property
    def epochs(self) -> int | None:
        """The phase's epoch limit; None when only its time budget ends it."""
        epochs = self.settings.train.epochs
        return None if epochs == UNBOUNDED_EPOCHS else epochs

    @property
    def budget_seconds(self) -> float | None:
        budget = self.settings.train.time_budget
        return budget * 60 if budget else None

    def done_reason(self, progress: Progress) -> str | None:
        """Why the phase, begun at progress.phase_start, is done (it ran its epochs or spent
        its time budget), or None; asked at epoch ends only."""
        start = progress.phase_start
        if progress.epoch - start.epoch >= self.settings.train.epochs:
            return f"phase {self.number} ran its {count(self.settings.train.epochs, 'epoch')}"
        budget = self.budget_seconds
        if budget is not None and progress.seconds - start.seconds >= budget:
            return f"phase {self.number} spent its time budget"
        return None

    def done(self, progress: Progress) -> bool:
        return self.done_reason(progress) is not None

    def schedule_progress(self, progress: Progress, steps_per_epoch: int) -> float:
        """How far through the phase training is, 0 -> 1, for the cosine schedule: by training
        time under a time budget, else by steps."""
        start = progress.phase_start
        if self.budget_seconds:
            return min(1.0, (progress.seconds - start.seconds) / self.budget_seconds)
        return (progress.step - start.step) / (steps_per_epoch * self.settings.train.epochs)

    def describe(self) -> str:
        """e.g. "iwae k=10, 38.5 min, lr 0.0001" or "elbo, 10 epochs, lr 0.001 -> 0.0001 cosine"."""
        train = self.settings.train
        objective = f"iwae k={train.k}" if train.objective == "iwae" else "elbo"
        if train.objective == "elbo" and train.beta != 1.0:
            objective += f" beta={train.beta:g}"
        lengths = [count(self.epochs, "epoch")] if self.epochs is not None else []
        if train.time_budget:
            lengths.insert(0, f"{train.time_budget:g} min of training")
        lr = f"lr {train.lr:g}"
        if train.lr_schedule == "cosine":
            lr += f" -> {train.final_lr:g} cosine"
        return f"{objective}, {' or '.join(lengths)}, {lr}"


def build_plan(config: Config) -> list[Phase]:
    """Phase 1 is the [train] table; each [[phases]] table adds one."""
    return [Phase(index + 1, config.phase(index)) for index in range(len(config.phases) + 1)]
