"""The training step of two source trees in one process: blocks of steps alternate A, B, A,
B, … on the same batches, so both see the same machine at the same moments (this host's speed
drifts within minutes). Each tree's vae_cli is imported in turn under its own path; the steps
built from it keep its code. Per-step medians over the blocks, and their ratio.

    python benchmarks/ab_step_in_process.py --trees ../before . [--model two-layer]
        [--blocks 24] [--steps 50]

A change that must not slow the step (a refactoring) should read 1.00 within the blocks'
spread; the issue's bound is 1.02.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

MODELS = {  # the settings of each model, as both trees read them (older keys included)
    "default": {},
    "two-layer": {  # configs/quality2.toml's model and batch
        "stochastic_layers": 2, "latent_dim": 100, "hidden_dim": 200, "latent2_dim": 50,
        "hidden2_dim": 100, "activation": "tanh", "batch_size": 100, "binarize": "dynamic",
        "free_bits": 0.05, "grad_clip": 0.0,
    },
    "two-layer-dreg": {  # its IWAE phase
        "stochastic_layers": 2, "latent_dim": 100, "hidden_dim": 200, "latent2_dim": 50,
        "hidden2_dim": 100, "activation": "tanh", "batch_size": 100, "binarize": "dynamic",
        "objective": "iwae", "k": 5, "dreg": True, "grad_clip": 0.0,
    },
}  # fmt: skip


def step_of(tree: Path, settings: dict[str, Any]) -> Any:
    """A CPU training step built by the vae_cli of `tree` (imported fresh from it)."""
    for name in [m for m in sys.modules if m == "vae_cli" or m.startswith("vae_cli.")]:
        del sys.modules[name]
    sys.path.insert(0, str(tree.resolve()))
    try:
        config_module = importlib.import_module("vae_cli.config.settings")
        graphs = importlib.import_module("vae_cli.training.graphs")
        loop = importlib.import_module("vae_cli.training.loop")
        stack = importlib.import_module("vae_cli.training.stack")
        streams = importlib.import_module("vae_cli.training.streams")
    finally:
        sys.path.pop(0)
    config = config_module.Config().replace({**settings, "device": "cpu"})
    device = torch.device("cpu")
    stacked = stack.Stack([loop.build_model(config, device)])
    generators = [streams.make_generators(config.train.seed, device)]
    return graphs.build_step(stacked, [config], generators), config.train.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, type=Path, required=True, metavar=("A", "B"))
    parser.add_argument("--model", choices=MODELS, default="default")
    parser.add_argument("--blocks", type=int, default=24)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    from vae_cli.device import flush_denormals

    flush_denormals(torch.device("cpu"))
    steps = {tree: step_of(tree, MODELS[args.model]) for tree in args.trees}
    batch = next(iter(steps.values()))[1]
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(args.steps, 1, batch, 784, generator=generator) * 255).to(torch.uint8)
    times: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    for block in range(args.blocks + 1):  # the first block of each warms up, uncounted
        for tree, (step, _) in steps.items():
            started = time.perf_counter()
            for index in range(args.steps):
                step(images[index], [1e-3], [1.0])
            if block:
                times[tree].append(1000 * (time.perf_counter() - started) / args.steps)
    medians = {tree: statistics.median(values) for tree, values in times.items()}
    for tree, values in times.items():
        print(f"{tree}: median {medians[tree]:.3f} ms/step (min {min(values):.3f}, "
              f"max {max(values):.3f}, {len(values)} blocks of {args.steps})")  # fmt: skip
    first, second = args.trees
    print(f"{args.model}: ratio {second} / {first} of the medians "
          f"{medians[second] / medians[first]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
