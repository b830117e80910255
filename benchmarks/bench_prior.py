"""What K pseudo-inputs cost per step: the VampPrior's training step against the normal prior's.

The model of configs/quality2.toml (two stochastic layers, 784-200-200-100-100-100-50 tanh,
batch 100, dynamic binarization), trained by its two phases' objectives: the ELBO with free
bits (and without), and IWAE k=5 with DReG. Each round times every prior in turn (the normal
prior, then the VampPrior at each K) with the trainer's own step; medians over rounds and each
one's ratio to the normal prior's median, measured in the same run (a shared host drifts
between runs, not within a round).

    python benchmarks/bench_prior.py [--ks 50 100 200 500] [--rounds 5] [--steps 40]
                                     [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vae_cli.config.settings import Config
from vae_cli.config.toml import load_config
from vae_cli.training.graphs import build_step
from vae_cli.training.loop import build_model
from vae_cli.training.stack import Stack
from vae_cli.training.streams import make_generators

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quality2.toml"
WARMUP = 5


def ms_per_step(config: Config, images: torch.Tensor, steps: int, device: torch.device) -> float:
    """The trainer's step on random uint8 images (the step's cost does not depend on them);
    on a GPU the captured step, as `vae train` runs it. Reading the statistics waits for the
    device, so the clock sees finished steps."""
    step = build_step(Stack([build_model(config, device)]), [config], [make_generators(0, device)])
    batch = config.train.batch_size
    for i in range(WARMUP + steps):
        if i == WARMUP:
            step.stack.stats.read()
            started = time.perf_counter()
        rows = images[(i * batch) % (len(images) - batch) :][:batch]
        step(rows.unsqueeze(0), [config.train.lr], [1.0])
    step.stack.stats.read()
    return 1000 * (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    recipe = load_config(RECIPE)
    objectives = {
        "ELBO": recipe.phase(0).replace({"free_bits": 0.0}),
        "ELBO, free bits 0.05": recipe.phase(0),
        "IWAE k=5, DReG": recipe.phase(1),
    }
    priors = {"normal": {"prior": "normal"}}
    priors |= {f"vamp K={k}": {"prior": "vamp", "pseudo_inputs": k} for k in args.ks}
    images = torch.randint(0, 256, (5000, 784), generator=torch.Generator().manual_seed(0))
    images = images.to(torch.uint8).to(device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {where}, {threads} threads, {args.rounds} rounds")
    for objective, phase in objectives.items():
        times: dict[str, list[float]] = {name: [] for name in priors}
        for _ in range(args.rounds):
            for name, values in priors.items():
                config = phase.replace({**values, "device": args.device})
                times[name].append(ms_per_step(config, images, args.steps, device))
        reference = statistics.median(times["normal"])
        print(f"\n{objective}: ms per step (median, min-max), ratio to the normal prior")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:<13} {median:7.2f}  ({min(values):.2f}-{max(values):.2f})"
                  f"  {median / reference:5.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
