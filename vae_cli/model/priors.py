"""The prior p(z) of the top latent, as an object: the standard normal, or the VampPrior
(Tomczak & Welling 2018), p(z) = (1/K) Σ_k q(z | u_k), a mixture of the model's own top
posterior at K learned pseudo-inputs u_k.

A prior is given what it needs of its model through a PriorContext (the top posterior as a
function of images, the stack's size), never the model itself. Adding a prior is one class here
and its name among the `prior` setting's choices (config/settings.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from vae_cli.model.densities import (
    LOG_2PI,
    gaussian_kl,
    gaussian_log_density,
    gaussian_log_density_per_dim,
)
from vae_cli.model.layers import IMAGE_PIXELS

# The paper's initialisation of the pseudo-inputs for binary MNIST: N(0.05, 0.01) per pixel,
# kept in [0, 1] by a hard tanh (its code's `pseudoinputs_mean`, `pseudoinputs_std`).
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01

Posterior = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class PriorContext(NamedTuple):
    """What a prior may ask of its model: the top layer's posterior q(z_L|x) as a function of
    images (mu and clamped logvar), and the number of stacked members (None: one model)."""

    posterior: Posterior
    members: int | None


class LayerKL(NamedTuple):
    """One layer's KL(q || p) per image: each dimension's share (B, D) and, when the shares do
    not add up to it (a mixture prior's dimensions are not independent), the whole (B,).
    `total` None: the shares are exact and sum to it; free bits then floor each dimension,
    else the layer as a whole."""

    per_dim: torch.Tensor
    total: torch.Tensor | None = None


class NormalPrior(nn.Module):
    """p(z) = N(0, I): no parameters, an analytic KL, and draws that are the noise itself."""

    exact_kl = True  # KL(q || p) in closed form, each dimension's share exact

    @classmethod
    def from_config(cls, config: object) -> NormalPrior:
        return cls()

    def log_prob(self, z: torch.Tensor, context: PriorContext) -> torch.Tensor:
        """log p(z) of draws z (..., D), summed over the dimensions."""
        return gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))

    def kl(
        self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, context: PriorContext
    ) -> LayerKL:
        """KL(N(mu, sigma²) || N(0, I)) per dimension, in closed form (the draw z unused)."""
        return LayerKL(gaussian_kl(mu, logvar))

    def draw_components(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        return None  # nothing to draw before the noise

    def sample(
        self, component: torch.Tensor | None, eps: torch.Tensor, context: PriorContext
    ) -> torch.Tensor:
        return eps

    def grid(self, quantiles: torch.Tensor, context: PriorContext) -> torch.Tensor:
        """Where a grid of standard-normal quantiles (n, D) lies under the prior."""
        return quantiles

    def width(self, latent_size: int) -> int:
        """Values per draw that log p(z) holds at once (what bounds an evaluation's chunk)."""
        return latent_size

    def learned_inputs(self) -> torch.Tensor | None:
        """Images the prior learned (pictured in the run folder), if it has any."""
        return None


class VampPrior(nn.Module):
    """The K learned pseudo-inputs of a VampPrior and its maths; the mixture's components are
    the model's top posterior at them, which the context gives."""

    exact_kl = False  # estimated from the draw, and not separable over dimensions

    def __init__(self, k: int) -> None:
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.empty(k, IMAGE_PIXELS))
        nn.init.normal_(self.pseudo_inputs, PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD)

    @classmethod
    def from_config(cls, config: object) -> VampPrior:
        return cls(config.pseudo_inputs)

    def inputs(self) -> torch.Tensor:
        """u_k in [0, 1] (K, 784), or (M, K, 784) for a stack; a hard tanh, as in the paper, so
        a pixel pushed out of range stops there (its gradient is zero outside)."""
        return self.pseudo_inputs.clamp(0.0, 1.0)

    def components(self, context: PriorContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's components, q(z_L | u_k): mu and clamped logvar, (K, D) each ((M, K,
        D) stacked)."""
        return context.posterior(self.inputs())

    def log_prob(self, z: torch.Tensor, context: PriorContext) -> torch.Tensor:
        mu, logvar = (t.to(z.dtype) for t in self.components(context))
        return mixture_log_density(z, mu, logvar, context.members)

    def kl(
        self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, context: PriorContext
    ) -> LayerKL:
        """KL(q(z|.) || p(z)) at the draw z, estimated from that one sample (the mixture has no
        closed form, eq. 6): the whole log q(z|.) - log p(z), and each dimension's against the
        prior's marginal. Those need an (..., K, D) tensor, half the step at K = 500, and
        training reads only the whole: they are computed without a gradient only (zeros
        otherwise)."""
        prior_mu, prior_logvar = (t.to(z.dtype) for t in self.components(context))
        log_q = gaussian_log_density_per_dim(z, mu, logvar)
        joint = log_q.sum(-1) - mixture_log_density(z, prior_mu, prior_logvar, context.members)
        if torch.is_grad_enabled():
            return LayerKL(torch.zeros_like(log_q), joint)
        marginal = mixture_log_density_per_dim(z, prior_mu, prior_logvar, context.members)
        return LayerKL(log_q - marginal, joint)

    def draw_components(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Each draw's mixture component, drawn before its noise."""
        return torch.randint(len(self.pseudo_inputs), (n,), generator=generator)

    def sample(
        self, component: torch.Tensor | None, eps: torch.Tensor, context: PriorContext
    ) -> torch.Tensor:
        """z = mu_k + sigma_k·eps of each draw's component k (ancestral sampling)."""
        mu, logvar = self.components(context)
        return mu[component] + torch.exp(0.5 * logvar[component]) * eps

    def grid(self, quantiles: torch.Tensor, context: PriorContext) -> torch.Tensor:
        """Standard-normal quantiles (n, D) scaled to the mixture's mean and standard
        deviation, so that a grid of them covers where the prior lies."""
        mu, logvar = self.components(context)
        mean = mu.mean(-2)
        spread = (logvar.exp() + mu.pow(2)).mean(-2) - mean.pow(2)
        return mean + spread.sqrt() * quantiles

    def width(self, latent_size: int) -> int:
        return len(self.pseudo_inputs) * latent_size

    def learned_inputs(self) -> torch.Tensor:
        return self.inputs()


