"""Start-up of each command against `python -c "import torch"`, measured in the same run.

Every command runs in a fresh interpreter, as a user starts it; rounds alternate the commands
and the medians are printed with their margin over `import torch`. For `vae train` the figure
is the time from start to the first training step (the step is wrapped to note the moment).

    VAE_DATA_DIR=../shared/data python benchmarks/bench_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Targets (README, "Start-up"): seconds over `import torch`; None: no torch import at all.
TARGETS = {"sample": 0.7, "reconstruct": 0.7, "export": 0.7, "train: first step": 1.0}
FIRST_STEP = """
import os, sys, time
from vae_cli.training import step
real = step.Step.__call__
def first(self, *args, **kwargs):
    if not os.path.exists(os.environ["FIRST_STEP_FILE"]):
        with open(os.environ["FIRST_STEP_FILE"], "w") as handle:
            handle.write(repr(time.time()))
    return real(self, *args, **kwargs)
step.Step.__call__ = first
from vae_cli.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.time()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.time() - started


def time_to_first_step(args: list[str], env: dict[str, str], folder: Path) -> float:
    marker = folder / "first-step"
    marker.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(
        [sys.executable, "-c", FIRST_STEP, *args],
        check=True,
        capture_output=True,
        env={**env, "FIRST_STEP_FILE": str(marker)},
    )
    return float(marker.read_text()) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    env = dict(os.environ)
    vae = [sys.executable, "-m", "vae_cli"]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        runs = folder / "runs"
        tiny = ["--limit", "256", "--epochs", "1", "--quiet", "--runs-dir", str(runs)]
        subprocess.run([*vae, "train", *tiny, "--name", "tiny"], check=True, capture_output=True)
        run = ["--checkpoint", str(runs / "tiny")]
        commands = {
            "import torch": lambda: timed([sys.executable, "-c", "import torch"], env),
            "vae --help": lambda: timed([*vae, "--help"], env),
            "vae train --help": lambda: timed([*vae, "train", "--help"], env),
            "runs": lambda: timed([*vae, "runs", "--runs-dir", str(runs)], env),
            "sample": lambda: timed([*vae, "sample", *run, "--out", f"{folder}/s.png"], env),
            "reconstruct": lambda: timed(
                [*vae, "reconstruct", *run, "--out", f"{folder}/r.png"], env
            ),
            "export": lambda: timed(
                [*vae, "export", *run, "--out", f"{folder}/m.safetensors"], env
            ),
            "train: first step": lambda: time_to_first_step(
                ["train", *tiny, "--name", "again", "--overwrite"], env, folder
            ),
        }
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.rounds):
            for name, measure in commands.items():
                seconds[name].append(measure())
    torch_import = statistics.median(seconds["import torch"])
    print(f"{'command':<22} {'median s':>9} {'over import torch':>18}  target")
    for name, values in seconds.items():
        median = statistics.median(values)
        verdict = ""
        if (target := TARGETS.get(name)) is not None:
            met = "met" if median - torch_import <= target else "MISSED"
            verdict = f"<= +{target:.1f} s: {met}"
        print(f"{name:<22} {median:>9.2f} {median - torch_import:>+17.2f}s  {verdict}")


if __name__ == "__main__":
    main()
