"""Adam (Kingma & Ba 2015) for a (members, P) parameter buffer, through torch's fused kernel.

torch.optim.Adam runs the same kernel, but constructing or stepping it imports torch._dynamo,
about a second of every command's start-up. Calling the kernel directly also gives each member
its own learning rate, beta2 and skip flag, which one torch.optim parameter group cannot. The
state_dict keeps torch.optim.Adam's layout, so checkpoints read the same either way.
"""

from __future__ import annotations

from typing import Any

import torch

EPS = 1e-8  # torch.optim.Adam's default


class FlatAdam:
    """One fused Adam update per member row of `params`, skipped where `skip` is 1.

    `lr` is a (members,) device tensor written by the schedule before each step, so a captured
    CUDA graph replays with the current rate; beta2 values are fixed when the step is built.
    """

    def __init__(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        *,
        lr: torch.Tensor,
        beta2: list[float],
        beta1: float = 0.9,
    ) -> None:
        self.params, self.grads, self.lr = params, grads, lr  # (M, P), (M, P), (M,)
        self.beta1, self.beta2 = beta1, list(beta2)
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        # float32 step counts on the parameters' device, as torch's fused Adam keeps them.
        self.steps = torch.zeros(len(params), dtype=torch.float32, device=params.device)

    @torch.no_grad()
    def step(self, skip: torch.Tensor) -> None:
        """Update every member whose `skip` entry (float, (M,)) is 0; the others keep their
        weights, moments and step count."""
        self.steps.add_(1)
        for member, beta2 in enumerate(self.beta2):
            torch._fused_adam_(
                [self.params[member]],
                [self.grads[member]],
                [self.exp_avg[member]],
                [self.exp_avg_sq[member]],
                [],
                [self.steps[member]],
                lr=self.lr[member],
                beta1=self.beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=EPS,
                amsgrad=False,
                maximize=False,
                found_inf=skip[member],
            )
        self.steps.sub_(skip)

    def state_dict(self, member: int, lr: float) -> dict[str, Any]:
        """One member's state in torch.optim.Adam's layout (one parameter: the flat buffer)."""
        state = {
            "step": self.steps[member].clone(),
            "exp_avg": self.exp_avg[member].clone(),
            "exp_avg_sq": self.exp_avg_sq[member].clone(),
        }
        group = {
            "lr": lr,
            "betas": (self.beta1, self.beta2[member]),
            "eps": EPS,
            "weight_decay": 0,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": self.params.device.type == "cuda",
            "differentiable": False,
            "fused": True,
            "decoupled_weight_decay": False,
            "params": [0],
        }
        return {"state": {0: state}, "param_groups": [group]}

    @torch.no_grad()
    def load_state_dict(self, member: int, saved: dict[str, Any]) -> None:
        """A member's moments and step count from a checkpoint (torch.optim.Adam's layout);
        its lr and beta2 come from the run's settings, not from the file."""
        state = saved["state"].get(0)
        if state is None:  # saved before the first step
            return
        self.steps[member].copy_(state["step"])
        self.exp_avg[member].copy_(state["exp_avg"])
        self.exp_avg_sq[member].copy_(state["exp_avg_sq"])
