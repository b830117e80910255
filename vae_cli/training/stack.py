"""A stack: M VAEs trained as one, every parameter stacked on a leading member dimension.

The stacked model runs the same modules as a single VAE (their layers take a member
dimension, see model.layers.Linear); all weights live in one (M, P) buffer, so the gradient
norm, the clip and Adam run per member row. A single run is a stack of one; a population's
seeds and a sweep's trials are stacks of several.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vae_cli.model.layers import Linear
from vae_cli.model.vae import VAE
from vae_cli.training.adam import AdamState
from vae_cli.training.statistics import Statistics


def transposed_when_stacked(model: VAE) -> set[str]:
    """The parameters a stack stores transposed: the Linear weights (see model.Linear)."""
    return {
        f"{name}.weight" for name, module in model.named_modules() if isinstance(module, Linear)
    }


def stack_models(models: list[VAE]) -> tuple[VAE, nn.Parameter]:
    """One VAE whose every parameter is (M, ...), a view into one (M, P) buffer holding member
    m's weights in row m."""
    stacked = copy.deepcopy(models[0])
    stacked.members = len(models)
    transposed = transposed_when_stacked(stacked)
    names = [name for name, _ in stacked.named_parameters()]
    rows = []
    for model in models:
        parameters = dict(model.named_parameters())
        rows.append(
            torch.cat([stack_layout(parameters[n].detach(), n in transposed) for n in names])
        )
    flat = nn.Parameter(torch.stack(rows))
    offset = 0
    for name, parameter in stacked.named_parameters():
        shape = parameter.shape[::-1] if name in transposed else parameter.shape
        size = parameter.numel()
        parameter.data = flat.data[:, offset : offset + size].view(len(models), *shape)
        offset += size
    return stacked, flat


def stack_layout(value: torch.Tensor, transposed: bool) -> torch.Tensor:
    """One member's parameter as a row segment of the flat buffer."""
    return (value.t() if transposed else value).reshape(-1)


def member_weights(stacked: VAE, member: int) -> dict[str, torch.Tensor]:
    """Member m's weights as views, in the single model's layout (its state_dict)."""
    transposed = transposed_when_stacked(stacked)
    return {
        name: p.detach()[member].t() if name in transposed else p.detach()[member]
        for name, p in stacked.named_parameters()
    }


def member_view(stacked: VAE, weights: dict[str, torch.Tensor]) -> VAE:
    """A member as an ordinary VAE whose weights are the given views of the stack (no copy):
    for the test pass, pictures and checkpoints, through the single-model code."""
    with torch.device("meta"):
        model = VAE(stacked.config)
    model.load_state_dict(weights, assign=True)
    return model.eval()


