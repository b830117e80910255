"""The training step of two source trees, interleaved: A, B, A, B, … in fresh processes.

Each round trains a default model for 2 epochs through the CLI of one tree and reads the
clock's training seconds of epoch 2 (the steps alone: no test pass, pictures or checkpoints;
epoch 1 warms the caches up). Medians and fastest rounds per tree, and their ratios (on a
shared host the fastest rounds are the least disturbed); a change that must not slow the step
(a refactoring) should read 1.00 within the rounds' spread.

    VAE_DATA_DIR=../shared/data python benchmarks/ab_step.py --trees ../before . [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BATCH = 128


def epoch_two_ms_per_step(tree: Path, limit: int, runs: Path, name: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    command = [
        sys.executable, "-m", "vae_cli", "train", "--limit", str(limit), "--epochs", "2",
        "--batch-size", str(BATCH), "--device", "cpu", "--quiet", "--runs-dir", str(runs),
        "--name", name,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=tree)
    lines = (runs / name / "metrics.jsonl").read_text().splitlines()
    second = json.loads(lines[1])
    steps = -(-limit // BATCH)
    return 1000 * second["seconds"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, type=Path, required=True, metavar=("A", "B"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--limit", type=int, default=20_000)
    args = parser.parse_args()
    times: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for tree in args.trees:
                name = f"{tree.resolve().name}-{round_}"
                times[tree].append(epoch_two_ms_per_step(tree, args.limit, Path(folder), name))
            print(f"round {round_ + 1}: " + "  ".join(
                f"{tree}: {times[tree][-1]:.3f} ms" for tree in args.trees
            ), flush=True)  # fmt: skip
    medians = {tree: statistics.median(values) for tree, values in times.items()}
    for tree, values in times.items():
        print(f"{tree}: median {medians[tree]:.3f} ms/step (min {min(values):.3f}, "
              f"max {max(values):.3f}, {len(values)} rounds)")  # fmt: skip
    first, second = args.trees
    fastest = {tree: min(values) for tree, values in times.items()}
    print(f"ratio {second} / {first}: medians {medians[second] / medians[first]:.3f}, "
          f"fastest rounds {fastest[second] / fastest[first]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
