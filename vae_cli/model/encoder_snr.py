"""The signal-to-noise ratio of the IWAE bound's gradient with respect to the encoder's
weights, for the plain estimator and DReG (Rainforth et al. 2018: the plain one's falls as k
grows; Tucker et al. 2019: DReG's does not)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from vae_cli.model.vae import VAE


def encoder_parameters(model: VAE) -> list[torch.nn.Parameter]:
    """q's weights: the encoder of each layer (not a VampPrior's pseudo-inputs)."""
    return [p for name, p in model.named_parameters() if name.startswith("encoder")]


def encoder_gradients(
    model: VAE, x: torch.Tensor, k: int, draws: int, seed: int, *, dreg: bool
) -> Iterator[torch.Tensor]:
    """`draws` independent estimates, one at a time (P,), of the gradient of image x's IWAE-k
    bound with respect to the encoder's weights, flattened, in float64; the same noise for
    either estimator."""
    generator = torch.Generator().manual_seed(seed)
    parameters = encoder_parameters(model)
    device = x.device
    for _ in range(draws):
        noise = [torch.randn(k, 1, size, generator=generator).to(device)
                 for size in model.latent_dims]  # fmt: skip
        loss = model.iwae(x, noise, dreg=dreg).loss
        grads = torch.autograd.grad(loss, parameters)
        yield torch.cat([g.reshape(-1) for g in grads]).double().cpu()


def signal_to_noise(gradients: Iterable[torch.Tensor]) -> float:
    """|E g| / std(g) of each weight over the draws, averaged over the weights whose gradient
    varies (a weight no draw moves has no ratio). Welford's running mean and sum of squares:
    the draws are never held together (a default encoder has 283,000 weights)."""
    count, mean, squares = 0, None, None
    for row in gradients:
        count += 1
        if mean is None:
            mean, squares = row.clone(), torch.zeros_like(row)
            continue
        delta = row - mean
        mean += delta / count
        squares += delta * (row - mean)
    std = (squares / (count - 1)).sqrt()
    varies = std > 0
    return (mean[varies].abs() / std[varies]).mean().item()


def encoder_snr(
    model: VAE,
    x: torch.Tensor,
    k: int,
    draws: int,
    seed: int,
    counted: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """The SNR of the plain IWAE-k gradient and of DReG's; `counted()` hears of each of the
    2 x `draws` gradients as it is taken (each is a backward pass)."""

    def each(gradients: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for gradient in gradients:
            counted()
            yield gradient

    return {
        name: signal_to_noise(each(encoder_gradients(model, x, k, draws, seed, dreg=dreg)))
        for name, dreg in (("iwae", False), ("dreg", True))
    }
