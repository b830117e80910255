"""The reparameterization trick: z = mu + sigma·eps with eps ~ N(0, I) drawn from an explicit
generator (Kingma & Welling 2014, §2.4), and the clamp that keeps sigma in range."""

from __future__ import annotations

import math

import torch


def clamp_logvar(
    logvar: torch.Tensor, *, max_logvar: float = 10.0, min_std: float = 1e-4
) -> torch.Tensor:
    """logvar limited to [-max_logvar, +max_logvar] and to sigma >= min_std.

    Both bounds are passed by name: the widely copied `clamp(logvar, max=-m, min=m)` pins every
    value to +m. A floor on sigma is a floor on logvar = 2·log(sigma).
    """
    lower = -max_logvar
    if min_std > 0:
        lower = max(lower, 2 * math.log(min_std))
    return logvar.clamp(min=lower, max=max_logvar)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    max_logvar: float = 10.0,
    min_std: float = 1e-4,
) -> torch.Tensor:
    """z = mu + sigma·eps, eps ~ N(0, I) from `generator` (Kingma & Welling 2014, §2.4)."""
    std = torch.exp(0.5 * clamp_logvar(logvar, max_logvar=max_logvar, min_std=min_std))
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + std * eps


def posterior_samples(
    mu: torch.Tensor, logvar: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k draws of z ~ q(z|x) per row, shape (k, B, D), from an already clamped logvar."""
    return reparameterize(
        mu.expand(k, *mu.shape),
        logvar.expand(k, *logvar.shape),
        generator,
        max_logvar=math.inf,
        min_std=0.0,
    )
