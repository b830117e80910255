"""A run's images/s alone and beside a competing process on the same cores, under each OpenMP
wait policy: why `vae` lets torch's threads spin when the machine is its own and sleep at once
beside another process (vae_cli/openmp.py).

Each case trains a model for 2 epochs on --limit images and reads epoch 2's rate (the steps
alone): the default model, or the two-hour recipe's (`--model recipe`: a skip-wired two-layer
hierarchy with gated blocks and a VampPrior, about four times the operator calls per step).
The competitor is a second `vae train` of the same model (the load two sweeps' workers or two
users put on one machine), started first and killed after. Rounds go through every policy in
turn and the medians are printed, with each policy's ratio beside a competitor to alone, and
alone to passive waiting alone: all measured in the same invocation (this host's speed drifts
within the hour).

    VAE_DATA_DIR=../shared/data python benchmarks/bench_contention.py [--model recipe] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vae_cli.openmp import USER_VARIABLES

POLICIES = {  # the run's environment (libgomp reads GOMP_SPINCOUNT over OMP_WAIT_POLICY)
    "vae's choice (by what runs at its start)": {},
    "active (spin until work comes)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive (sleep at once; vae beside another)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 300,000 (libgomp's default; vae alone)": {"GOMP_SPINCOUNT": "300000"},
    "spin 30,000": {"GOMP_SPINCOUNT": "30000"},
    "spin 3,000": {"GOMP_SPINCOUNT": "3000"},
    "one thread": {"OMP_NUM_THREADS": "1"},
}
PASSIVE = "passive (sleep at once; vae beside another)"

# The recipe's phase 1 as shipped (its model, pixels and batch), without the IWAE phase, so that
# --epochs applies.
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quality3.toml"


def recipe_phase_one() -> str:
    return RECIPE.read_text().split("\n[[phases]]")[0]


def train_command(runs: Path, name: str, limit: int, epochs: int, config: Path | None) -> list:
    command = [
        sys.executable, "-m", "vae_cli", "train", "--limit", str(limit), "--epochs", str(epochs),
        "--device", "cpu", "--quiet", "--runs-dir", str(runs), "--name", name,
    ]  # fmt: skip
    return command + (["--config", str(config)] if config else [])


def environment_for(policy: dict[str, str]) -> dict[str, str]:
    """os.environ with the policy's variables and none of the others it could inherit."""
    env = {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}
    return {**env, **policy}


def rate(runs: Path, name: str, limit: int, policy: dict, config: Path | None) -> float:
    """Images/s of epoch 2 of a run under `policy`."""
    command = train_command(runs, name, limit, 2, config)
    subprocess.run(command, check=True, capture_output=True, env=environment_for(policy))
    lines = (runs / name / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[1])["images_per_s"]


def competing(runs: Path, policy: dict[str, str], config: Path | None) -> subprocess.Popen:
    """A second training process on the same cores, long enough to outlast a measured run."""
    command = train_command(runs, "competitor", 60_000, 1000, config)
    process = subprocess.Popen(
        command, env=environment_for(policy), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(8)  # past its start-up: training when the measured run starts
    return process


def measure(runs: Path, case: str, limit: int, policy: dict, config: Path | None) -> tuple:
    """(alone, beside a competitor) images/s under one policy."""
    alone = rate(runs, f"alone-{case}", limit, policy, config)
    other = competing(runs, policy, config)
    try:
        loaded = rate(runs, f"loaded-{case}", limit, policy, config)
    finally:
        other.kill()
        other.wait()
        subprocess.run(["rm", "-rf", str(runs / "competitor")], check=False)
    return alone, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--model", choices=("default", "recipe"), default="default")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="policies whose names start so (default: all)")
    args = parser.parse_args()
    policies = {
        name: policy
        for name, policy in POLICIES.items()
        if not args.only or any(name.startswith(prefix) for prefix in args.only)
    }
    model = "the default model, batch 128" if args.model == "default" else "the recipe's model"
    print(f"{os.cpu_count()} cores; {model}; epoch 2 of {args.limit:,} images; "
          f"medians of {args.rounds} round(s)", flush=True)  # fmt: skip
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in policies}
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        config = None
        if args.model == "recipe":
            config = runs / "recipe.toml"
            config.write_text(recipe_phase_one())
        for round_number in range(args.rounds):
            for number, (name, policy) in enumerate(policies.items()):
                case = f"{round_number}-{number}"
                rates[name].append(measure(runs, case, args.limit, policy, config))
                print(f"  round {round_number + 1}, {name}: {rates[name][-1]}", flush=True)
    medians = {
        name: tuple(statistics.median(r[i] for r in pairs) for i in (0, 1))
        for name, pairs in rates.items()
    }
    passive_alone = medians[PASSIVE][0] if PASSIVE in medians else None
    print("| policy (run and competitor) | alone, img/s | against passive | "
          "beside a second run, img/s | beside / alone |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for name, (alone, loaded) in medians.items():
        against = f"{alone / passive_alone:.2f}x" if passive_alone else "–"
        print(f"| {name} | {alone:,.0f} | {against} | {loaded:,.0f} | "
              f"{loaded / alone:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
