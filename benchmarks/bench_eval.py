"""Evaluation throughput: the test-set ELBO, and the importance-weighted NLL with K samples,
batched over samples, against a reference that loops over K in Python (measured in the same run).

Trains a one-epoch model first unless --checkpoint is given.

    python benchmarks/bench_eval.py [--data-dir ../shared/data] [--samples 1000] [--images 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import tempfile
import time
from pathlib import Path

import torch

from vae_cli.cli.app import main as vae
from vae_cli.commands.load import load_model
from vae_cli.data.dataset import load_dataset, to_float
from vae_cli.data.folders import resolve_data_dir
from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_log_density
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model.vae import VAE


@torch.no_grad()
def looped_iw_nll(model: VAE, x: torch.Tensor, samples: int) -> float:
    """The reference: one decoder pass per sample k, as a Python loop."""
    generator = torch.Generator().manual_seed(0)
    mu, logvar = model.encode(x)
    log_w = []
    for _ in range(samples):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
        log_w.append(
            bernoulli_log_likelihood(model.decode(z), x)
            + gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
            - gaussian_log_density(z, mu, logvar)
        )
    return -(torch.logsumexp(torch.stack(log_w), 0) - math.log(samples)).mean().item()


def timed(function, *args, **kwargs) -> tuple[object, float]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=1000, help="K of the IW estimate")
    parser.add_argument(
        "--images",
        type=int,
        default=1000,
        help="test images for the IW timing (10000 = the whole test set)",
    )
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    with tempfile.TemporaryDirectory() as runs:
        checkpoint = args.checkpoint
        if checkpoint is None:
            with contextlib.redirect_stdout(io.StringIO()):
                code = vae(
                    [
                        "train",
                        "--epochs",
                        "1",
                        "--quiet",
                        "--data-dir",
                        str(data_dir),
                        "--runs-dir",
                        runs,
                        "--name",
                        "bench",
                        "--device",
                        "cpu",
                    ]
                )
            assert code == 0, "training the benchmark model failed"
            checkpoint = Path(runs) / "bench"
        model = load_model(
            checkpoint / "checkpoints/best.pt" if checkpoint.is_dir() else checkpoint, "cpu"
        ).model
    x = to_float(load_dataset(data_dir).test_images)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    elbo, seconds = timed(evaluate_elbo, model, x)
    print(
        f"ELBO, {len(x):,} test images: {seconds:.2f} s, {len(x) / seconds:,.0f} images/s "
        f"(loss {elbo.loss:.2f})"
    )

    subset = x[: args.images]
    iw, seconds = timed(importance_weighted_nll, model, subset, args.samples)
    rate = len(subset) / seconds
    print(
        f"IW NLL, K={args.samples}, {len(subset):,} images: {seconds:.1f} s, "
        f"{rate:,.1f} images/s, {rate * args.samples:,.0f} decoded samples/s "
        f"(NLL {iw.nll:.2f} ± {iw.stderr:.2f}); whole test set ≈ {len(x) / rate / 60:.1f} min"
    )

    few = x[:50]
    batched_seconds = timed(importance_weighted_nll, model, few, args.samples)[1]
    looped_seconds = timed(looped_iw_nll, model, few, args.samples)[1]
    print(
        f"IW on 50 images: batched {batched_seconds:.2f} s, Python loop over K "
        f"{looped_seconds:.2f} s, ratio {looped_seconds / batched_seconds:.1f}x"
    )


if __name__ == "__main__":
    main()
