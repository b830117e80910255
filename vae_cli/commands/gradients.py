"""`vae gradients`: the ELBO's gradient with respect to one test image's posterior parameters by
each estimator (model/gradient_estimators.py), and with --k the encoder gradient's
signal-to-noise ratio under the IWAE bound, plain and DReG (model/encoder_snr.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vae_cli.commands.load import Loaded, test_images
from vae_cli.errors import UserError
from vae_cli.model.encoder_snr import encoder_snr
from vae_cli.model.gradient_estimators import (
    ESTIMATORS,
    Estimates,
    estimate_all,
    model_terms,
    naive_gradient,
    upper_noise,
)

SAMPLES = 2000  # draws per estimator: a score function's std to about 3 %
SNR_DRAWS = 500  # IWAE gradients per k and estimator: each is a backward pass
MAX_SAMPLES = 1_000_000


def measure_gradients(
    loaded: Loaded,
    data_dir: Path,
    *,
    index: int,
    samples: int,
    ks: list[int],
    seed: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
    stage: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """The `vae gradients` report of test image `index` (see the command's help);
    `progress(done, total)` hears of each encoder gradient of --k, `stage(line)` of each
    stage finished."""
    x, _ = test_images(loaded, data_dir, None)
    if not 0 <= index < len(x):
        raise UserError(f"--index {index}: the test set has images 0 to {len(x) - 1}")
    model, image = loaded.model.eval(), x[index : index + 1]
    for parameter in model.parameters():  # gradients are asked for explicitly, by name
        parameter.requires_grad_(True)
    with torch.no_grad():
        mu, logvar = (t[0] for t in model.encode(image))
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(samples, len(mu), generator=generator).to(mu.device)
    upper = [noise.to(mu.device) for noise in upper_noise(model, samples, generator)]
    terms = model_terms(model, image, upper)
    estimates = estimate_all(terms, mu, logvar, eps)
    naive = naive_gradient(terms, mu, logvar, eps)
    stage(f"estimators: {', '.join(ESTIMATORS)} and naive, {samples:,} draws each")
    report: dict[str, Any] = {
        "checkpoint": str(loaded.path),
        "index": index,
        "samples": samples,
        "latent_dim": len(mu),
        "layer": model.layer_names()[0],
        "kl": "analytic" if terms.analytic_kl is not None else "sampled",
        "estimators": summarize(estimates),
        "naive": {"grad_mu": naive[0].mean(0).tolist(), "grad_logvar": naive[1].mean(0).tolist()},
    }
    if ks:
        draws, done = min(samples, SNR_DRAWS), [0]
        total = 2 * draws * len(ks)

        def counted() -> None:
            done[0] += 1
            progress(done[0], total)

        per_k = {}
        for k in ks:
            per_k[str(k)] = encoder_snr(model, image, k, draws, seed, counted)
            snr = per_k[str(k)]
            stage(f"encoder SNR k={k}: IWAE {snr['iwae']:.3g}, DReG {snr['dreg']:.3g}")
        report["encoder_snr"] = per_k[str(ks[-1])]
        report["encoder_snr_per_k"] = per_k
        report["snr_draws"] = min(samples, SNR_DRAWS)
    return report


def summarize(estimates: dict[str, Estimates]) -> dict[str, dict[str, Any]]:
    """Per estimator: each dimension's mean and per-draw std of the gradient, its total
    variance against reparam's, and the time per draw."""
    reference = total_variance(estimates["reparam"])
    summary = {}
    for name in ESTIMATORS:
        estimate = estimates[name]
        summary[name] = {
            "mean_mu": estimate.mu.mean(0).tolist(),
            "std_mu": estimate.mu.std(0).tolist(),
            "mean_logvar": estimate.logvar.mean(0).tolist(),
            "std_logvar": estimate.logvar.std(0).tolist(),
            "variance_vs_reparam": total_variance(estimate) / reference,
            "seconds_per_sample": estimate.seconds / len(estimate.mu),
        }
    return summary


def total_variance(estimate: Estimates) -> float:
    """The summed variance over every dimension of mu and logvar (the covariance's trace)."""
    return (estimate.mu.double().var(0).sum() + estimate.logvar.double().var(0).sum()).item()
