"""Adam (Kingma & Ba 2015) for a stack's (members, P) parameter buffer: the moments each member
owns, and one fused update per member with its own learning rate, beta2 and skip flag
(fused_adam.py). A member's state_dict keeps torch.optim.Adam's layout, so checkpoints read
the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vae_cli.training.fused_adam import fused_adam_step

BETA1 = 0.9
EPS = 1e-8  # torch.optim.Adam's default


@dataclass
class AdamState:
    """The moments and step count of every member; they outlive a phase's step."""

    exp_avg: torch.Tensor  # (M, P)
    exp_avg_sq: torch.Tensor  # (M, P)
    steps: torch.Tensor  # (M,) float32 on the parameters' device, as fused Adam keeps them

    @classmethod
    def zeros_like(cls, params: torch.Tensor) -> AdamState:
        steps = torch.zeros(len(params), dtype=torch.float32, device=params.device)
        return cls(torch.zeros_like(params), torch.zeros_like(params), steps)

    def member_state_dict(
        self, member: int, *, lr: float, beta2: float, layout: Callable[[Tensor], Tensor]
    ) -> dict[str, Any]:
        """One member's state in torch.optim.Adam's layout (one parameter: the flat buffer,
        its moments put in a single model's layout by `layout`)."""
        state = {
            "step": self.steps[member].clone(),
            "exp_avg": layout(self.exp_avg[member]).clone(),
            "exp_avg_sq": layout(self.exp_avg_sq[member]).clone(),
        }
        group = {
            "lr": lr,
            "betas": (BETA1, beta2),
            "eps": EPS,
            "weight_decay": 0,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": self.steps.device.type == "cuda",
            "differentiable": False,
            "fused": True,
            "decoupled_weight_decay": False,
            "params": [0],
        }
        return {"state": {0: state}, "param_groups": [group]}

    @torch.no_grad()
    def load_member(
        self, member: int, saved: dict[str, Any], layout: Callable[[Tensor], Tensor]
    ) -> None:
        """A member's moments and step count from a checkpoint (`layout` turns a single
        model's flat values into a row of the stack); its lr and beta2 come from the run's
        settings, not from the file."""
        state = saved["state"].get(0)
        if state is None:  # saved before the first step
            return
        self.steps[member].copy_(state["step"])
        self.exp_avg[member].copy_(layout(state["exp_avg"].to(self.exp_avg.device)))
        self.exp_avg_sq[member].copy_(layout(state["exp_avg_sq"].to(self.exp_avg.device)))


class MemberAdam:
    """Adam over a stack's (M, P) weights: one fused kernel per member, with that
    member's rows, lr, beta2 and skip flag (views made once, not per step)."""

    def __init__(
        self, params: Tensor, grads: Tensor, state: AdamState, *, lr: Tensor, beta2: list[float]
    ) -> None:
        self.state, self.lr, self.beta2 = state, lr, list(beta2)
        self.rows = [
            ([params[m]], [grads[m]], [state.exp_avg[m]], [state.exp_avg_sq[m]], [state.steps[m]])
            for m in range(len(params))
        ]
        self.member_lr = [lr[m] for m in range(len(params))]

    @torch.no_grad()
    def step(self, skip: Tensor) -> None:
        """Update every member whose `skip` entry (float, (M,)) is 0; the others keep their
        weights, moments and step count. lr is a (M,) device tensor written before each step,
        so a captured CUDA graph replays with the current rates."""
        self.state.steps.add_(1)
        for member, (params, grads, exp_avg, exp_avg_sq, steps) in enumerate(self.rows):
            fused_adam_step(
                params,
                grads,
                exp_avg,
                exp_avg_sq,
                steps,
                lr=self.member_lr[member],
                beta1=BETA1,
                beta2=self.beta2[member],
                eps=EPS,
                found_inf=skip[member],
            )
        self.state.steps.sub_(skip)
