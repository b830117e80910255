"""The objectives' arithmetic, with their named parts: the negative ELBO from a reconstruction
term and each layer's KL (beta, free bits), and the IWAE bound (Burda et al. 2016) from log
weights. A stack's tensors carry the member dimension first, and its losses are one per member.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from vae_cli.model.priors import LayerKL


class LossParts(NamedTuple):
    loss: torch.Tensor  # scalar objective to minimise (mean over the batch)
    recon: torch.Tensor  # (B,) -log p(x|z) in nats
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)) in nats, every layer together
    kl_per_dim: torch.Tensor  # (D,) batch mean of the KL of each latent dimension
    kl_per_layer: torch.Tensor | None = None  # (L,) batch means, bottom first (evaluation)


def floor_dimensions(kl_per_dim: torch.Tensor, free_bits: float | torch.Tensor) -> torch.Tensor:
    """Σ_d max(KL_d, free_bits) of the batch-mean KL of each dimension (Kingma et al. 2016,
    §C.8: free bits); free_bits may be one value per member, where 0 leaves the KL as it is."""
    if isinstance(free_bits, torch.Tensor):
        floored = torch.maximum(kl_per_dim, free_bits.unsqueeze(-1)).sum(-1)
        return torch.where(free_bits > 0, floored, kl_per_dim.sum(-1))
    if free_bits > 0:
        return kl_per_dim.clamp(min=free_bits).sum(-1)
    return kl_per_dim.sum(-1)


def floor_layer(kl: torch.Tensor, free_bits: float | torch.Tensor, dimensions: int) -> torch.Tensor:
    """max(KL, free_bits · D) of a layer's batch-mean KL, when its dimensions' shares are not
    exact (a mixture prior's): the floor holds the layer as a whole, so below it the layer
    gets no KL gradient at all, as each dimension of an exact one does."""
    floor = free_bits * dimensions
    if isinstance(free_bits, torch.Tensor):
        return torch.where(free_bits > 0, torch.maximum(kl, floor), kl)
    return kl.clamp(min=floor) if free_bits > 0 else kl


def elbo_from_parts(
    recon: torch.Tensor,
    layers: list[LayerKL],
    *,
    beta: float | torch.Tensor = 1.0,
    free_bits: float | torch.Tensor = 0.0,
) -> LossParts:
    """recon (B,) plus beta times each layer's KL: with free bits, each dimension counts at
    least `free_bits` nats where its share is exact, else its layer counts at least
    `free_bits` per dimension. The reported KL stays the true one."""
    kl_dims = torch.cat([layer.per_dim for layer in layers], dim=-1).to(recon.dtype)
    kl_per_dim = kl_dims.mean(-2)
    if all(layer.total is None for layer in layers):
        kl_term, kl = floor_dimensions(kl_per_dim, free_bits), kl_dims.sum(-1)
    else:
        kl_term = kl = None
        for layer in layers:
            if layer.total is None:
                term, whole = floor_dimensions(layer.per_dim.mean(-2), free_bits), None
            else:
                whole = layer.total.to(recon.dtype)
                term = floor_layer(whole.mean(-1), free_bits, layer.per_dim.shape[-1])
            whole = layer.per_dim.sum(-1).to(recon.dtype) if whole is None else whole
            kl_term = term if kl_term is None else kl_term + term
            kl = whole if kl is None else kl + whole
    loss = recon.mean(-1) + beta * kl_term
    per_layer = None
    if not torch.is_grad_enabled():  # what evaluation reports of each layer
        per_layer = torch.stack(
            [
                (layer.per_dim.sum(-1) if layer.total is None else layer.total).mean(-1)
                for layer in layers
            ],
            dim=-1,
        )
    return LossParts(loss, recon, kl, kl_per_dim, per_layer)


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k per image, from (…, K, B) log weights (Burda et al. 2016, eq. 8)."""
    return torch.logsumexp(log_weights, dim=-2) - math.log(log_weights.shape[-2])