PRIORS: dict[str, type[nn.Module]] = {"normal": NormalPrior, "vamp": VampPrior}


class PriorNoise(NamedTuple):
    """What a draw from the prior needs, drawn on the CPU from one generator: the mixture
    component of each draw (None for the standard normal), then each layer's standard-normal
    noise, the top layer first."""

    component: torch.Tensor | None  # (n,) indices in 0..K-1
    eps: list[torch.Tensor]  # (n, D_l) each, top layer first


def align_components(z: torch.Tensor, component: torch.Tensor, members: int | None) -> torch.Tensor:
    """A component tensor (K, D), or (M, K, D) for a stack, shaped to broadcast against
    z.unsqueeze(-2) of shape (..., 1, D) (a stack's z is (M, ..., D))."""
    if members is None:
        return component
    return component.view(members, *([1] * (z.dim() - 2)), *component.shape[-2:])


def mixture_log_density(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, members: int | None = None
) -> torch.Tensor:
    """log (1/K) Σ_k N(z; mu_k, diag exp(logvar_k)) for z (..., D): a log-mean-exp over the K
    components of the sum over dimensions (Tomczak & Welling 2018, eq. 9).

    Σ_d (z_d - mu_kd)² / var_kd is expanded into z²·(1/var_k) - 2 z·(mu_k/var_k) + Σ mu_k²/var_k:
    one matrix product of (N, 2D) by (2D, K) instead of an (N, K, D) tensor, which at K = 500
    costs more than the rest of the step. The expanded terms nearly cancel near a narrow
    component, so the product is taken in float64 (a small product next to the step's; MPS
    has no float64, and autocast leaves float64 alone)."""
    dims, dtype = z.shape[-1], z.dtype
    exact = torch.float32 if z.device.type == "mps" else torch.float64
    z, mu, logvar = z.to(exact), mu.to(exact), logvar.to(exact)
    precision = torch.exp(-logvar)  # (K, D), or (M, K, D)
    weights = torch.cat([precision, -2 * mu * precision], dim=-1)  # (…, K, 2D)
    offset = (mu.pow(2) * precision + logvar).sum(-1) + dims * LOG_2PI  # (…, K)
    rows = z.reshape(-1, dims) if members is None else z.reshape(members, -1, dims)
    quadratic = torch.cat([rows.pow(2), rows], dim=-1) @ weights.transpose(-1, -2)  # (…, N, K)
    per_component = -0.5 * (quadratic + offset.unsqueeze(-2))
    per_component = per_component.reshape(*z.shape[:-1], mu.shape[-2])
    return (torch.logsumexp(per_component, dim=-1) - math.log(mu.shape[-2])).to(dtype)


def mixture_log_density_per_dim(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, members: int | None = None
) -> torch.Tensor:
    """log p(z_d) of each dimension under the mixture's marginal, (..., D): a mixture's
    marginal is the mixture of its components' marginals. What the per-dimension KL of a
    VampPrior is estimated with (its dimensions are not independent: these do not sum to
    log p(z))."""
    mu, logvar = (align_components(z, t, members) for t in (mu, logvar))
    per_component = gaussian_log_density_per_dim(z.unsqueeze(-2), mu, logvar)  # (..., K, D)
    return torch.logsumexp(per_component, dim=-2) - math.log(mu.shape[-2])
