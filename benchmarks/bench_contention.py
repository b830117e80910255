"""A run's images/s alone and beside a competing process on the same cores, under each OpenMP
wait policy: why `vae` sets OMP_WAIT_POLICY=PASSIVE (cli/app.py).

Each case trains the default model for 2 epochs on --limit images and reads epoch 2's rate
(the steps alone). The competitor is a second `vae train` of the same size (the load two
sweeps' workers or two users put on one machine), started first and killed after. Rates are
reported with their ratio to the idle run under the same policy, measured in the same
invocation (this host's speed drifts within the hour).

    VAE_DATA_DIR=../shared/data python benchmarks/bench_contention.py [--limit 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICIES = {  # what the run's environment says
    "active (OpenMP's default)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive (vae's default)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one thread": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}


def train_command(runs: Path, name: str, limit: int, epochs: int) -> list[str]:
    return [
        sys.executable, "-m", "vae_cli", "train", "--limit", str(limit), "--epochs", str(epochs),
        "--device", "cpu", "--quiet", "--runs-dir", str(runs), "--name", name,
    ]  # fmt: skip


def rate(runs: Path, name: str, limit: int, environment: dict[str, str]) -> float:
    """Images/s of epoch 2 of a default run under `environment`."""
    env = {**os.environ, **environment}
    subprocess.run(train_command(runs, name, limit, 2), check=True, capture_output=True, env=env)
    lines = (runs / name / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[1])["images_per_s"]


def competing(runs: Path, environment: dict[str, str]) -> subprocess.Popen:
    """A second training process on the same cores, long enough to outlast a measured run."""
    env = {**os.environ, **environment}
    command = train_command(runs, "competitor", 60_000, 1000)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(8)  # past its start-up: training when the measured run starts
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; default model, batch 128, epoch 2 of {args.limit:,} images")
    print("| policy (run and competitor) | alone, img/s | beside a second run, img/s | ratio |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        for number, (policy, environment) in enumerate(POLICIES.items()):
            alone = rate(runs, f"alone-{number}", args.limit, environment)
            other = competing(runs, environment)
            try:
                loaded = rate(runs, f"loaded-{number}", args.limit, environment)
            finally:
                other.kill()
                other.wait()
                subprocess.run(["rm", "-rf", str(runs / "competitor")], check=False)
            print(f"| {policy} | {alone:,.0f} | {loaded:,.0f} | {loaded / alone:.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
