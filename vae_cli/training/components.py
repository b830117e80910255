"""The parts of one member's training state that the checkpointer collects, each with the
state_dict / load_state_dict pair it asks for. The stack holds every member's weights and
moments, so a member's part of it is a view named here; the loop builds these per save."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vae_cli.config.settings import Config
from vae_cli.training.stack import Stack
from vae_cli.training.statistics import saved_sums
from vae_cli.training.streams import RandomStreams


@dataclass
class MemberWeights:
    """A member's weights and Adam moments in the stack (and its moving average's)."""

    stack: Stack
    member: int
    lr: float  # the latest step's, saved with the moments as torch.optim.Adam's param group
    beta2: float

    def state_dict(self) -> dict[str, Any]:
        return self.stack.member_state_dict(self.member, lr=self.lr, beta2=self.beta2)

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.stack.load_member_state_dict(self.member, checkpoint)


@dataclass
class MemberSettings:
    """The member's config, saved so that a checkpoint describes itself; a resume reads the
    config from the run folder before any of this, so restoring it is nothing to do."""

    config: Config

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Nothing: the settings are the run's, read before the stack is built."""


@dataclass
class MemberStreams:
    """A member's random generators; mid-epoch, the data order as the epoch began."""

    streams: RandomStreams
    mid_epoch: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.streams.state_dict(mid_epoch=self.mid_epoch)}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.streams.load_state_dict(checkpoint)


@dataclass
class KeptSums:
    """A member's running sums worth keeping across a resume (the bad-step streak, and
    mid-epoch the epoch's sums so far)."""

    stack: Stack
    member: int
    kept: dict[str, float]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_stats": self.kept}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("epoch_stats") is not None:
            self.stack.stats.load_member(self.member, saved_sums(checkpoint["epoch_stats"]))


def non_finite_weights(weights: dict[str, torch.Tensor]) -> str:
    """Why a model's weights may not be saved: the first parameter that is not finite."""
    name = next(n for n, p in weights.items() if not torch.isfinite(p).all())
    return f"parameter {name} is not finite; refusing to save it (try a lower --lr)"
