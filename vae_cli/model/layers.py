"""The networks: MLP and conv encoders and decoders, and the layers under them, which also run M
stacked models at once (a population or a sweep's stack, see training/stack.py)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE


class Linear(nn.Linear):
    """nn.Linear that also runs M models at once (a population, see members.py): with its
    weight stacked as (M, in, out) and its bias as (M, out), an input (M, ..., in) goes through
    one batched product, member m's rows meeting member m's weights only.

    Stacked, each member's weight is stored transposed: the batched product's weight gradient
    then comes out in the weight's own layout (stored as (M, out, in), autograd copied every
    weight gradient into place, a sixth of a CPU step). For one member the values and
    gradients are bit for bit those of F.linear (a test checks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        if x.dim() == 3:  # (M, R, in), the trainer's batches
            return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)
        rows = x.reshape(len(self.weight), -1, x.shape[-1])  # e.g. IWAE's (M, K, B, in)
        out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def member_convolution(
    convolve, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, **options
) -> torch.Tensor:
    """M members' convolutions of x (M, ..., C, H, W) as one grouped convolution (group m:
    member m's channels and filters)."""
    members, lead = len(weight), x.shape[1:-3]
    images = x.reshape(members, -1, *x.shape[-3:]).transpose(0, 1).flatten(1, 2)  # (R, M·C, H, W)
    out = convolve(images, weight.flatten(0, 1), bias.flatten(), groups=members, **options)
    out = out.unflatten(1, (members, -1)).transpose(0, 1)  # (M, R, out, H', W')
    return out.reshape(members, *lead, *out.shape[-3:])


class Conv2d(nn.Conv2d):
    """nn.Conv2d that also runs M models at once (weight (M, out, in, kh, kw))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        return member_convolution(
            F.conv2d, x, self.weight, self.bias, stride=self.stride, padding=self.padding
        )


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d that also runs M models at once (weight (M, in, out, kh, kw))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        return member_convolution(
            F.conv_transpose2d, x, self.weight, self.bias, stride=self.stride, padding=self.padding
        )


def with_constant_weights(module: nn.Module, *inputs: torch.Tensor) -> Any:
    """module(*inputs) with its weights detached: gradients reach the inputs only."""
    from torch.func import functional_call

    weights = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, weights, inputs)


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Tanh()


class GatedDense(nn.Module):
    """h = (W1 x + b1) * sigmoid(W2 x + b2): the gated dense layer of the VampPrior code
    (Tomczak & Welling 2018, after Dauphin et al. 2017's gated linear units)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.h = Linear(in_dim, out_dim)
        self.g = Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def hidden_layer(in_dim: int, out_dim: int, *, block: str, activation: str) -> list[nn.Module]:
    """One hidden layer of an MLP: linear then the activation, or a gated dense layer."""
    if block == "gated":
        return [GatedDense(in_dim, out_dim)]
    return [Linear(in_dim, out_dim), _activation(activation)]


def joined_layers(
    in_dims: list[int], hidden_dim: int, *, block: str, activation: str
) -> tuple[nn.ModuleList | None, list[nn.Module]]:
    """An MLP's hidden layers over one input or several: one input goes through two hidden
    layers; several each through a hidden layer of their own (the branches), then together
    through a joint one (the VampPrior code's q(z1|x,z2) and p(x|z1,z2))."""
    sizes = dict(block=block, activation=activation)
    if len(in_dims) == 1:
        return None, [
            *hidden_layer(in_dims[0], hidden_dim, **sizes),
            *hidden_layer(hidden_dim, hidden_dim, **sizes),
        ]
    branches = nn.ModuleList(
        nn.Sequential(*hidden_layer(size, hidden_dim, **sizes)) for size in in_dims
    )
    return branches, hidden_layer(len(in_dims) * hidden_dim, hidden_dim, **sizes)


def join(branches: nn.ModuleList | None, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The input of an MLP's body: its one input, or its branches' outputs side by side
    (broadcast over leading dimensions: x (B, 784) beside K samples of z (K, B, D))."""
    if branches is None:
        return inputs[0]
    parts = [branch(x) for branch, x in zip(branches, inputs, strict=True)]
    shape = torch.broadcast_shapes(*(part.shape[:-1] for part in parts))
    return torch.cat([part.expand(*shape, -1) for part in parts], dim=-1)


class GaussianMLP(nn.Module):
    """inputs -> hidden -> hidden -> (mu, logvar) of a diagonal Gaussian: a posterior q(z_l|.)
    or a conditional prior p(z_l|z_l+1) (Burda et al. 2016, App. C). A one-input MLP keeps
    the parameter names older checkpoints hold (body.0, body.2, mu, logvar)."""

    def __init__(
        self,
        *,
        in_dim: int | list[int],
        hidden_dim: int,
        out_dim: int,
        activation: str,
        block: str = "mlp",
    ) -> None:
        super().__init__()
        in_dims = [in_dim] if isinstance(in_dim, int) else in_dim
        self.branches, layers = joined_layers(
            in_dims, hidden_dim, block=block, activation=activation
        )
        self.body = nn.Sequential(*layers)
        self.mu = Linear(hidden_dim, out_dim)
        self.logvar = Linear(hidden_dim, out_dim)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(join(self.branches, inputs))  # (B, H)
        return self.mu(h), self.logvar(h)


class MLPDecoder(nn.Module):
    """z (one layer, or every layer of the skip wiring) -> Bernoulli logits (B, 784)."""

    def __init__(
        self,
        *,
        latent_dim: int | list[int],
        hidden_dim: int,
        activation: str,
        block: str = "mlp",
    ) -> None:
        super().__init__()
        in_dims = [latent_dim] if isinstance(latent_dim, int) else latent_dim
        self.branches, layers = joined_layers(
            in_dims, hidden_dim, block=block, activation=activation
        )
        self.body = nn.Sequential(*layers, Linear(hidden_dim, IMAGE_PIXELS))

    def forward(self, *z: torch.Tensor) -> torch.Tensor:
        return self.body(join(self.branches, z))  # (B, 784) logits

    def output_bias(self) -> torch.Tensor:
        """The bias of the output logits, one per pixel."""
        return self.body[-1].bias


class ConvEncoder(nn.Module):
    """Two strided convolutions 28 -> 14 -> 7, then a linear bottleneck."""

    def __init__(self, *, latent_dim: int, hidden_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Unflatten(-1, (1, IMAGE_SIDE, IMAGE_SIDE)),
            Conv2d(1, 32, 4, stride=2, padding=1),
            _activation(activation),
            Conv2d(32, 64, 4, stride=2, padding=1),
            _activation(activation),
            nn.Flatten(-3),
            Linear(64 * 7 * 7, hidden_dim),
            _activation(activation),
        )
        self.mu = Linear(hidden_dim, latent_dim)
        self.logvar = Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    def __init__(self, *, latent_dim: int, hidden_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Linear(latent_dim, hidden_dim),
            _activation(activation),
            Linear(hidden_dim, 64 * 7 * 7),
            _activation(activation),
            nn.Unflatten(-1, (64, 7, 7)),
            ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            _activation(activation),
            ConvTranspose2d(32, 1, 4, stride=2, padding=1),
            nn.Flatten(-3),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    def output_bias(self) -> torch.Tensor:
        """The bias of the output logits: one for the image's single channel."""
        return self.body[-2].bias
