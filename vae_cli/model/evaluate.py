"""Test-set evaluation: the ELBO, posterior-collapse diagnostics and the importance-weighted NLL.

Every number is per image in nats; sampling uses fixed seeds so results are reproducible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vae_cli.model.layers import IMAGE_PIXELS
from vae_cli.model.vae import VAE

EVAL_SEED = 1234  # noise for the test-set ELBO: the same draws at every evaluation
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_d]) above this is "active"


@dataclass
class ElboResult:
    loss: float  # negative ELBO per image
    recon: float
    kl: float
    kl_per_dim: list[float]  # sorted, largest first (every layer's dimensions together)
    active_units: int
    images: int
    kl_per_layer: list[float] = field(default_factory=list)  # bottom (z1) first
    active_units_per_layer: list[int] = field(default_factory=list)


@dataclass
class IwResult:
    nll: float  # importance-weighted estimate of -log p(x) per image
    stderr: float  # standard error of that mean over images
    bits_per_dim: float
    samples: int


def sampling_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def layer_noise(
    model: VAE, leading: tuple[int, ...], generator: torch.Generator, like: torch.Tensor
) -> list[torch.Tensor]:
    """Standard-normal noise for every stochastic layer, (*leading, D_l) each, in order."""
    return [
        torch.randn((*leading, size), generator=generator, device=like.device, dtype=like.dtype)
        for size in model.latent_dims
    ]


@torch.no_grad()
def evaluate_elbo(
    model: VAE, x: torch.Tensor, *, batch_size: int = 1000, seed: int = EVAL_SEED
) -> ElboResult:
    """Negative ELBO, its parts, each layer's KL (and each dimension's share) and active units
    over images x (M, 784). Active units (Burda et al. 2016): dimensions whose posterior mean
    varies over the images with variance above 0.01, each layer's with the others at their
    means."""
    model.eval()
    generator = sampling_generator(x.device, seed)
    totals = torch.zeros(3, dtype=torch.float64, device=x.device)  # loss, recon, kl sums
    kl_dims = kl_layers = mu_sum = mu_square_sum = None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        parts = model.elbo(batch, layer_noise(model, (len(batch),), generator, batch))
        totals += torch.stack(
            [(parts.recon + parts.kl).sum(), parts.recon.sum(), parts.kl.sum()]
        ).double()
        batch_kl = parts.kl_per_dim.double() * len(batch)
        batch_layers = parts.kl_per_layer.double() * len(batch)
        mu64 = torch.cat(posterior_means(model, batch), dim=-1).double()
        kl_dims = batch_kl if kl_dims is None else kl_dims + batch_kl
        kl_layers = batch_layers if kl_layers is None else kl_layers + batch_layers
        mu_sum = mu64.sum(0) if mu_sum is None else mu_sum + mu64.sum(0)
        mu_square_sum = (
            mu64.pow(2).sum(0) if mu_square_sum is None else mu_square_sum + mu64.pow(2).sum(0)
        )
    model.train()
    n = len(x)
    mu_variance = mu_square_sum / n - (mu_sum / n).pow(2)
    loss, recon, kl = (totals / n).tolist()
    per_dim = (kl_dims / n).tolist()
    active = (mu_variance > ACTIVE_UNIT_THRESHOLD).tolist()
    bounds = [0, *itertools.accumulate(model.latent_dims)]
    layers = list(itertools.pairwise(bounds))
    return ElboResult(
        loss=loss,
        recon=recon,
        kl=kl,
        kl_per_dim=sorted(per_dim, reverse=True),
        active_units=sum(active),
        images=n,
        kl_per_layer=(kl_layers / n).tolist(),
        active_units_per_layer=[sum(active[a:b]) for a, b in layers],
    )


def posterior_means(model: VAE, x: torch.Tensor) -> list[torch.Tensor]:
    """E_q[z_l] of every layer with the others at their means (chain: mu2 of q(z2|z1) at
    z1 = mu1, and so on up)."""
    return [mu for mu, _ in model.encode_layers(x)]


@torch.no_grad()
def importance_weighted_nll(
    model: VAE,
    x: torch.Tensor,
    samples: int,
    *,
    seed: int = EVAL_SEED,
    max_elements: int = 1 << 24,
    progress: Callable[[int, int], None] | None = None,
) -> IwResult:
    """The mean over images of `nll_per_image`, with its standard error and bits/dim."""
    nll = nll_per_image(model, x, samples, seed=seed, max_elements=max_elements, progress=progress)
    mean = nll.mean().item()
    stderr = (nll.std(unbiased=True) / math.sqrt(len(nll))).item() if len(nll) > 1 else 0.0
    return IwResult(
        nll=mean, stderr=stderr, bits_per_dim=mean / (IMAGE_PIXELS * math.log(2)), samples=samples
    )


@torch.no_grad()
def nll_per_image(
    model: VAE,
    x: torch.Tensor,
    samples: int,
    *,
    seed: int = EVAL_SEED,
    max_elements: int = 1 << 24,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """-log p(x) ≈ -log (1/K) Σ_k p(x, z_k) / q(z_k|x) (Burda et al. 2016) of each image (N,),
    float64, over every stochastic layer.

    Vectorised over samples: each forward pass decodes a (chunk, batch) block of z, sized so
    that the (chunk, batch, 784) logits stay under `max_elements`; a running logsumexp merges
    the chunks, so memory is bounded whatever K is. `progress(done, total)` hears of each
    chunk, counted in decoded samples (images x K).
    """
    model.eval()
    generator = sampling_generator(x.device, seed)
    # Per decoded sample: its pixels, or the prior's terms (a VampPrior's K·D) if those are more.
    width = max(IMAGE_PIXELS, model.prior.width(model.latent_dims[-1]))
    batch_size = max(1, min(len(x), max_elements // width))
    nll = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        chunk = max(1, min(samples, max_elements // (len(batch) * width)))
        running = torch.full((len(batch),), -math.inf, dtype=torch.float64, device=x.device)
        for first in range(0, samples, chunk):
            k = min(chunk, samples - first)
            noise = layer_noise(model, (k, len(batch)), generator, batch)
            log_w = model.log_weights(batch, noise)[0].double()
            running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
            if progress is not None:  # samples decoded: earlier batches', then this one's
                progress(start * samples + (first + k) * len(batch), len(x) * samples)
        nll.append(-(running - math.log(samples)))
    model.train()
    return torch.cat(nll)
