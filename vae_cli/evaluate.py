"""Test-set evaluation: the ELBO, posterior-collapse diagnostics and the importance-weighted NLL.

Every number is per image in nats; sampling uses fixed seeds so results are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vae_cli.model import (
    IMAGE_PIXELS,
    VAE,
    bernoulli_log_likelihood,
    elbo_loss,
    log_importance_weights,
    posterior_samples,
)

EVAL_SEED = 1234  # noise for the test-set ELBO: the same draws at every evaluation
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_d]) above this is "active"


@dataclass
class ElboResult:
    loss: float  # negative ELBO per image
    recon: float
    kl: float
    kl_per_dim: list[float]  # sorted, largest first
    active_units: int
    images: int


@dataclass
class IwResult:
    nll: float  # importance-weighted estimate of -log p(x) per image
    stderr: float  # standard error of that mean over images
    bits_per_dim: float
    samples: int


def sampling_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def evaluate_elbo(
    model: VAE, x: torch.Tensor, *, batch_size: int = 1000, seed: int = EVAL_SEED
) -> ElboResult:
    """Negative ELBO, its parts, KL per dimension and active units over images `x` (M, 784)."""
    model.eval()
    generator = sampling_generator(x.device, seed)
    totals = torch.zeros(3, dtype=torch.float64, device=x.device)  # loss, recon, kl sums
    kl_dims = mu_sum = mu_square_sum = None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        x_logits, mu, logvar, _ = model(batch, generator)
        parts = elbo_loss(batch, x_logits, mu, logvar)
        totals += torch.stack(
            [(parts.recon + parts.kl).sum(), parts.recon.sum(), parts.kl.sum()]
        ).double()
        batch_kl = parts.kl_per_dim.double() * len(batch)
        mu64 = mu.double()
        kl_dims = batch_kl if kl_dims is None else kl_dims + batch_kl
        mu_sum = mu64.sum(0) if mu_sum is None else mu_sum + mu64.sum(0)
        mu_square_sum = (
            mu64.pow(2).sum(0) if mu_square_sum is None else mu_square_sum + mu64.pow(2).sum(0)
        )
    model.train()
    n = len(x)
    mu_variance = mu_square_sum / n - (mu_sum / n).pow(2)
    loss, recon, kl = (totals / n).tolist()
    return ElboResult(
        loss=loss,
        recon=recon,
        kl=kl,
        kl_per_dim=sorted((kl_dims / n).tolist(), reverse=True),
        active_units=int((mu_variance > ACTIVE_UNIT_THRESHOLD).sum()),
        images=n,
    )


@torch.no_grad()
def importance_weighted_nll(
    model: VAE, x: torch.Tensor, samples: int, *, seed: int = EVAL_SEED, max_elements: int = 1 << 24
) -> IwResult:
    """-log p(x) ≈ -log (1/K) Σ_k p(x, z_k) / q(z_k|x) (Burda et al. 2016), per image.

    Vectorised over samples: each forward pass decodes a (chunk, batch) block of z, sized so
    that the (chunk, batch, 784) logits stay under `max_elements`; a running logsumexp merges
    the chunks, so memory is bounded whatever K is.
    """
    model.eval()
    generator = sampling_generator(x.device, seed)
    batch_size = max(1, min(len(x), max_elements // IMAGE_PIXELS))
    nll_per_image = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        mu, logvar = model.encode(batch)  # (B, D)
        chunk = max(1, min(samples, max_elements // (len(batch) * IMAGE_PIXELS)))
        running = torch.full((len(batch),), -math.inf, dtype=torch.float64, device=x.device)
        for first in range(0, samples, chunk):
            k = min(chunk, samples - first)
            z = posterior_samples(mu, logvar, k, generator)  # (k, B, D)
            log_px_z = bernoulli_log_likelihood(model.decode(z), batch)
            log_w = log_importance_weights(log_px_z, z, mu, logvar).double()
            running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
        nll_per_image.append(-(running - math.log(samples)))
    model.train()
    nll = torch.cat(nll_per_image)
    mean = nll.mean().item()
    stderr = (nll.std(unbiased=True) / math.sqrt(len(nll))).item() if len(nll) > 1 else 0.0
    return IwResult(
        nll=mean, stderr=stderr, bits_per_dim=mean / (IMAGE_PIXELS * math.log(2)), samples=samples
    )