class Stack:
    """What training changes and a phase's step works on: the stacked model, its weights and
    gradients (M, P), the Adam moments, the running statistics, and which members are frozen
    (failed, pruned or done: they still ride along in the products but are never updated)."""

    def __init__(self, models: list[VAE], *, average: bool = False) -> None:
        self.model, self.flat = stack_models(models)
        transposed = transposed_when_stacked(self.model)
        # (shape in the stack, transposed?) of each parameter's segment of a row, in order.
        self.segments = [
            (p.shape[1:], name in transposed) for name, p in self.model.named_parameters()
        ]
        self.flat_grad = torch.zeros_like(self.flat)
        self.parameters = list(self.model.parameters())
        self.adam = AdamState.zeros_like(self.flat.detach())
        # The exponential moving average of the weights (the `ema` setting), what every
        # evaluation and command reads, and each member's count of averaged steps (its
        # warm-up); None without one.
        self.average: torch.Tensor | None = None
        self.averaged_steps: torch.Tensor | None = None
        if average:
            self.keep_average()
        self.stats = Statistics(len(models), self.flat.device)
        self.frozen = torch.zeros(len(models), device=self.flat.device)

    @property
    def size(self) -> int:
        return len(self.flat)

    def keep_average(self) -> None:
        """Start the moving average of the weights at the weights as they are."""
        self.average = self.flat.detach().clone()
        self.averaged_steps = torch.zeros(self.size, dtype=torch.float64, device=self.flat.device)

    def member(self, member: int) -> VAE:
        """Member m as the model every evaluation and command reads: its averaged weights
        with a moving average, else its weights (views, no copy)."""
        return member_view(self.model, self.member_weights(member))

    def member_weights(self, member: int) -> dict[str, torch.Tensor]:
        """The weights of `member` that every evaluation and command reads, in the single
        model's layout (views)."""
        if self.average is None:
            return self.training_weights(member)
        return self.row_weights(self.average[member])

    def training_weights(self, member: int) -> dict[str, torch.Tensor]:
        """The weights the optimiser updates, in the single model's layout (views)."""
        return member_weights(self.model, member)

    def row_weights(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """A (P,) row of the stack's layout as named views in the single model's layout."""
        weights, offset = {}, 0
        for (name, _), (shape, transposed) in zip(
            self.model.named_parameters(), self.segments, strict=True
        ):
            view = row[offset : offset + shape.numel()].view(shape)
            weights[name] = view.t() if transposed else view
            offset += shape.numel()
        return weights

    @torch.no_grad()
    def load_member_weights(self, member: int, state: dict[str, torch.Tensor]) -> None:
        """Member m's training weights from a state_dict in the single model's layout."""
        for name, view in self.training_weights(member).items():
            view.copy_(state[name])

    def single_layout(self, row: torch.Tensor) -> torch.Tensor:
        """A (P,) row of the stack (weights or an Adam moment) in a single VAE's flat layout:
        its parameters in order, each as nn.Linear stores it. Checkpoints hold this layout."""
        parts, offset = [], 0
        for shape, transposed in self.segments:
            segment = row[offset : offset + shape.numel()].view(shape)
            parts.append((segment.t() if transposed else segment).reshape(-1))
            offset += shape.numel()
        return torch.cat(parts)

    def stack_layout(self, flat: torch.Tensor) -> torch.Tensor:
        """The inverse of single_layout: a single VAE's flat values as a row of the stack."""
        parts, offset = [], 0
        for shape, transposed in self.segments:
            single = shape[::-1] if transposed else shape
            segment = flat[offset : offset + shape.numel()].view(single)
            parts.append((segment.t() if transposed else segment).reshape(-1))
            offset += shape.numel()
        return torch.cat(parts)

    def member_state_dict(self, member: int, *, lr: float, beta2: float) -> dict[str, Any]:
        """Member m's weights and Adam state, in a single model's and torch.optim.Adam's layout
        (views: the checkpointer copies them). "model" holds the weights every command reads
        (the averaged ones with a moving average, whose training weights are then kept as
        "training_weights" for a resume)."""
        state = {
            "model": self.member_weights(member),
            "optimizer": self.adam.member_state_dict(
                member, lr=lr, beta2=beta2, layout=self.single_layout
            ),
        }
        if self.average is not None:
            state["training_weights"] = self.training_weights(member)
            state["averaged_steps"] = self.averaged_steps[member]
        return state

    @torch.no_grad()
    def load_member_state_dict(self, member: int, checkpoint: dict[str, Any]) -> None:
        self.load_member_weights(member, checkpoint.get("training_weights", checkpoint["model"]))
        self.adam.load_member(member, checkpoint["optimizer"], self.stack_layout)
        if self.average is not None:
            for name, view in self.row_weights(self.average[member]).items():
                view.copy_(checkpoint["model"][name])
            self.averaged_steps[member] = checkpoint["averaged_steps"]

    def freeze(self, member: int) -> None:
        self.frozen[member] = 1.0

    def finite_weights(self) -> list[bool]:
        """Whether each member's weights are all finite (one sync for all)."""
        return torch.isfinite(self.flat).all(dim=1).tolist()
