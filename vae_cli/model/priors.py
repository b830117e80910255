"""The prior p(z) of the top latent: the standard normal, or the VampPrior (Tomczak & Welling
2018), p(z) = (1/K) Σ_k q(z | u_k), a mixture of the encoder's own posteriors at K learned
pseudo-inputs u_k. Pure functions of tensors and one module holding the pseudo-inputs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from vae_cli.model.densities import LOG_2PI, gaussian_log_density_per_dim
from vae_cli.model.layers import IMAGE_PIXELS

if TYPE_CHECKING:
    from vae_cli.model.vae import VAE

# The paper's initialisation of the pseudo-inputs for binary MNIST: N(0.05, 0.01) per pixel,
# kept in [0, 1] by a hard tanh (its code's `pseudoinputs_mean`, `pseudoinputs_std`).
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01


class VampPrior(nn.Module):
    """The K learned pseudo-inputs of a VampPrior, and its maths. The mixture's components are
    the posteriors of the VAE that holds this prior: its methods take that model (not kept
    here, so the module tree stays a tree)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.empty(k, IMAGE_PIXELS))
        nn.init.normal_(self.pseudo_inputs, PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD)

    def inputs(self) -> torch.Tensor:
        """u_k in [0, 1] (K, 784), or (M, K, 784) for a stack; a hard tanh, as in the paper, so
        a pixel pushed out of range stops there (its gradient is zero outside)."""
        return self.pseudo_inputs.clamp(0.0, 1.0)

    def components(self, model: VAE) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixture's components, q at each pseudo-input: mu and clamped logvar, (K, D) each
        ((M, K, D) stacked). With two layers the prior is p(z2), a mixture of
        q(z2 | z1 = mu1(u_k)): each pseudo-input goes up through z1's mean."""
        mu, logvar = model.encode(self.inputs())
        if model.config.stochastic_layers == 2:
            mu, logvar = model.encode_top(mu)
        return mu, logvar

    def log_density(self, model: VAE, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of draws z (..., D) of the top layer."""
        mu, logvar = (t.to(z.dtype) for t in self.components(model))
        return mixture_log_density(z, mu, logvar, model.members)

    def kl(
        self,
        model: VAE,
        z: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        *,
        floored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """KL(q(z|.) || p(z)) at a draw z of the top layer, estimated from that one sample (the
        mixture has no closed form): each dimension's against the prior's marginal, (..., D),
        and the whole log q(z|.) - log p(z), (...).

        The per-dimension estimates need an (..., K, D) tensor, half the step at K = 500: they
        are computed where something reads them, in evaluation (no gradient) and for free
        bits (`floored`); training without free bits gets zeros in their place, since its
        objective is the joint estimate alone."""
        prior_mu, prior_logvar = (t.to(z.dtype) for t in self.components(model))
        log_q = gaussian_log_density_per_dim(z, mu, logvar)
        joint = log_q.sum(-1) - mixture_log_density(z, prior_mu, prior_logvar, model.members)
        if not floored and torch.is_grad_enabled():
            return torch.zeros_like(log_q), joint
        marginal = mixture_log_density_per_dim(z, prior_mu, prior_logvar, model.members)
        return log_q - marginal, joint

    def draw(self, model: VAE, component: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mu_k + sigma_k·eps of each draw's component k (ancestral sampling)."""
        mu, logvar = self.components(model)
        return mu[component] + torch.exp(0.5 * logvar[component]) * eps

    def grid(self, model: VAE, quantiles: torch.Tensor) -> torch.Tensor:
        """Standard-normal quantiles (n, D) scaled to the mixture's mean and standard
        deviation, so that a grid of them covers where the prior lies."""
        mu, logvar = self.components(model)
        mean = mu.mean(-2)
        spread = (logvar.exp() + mu.pow(2)).mean(-2) - mean.pow(2)
        return mean + spread.sqrt() * quantiles

    def width(self, model: VAE) -> int:
        """Values per draw of log p(z), K times the top latent's size: what bounds an
        evaluation's chunk."""
        return len(self.pseudo_inputs) * model.latent_dims[-1]


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
