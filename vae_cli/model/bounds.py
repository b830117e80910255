"""The objectives, with their named parts: the negative ELBO (analytic KL, beta, free bits) and
the negative IWAE bound (Burda et al. 2016). A stack's tensors carry the member dimension
first, and its losses are one per member."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_kl, gaussian_log_density


class LossParts(NamedTuple):
    loss: torch.Tensor  # scalar objective to minimise (mean over the batch)
    recon: torch.Tensor  # (B,) -log p(x|z) in nats
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)) in nats
    kl_per_dim: torch.Tensor  # (D,) batch mean of the KL of each latent dimension


def elbo_loss(
    x: torch.Tensor,
    x_logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    beta: float | torch.Tensor = 1.0,
    free_bits: float | torch.Tensor = 0.0,
) -> LossParts:
    """Negative ELBO per image: Bernoulli reconstruction term plus beta·KL (analytic).

    A population's tensors carry the member dimension first, (M, B, …): beta and free_bits
    may then be (M,) tensors, one value per member, and the loss is (M,).
    """
    recon = -bernoulli_log_likelihood(x_logits, x)  # (B,)
    return elbo_from_parts(recon, gaussian_kl(mu, logvar), beta=beta, free_bits=free_bits)


def elbo_from_parts(
    recon: torch.Tensor,
    kl_dims: torch.Tensor,
    *,
    beta: float | torch.Tensor = 1.0,
    free_bits: float | torch.Tensor = 0.0,
    kl_joint: torch.Tensor | None = None,
) -> LossParts:
    """recon (B,) plus beta times the KL of each latent dimension, kl_dims (B, D). With free
    bits (Kingma et al. 2016, §C.8) each dimension's batch-mean KL counts at least `free_bits`
    nats in the objective; the reported KL stays the true one.

    `kl_joint` (B,): the KL when it is not the sum of kl_dims (a VampPrior's dimensions are not
    independent under the mixture, and kl_dims are their marginal estimates): the objective
    then counts the joint KL, with the free bits' floors added where they lift a dimension."""
    kl_per_dim = kl_dims.mean(-2)
    kl_term = kl_per_dim.sum(-1)
    if isinstance(free_bits, torch.Tensor):  # per member; a floor of 0 leaves the KL as it is
        floored = torch.maximum(kl_per_dim, free_bits.unsqueeze(-1)).sum(-1)
        kl_term = torch.where(free_bits > 0, floored, kl_term)
    elif free_bits > 0:
        kl_term = kl_per_dim.clamp(min=free_bits).sum(-1)
    if kl_joint is not None:  # what the dimensions' marginals leave out of the joint KL
        kl_term = kl_term + (kl_joint.mean(-1) - kl_per_dim.sum(-1))
    loss = recon.mean(-1) + beta * kl_term
    kl = kl_dims.sum(-1) if kl_joint is None else kl_joint
    return LossParts(loss, recon, kl, kl_per_dim)


def log_importance_weights(
    log_px_z: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for samples z of shape (K, B, D); returns (K, B)."""
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    log_qz_x = gaussian_log_density(z, mu, logvar)
    return log_px_z + log_pz - log_qz_x


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k per image, from (…, K, B) log weights (Burda et al. 2016, eq. 8)."""
    return torch.logsumexp(log_weights, dim=-2) - math.log(log_weights.shape[-2])


def iwae_noise(mu: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k standard-normal draws per row of mu, (k, B, D): the noise of iwae_loss."""
    return torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)


def iwae_loss(
    x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, decode, eps: torch.Tensor
) -> LossParts:
    """Negative IWAE bound (Burda et al. 2016) with the K samples z = mu + sigma·eps per image,
    eps (K, B, D); `loss` is the bound's batch mean. For a population every tensor has the
    member dimension first (eps (M, K, B, D)) and the loss is (M,).

    recon is the mean over samples of -log p(x|z_k) and kl the analytic KL, for reporting.
    """
    mu_k, logvar_k = mu.unsqueeze(-3), logvar.unsqueeze(-3)  # broadcast over the K samples
    z = mu_k + torch.exp(0.5 * logvar_k) * eps  # (K, B, D); logvar is clamped by encode
    log_px_z = bernoulli_log_likelihood(decode(z), x.unsqueeze(-3))  # (K, B)
    bound = iwae_bound(log_importance_weights(log_px_z, z, mu_k, logvar_k))
    kl_dims = gaussian_kl(mu, logvar)
    return LossParts(-bound.mean(-1), -log_px_z.mean(-2), kl_dims.sum(-1), kl_dims.mean(-2))
