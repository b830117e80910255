"""Populations: aggregate training images/s of N stacked members against N runs trained one
after another with the single-run step, and whole `vae train --seeds` runs against separate
ones, measured in the same run.

(1) For each N, rounds alternate the single-run step and the N-member stacked step (the same
    step code, the same threads, batch 128, the uint8 gather included); medians. N runs one
    after another train at the single step's rate, so the ratio is stacked / single.
(2) With --whole-runs E: the wall time of `vae train --seeds 0-(K-1) --epochs E` against K
    separate `vae train --seed S --epochs E`, start-up included, one after another.

    VAE_DATA_DIR=../shared/data python benchmarks/bench_population.py [--members 1,2,4,8,16]
    VAE_DATA_DIR=../shared/data python benchmarks/bench_population.py --whole-runs 10 --seeds 8
    python benchmarks/bench_population.py --device cuda --members 1,2,4,8,16,32,64 --steps 500
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vae_cli.config.settings import Config
from vae_cli.data.dataset import load_dataset
from vae_cli.data.folders import resolve_data_dir
from vae_cli.training.graphs import build_step
from vae_cli.training.loop import build_model
from vae_cli.training.stack import Stack
from vae_cli.training.step import synchronize
from vae_cli.training.streams import make_generators

BATCH = 128


def images_per_s(
    images: torch.Tensor, members: int, steps: int, device: torch.device, warmup: int = 10
) -> float:
    """Aggregate images/s of one stacked step of `members` members (each its own batch)."""
    config = Config().replace({"cuda_graph": device.type == "cuda"})
    configs = [config.replace({"seed": seed}) for seed in range(members)]
    population = Stack([build_model(c, device) for c in configs])
    generators = [make_generators(c.train.seed, device) for c in configs]
    step = build_step(population, configs, generators)
    images = images.to(device)
    orders = torch.stack(
        [
            torch.randperm(len(images), generator=torch.Generator().manual_seed(s))
            for s in range(members)
        ]
    ).to(device)
    lrs, betas = [config.train.lr] * members, [1.0] * members
    started = None
    for i in range(warmup + steps):
        if i == warmup:
            population.stats.read()  # drain the warm-up (and capture)
            started = time.perf_counter()
        start = (i * BATCH) % (len(images) - BATCH)
        rows = orders[:, start : start + BATCH].reshape(-1)
        step(images.index_select(0, rows).view(members, BATCH, -1), lrs, betas)
    population.stats.read()
    synchronize(device)
    return members * BATCH * steps / (time.perf_counter() - started)


def adam_options(members: int, size: int, device: torch.device, repeats: int = 20) -> None:
    """Per-member learning rates: one fused Adam kernel per member row (what the step does)
    against one pass of plain tensor ops over the whole (M, P) buffer with per-row rates."""
    from vae_cli.training.adam import AdamState, MemberAdam

    params = torch.randn(members, size, device=device)
    grads = torch.randn(members, size, device=device)
    lr = torch.full((members,), 1e-3, dtype=torch.float64 if device.type == "cpu" else None)
    fused = MemberAdam(params, grads, AdamState.zeros_like(params), lr=lr.to(device),
                       beta2=[0.99] * members)  # fmt: skip
    skip = torch.zeros(members, device=device)
    exp_avg, exp_avg_sq = torch.zeros_like(params), torch.zeros_like(params)
    rates, beta2 = torch.full((members, 1), 1e-3, device=device), 0.99

    def vectorised(step: int) -> None:
        exp_avg.lerp_(grads, 0.1)
        exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(1e-8)
        params.sub_(rates / (1 - 0.9**step) * exp_avg / denom)

    for name, work in (
        ("fused per member", lambda i: fused.step(skip)),
        ("vectorised", vectorised),
    ):
        work(1)
        synchronize(device)
        started = time.perf_counter()
        for i in range(repeats):
            work(i + 2)
        synchronize(device)
        print(f"Adam over {members} x {size:,}: {name:>16} "
              f"{(time.perf_counter() - started) / repeats * 1e3:.2f} ms")  # fmt: skip


def whole_runs(data_dir: Path, seeds: int, epochs: int, device: str) -> tuple[float, float]:
    """Wall seconds of one `vae train --seeds` and of the same runs one after another."""

    def timed(arguments: list[str], runs: str) -> float:
        command = [sys.executable, "-m", "vae_cli", "train", "--epochs", str(epochs), "--quiet"]
        command += ["--device", device, "--data-dir", str(data_dir), "--runs-dir", runs]
        started = time.perf_counter()
        subprocess.run(command + arguments, check=True, capture_output=True)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as runs:
        together = timed(["--seeds", f"0-{seeds - 1}", "--name", "population"], runs)
        apart = sum(timed(["--seed", str(s), "--name", f"seed{s}"], runs) for s in range(seeds))
    return together, apart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--members", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--whole-runs", type=int, default=0, help="epochs; 0 skips")
    parser.add_argument("--seeds", type=int, default=8)
    options = parser.parse_args()
    data_dir = resolve_data_dir(options.data_dir)
    images = load_dataset(data_dir).train_images
    device = torch.device(options.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads, batch {BATCH}")
    counts = [int(n) for n in options.members.split(",")]
    single: list[float] = []
    stacked: dict[int, list[float]] = {n: [] for n in counts}
    for round_ in range(options.rounds):
        single.append(images_per_s(images, 1, options.steps, device))
        for n in counts:
            # Fewer steps for large stacks keep a round's length about even.
            stacked[n].append(images_per_s(images, n, max(5, options.steps // n), device))
        print(f"round {round_ + 1}: single {single[-1]:,.0f} img/s, " + ", ".join(
            f"N={n} {stacked[n][-1]:,.0f}" for n in counts), flush=True)  # fmt: skip
    reference = statistics.median(single)
    print(f"\nsingle-run step (N runs one after another): {reference:,.0f} images/s")
    for n in counts:
        rate = statistics.median(stacked[n])
        print(f"N={n:>3} stacked: {rate:>12,.0f} images/s aggregate, {rate / reference:5.2f}x")
    size = sum(p.numel() for p in build_model(Config(), device).parameters())
    for members in (1, max(counts)):
        adam_options(members, size, device)
    if options.whole_runs:
        together, apart = whole_runs(data_dir, options.seeds, options.whole_runs, options.device)
        print(
            f"\nvae train --seeds 0-{options.seeds - 1} --epochs {options.whole_runs}: "
            f"{together:.1f} s; {options.seeds} separate runs: {apart:.1f} s; "
            f"ratio {together / apart:.2f} (target <= 0.5)"
        )


if __name__ == "__main__":
    main()
