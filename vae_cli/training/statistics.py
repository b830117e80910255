"""The step's running statistics: sums per member, named, in one device tensor.

The step adds to them without any host read; the host reads them (one sync) every few dozen
steps and at the end of an epoch. Columns are looked up by name, so no code depends on their
order.
"""

from __future__ import annotations

import torch

SUMMED = ("images", "steps", "loss", "recon", "kl", "clipped", "grad_norm", "bad_steps")
CARRIED = ("bad_streak", "halted")  # span epoch ends: a streak of bad steps, the stop it caused
NAMES = SUMMED + CARRIED


class Statistics:
    """(members, len(NAMES)) float64 sums on the training device."""

    def __init__(self, members: int, device: torch.device) -> None:
        self.values = torch.zeros(members, len(NAMES), dtype=torch.float64, device=device)
        self.index = {name: column for column, name in enumerate(NAMES)}
        # What a non-finite step adds instead of its values: one bad step, nothing else.
        self.bad_step = torch.zeros(members, len(SUMMED), dtype=torch.float64, device=device)
        self.bad_step[:, self.index["bad_steps"]] = 1.0

    def column(self, name: str) -> torch.Tensor:
        return self.values[:, self.index[name]]

    def add_step(
        self, step: dict[str, torch.Tensor], finite: torch.Tensor, max_bad_steps: torch.Tensor
    ) -> None:
        """Add one step's (members,) values, named as SUMMED; a member whose step was not
        finite only counts a bad step, and its streak grows until it reaches max_bad_steps."""
        if set(step) != set(SUMMED):
            raise ValueError(f"a step adds exactly {SUMMED}, got {sorted(step)}")
        values = torch.stack([step[name] for name in SUMMED], dim=1).double()
        self.values[:, : len(SUMMED)] += torch.where(finite.unsqueeze(1), values, self.bad_step)
        streak = (self.column("bad_streak") + 1) * (~finite).double()
        halted = torch.maximum(self.column("halted"), (streak >= max_bad_steps).double())
        self.values[:, len(SUMMED) :] = torch.stack([streak, halted], dim=1)

    def halted(self) -> torch.Tensor:
        """(members,) bool: the members that reached --max-bad-steps, on the device."""
        return self.column("halted") > 0

    def reset_epoch(self) -> None:
        """Zero the per-epoch sums; the bad-step streak and the halt span epochs."""
        self.values[:, : len(SUMMED)].zero_()

    def read(self) -> list[dict[str, float]]:
        """Each member's sums by name (one host read, a sync on a GPU)."""
        return [dict(zip(NAMES, row, strict=True)) for row in self.values.tolist()]

    def load_member(self, member: int, saved: dict[str, float]) -> None:
        """A checkpoint's sums for one member (names it does not hold stay 0)."""
        for name, value in saved.items():
            if name in self.index:
                self.values[member, self.index[name]] = value


def kept(sums: dict[str, float], *, mid_epoch: bool) -> dict[str, float]:
    """What a checkpoint keeps of a member's sums as read: mid-epoch all of them; at an
    epoch's end the bad-step streak and the halt, which span epoch ends (a streak across one
    must not be forgotten on resume)."""
    return dict(sums) if mid_epoch else {name: sums[name] for name in CARRIED}


# The slot order of the positional vector that checkpoints held before the sums were named.
LEGACY_ORDER = (
    "images", "steps", "loss", "recon", "kl", "clipped", "grad_norm", "bad_steps",
    "bad_streak", "halted",
)  # fmt: skip


def saved_sums(saved: object) -> dict[str, float]:
    """A checkpoint's epoch sums as names: a dict, or an older positional vector."""
    if isinstance(saved, dict):
        return {str(name): float(value) for name, value in saved.items()}
    values = saved.tolist() if isinstance(saved, torch.Tensor) else list(saved)  # type: ignore
    return dict(zip(LEGACY_ORDER, values, strict=False))


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-image and per-step means from one member's running sums."""
    images, steps = max(sums["images"], 1.0), max(sums["steps"], 1.0)
    return {
        "images": sums["images"],
        "loss": sums["loss"] / images,
        "recon": sums["recon"] / images,
        "kl": sums["kl"] / images,
        "bad_steps": sums["bad_steps"],
        "bad_streak": sums["bad_streak"],
        "halted": sums["halted"],
        "clipped_fraction": sums["clipped"] / steps,
        "mean_grad_norm": sums["grad_norm"] / steps,
    }
