"""A run's progress and a member's own state: what a checkpoint saves and a resume restores.

The members of a stack share one `Progress` (they train in lock-step); each keeps its own best
epoch, metrics history and status. Plain data, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PhaseStart:
    """Where the current phase began: its schedules and its length count from here."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps taken
    position: int = 0  # batches done in the current epoch (0 at an epoch boundary)
    seconds: float = 0.0  # training time (clock.py), the time budget's measure
    phase: int = 0  # index into the plan
    phase_start: PhaseStart = field(default_factory=PhaseStart)

    def state_dict(self) -> dict[str, Any]:
        start = self.phase_start
        return {
            "epoch": self.epoch,
            "step": self.step,
            "position": self.position,
            "mid_epoch": self.position > 0,
            "elapsed": self.seconds,
            "phase": self.phase,
            "phase_start": {"epoch": start.epoch, "step": start.step, "elapsed": start.seconds},
        }

    @classmethod
    def from_state_dict(cls, checkpoint: dict[str, Any]) -> Progress:
        start = checkpoint.get("phase_start", {"epoch": 0, "step": 0, "elapsed": 0.0})
        return cls(
            epoch=checkpoint["epoch"],
            step=checkpoint["step"],
            position=checkpoint.get("position", 0),
            seconds=checkpoint.get("elapsed", 0.0),
            phase=checkpoint.get("phase", 0),
            phase_start=PhaseStart(start["epoch"], start["step"], start["elapsed"]),
        )

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        vars(self).update(vars(Progress.from_state_dict(checkpoint)))

    @property
    def mid_epoch(self) -> bool:
        return self.position > 0

    def start_phase(self, phase: int) -> None:
        self.phase, self.phase_start = phase, PhaseStart(self.epoch, self.step, self.seconds)


@dataclass
class Best:
    loss: float = math.inf  # the value it was chosen by (runs/best.py's selection_loss)
    epoch: int = 0
    chosen_on: str = "test"  # runs/best.py's rule; checkpoints from before the split lack it


@dataclass
class MemberState:
    """One member's best epoch, metrics history and status (its progress is the stack's)."""

    progress: Progress
    best: Best = field(default_factory=Best)
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"  # then finished, failed, pruned or interrupted

    @property
    def training(self) -> bool:
        return self.status == "running"

    def state_dict(self) -> dict[str, Any]:
        best = self.best
        return {"best": {"loss": best.loss, "epoch": best.epoch, "chosen_on": best.chosen_on}}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.best = Best(**checkpoint["best"])
