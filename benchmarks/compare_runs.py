"""Compare two run folders bit for bit: every metrics.jsonl value both have (timings aside) and
every tensor of their checkpoints (weights, Adam moments and steps). What a change that must
move no number is checked with: the same command run on the code before and after it.

    python benchmarks/compare_runs.py RUNS_BEFORE/NAME RUNS_AFTER/NAME [more pairs ...]

A population folder is compared member by member. Exit code 1 when anything differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

TIMING = {"seconds", "images_per_s", "epoch_seconds", "capture_seconds", "compile_seconds"}


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def tensors(value: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint, by its path of keys."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            found |= tensors(item, f"{prefix}/{key}")
        return found
    return {}


def compare_run(before: Path, after: Path) -> list[str]:
    """What differs between two runs of the same command (empty: bit-identical)."""
    problems = []
    old, new = metrics(before), metrics(after)
    if len(old) != len(new):
        problems.append(f"{len(old)} against {len(new)} epochs")
    for epoch, (a, b) in enumerate(zip(old, new, strict=False), start=1):
        for key in sorted(a.keys() & b.keys()):
            if a[key] != b[key]:
                problems.append(f"epoch {epoch} {key}: {a[key]!r} against {b[key]!r}")
    for name in ("last.pt", "best.pt"):
        first, second = (
            torch.load(run / "checkpoints" / name, weights_only=True) for run in (before, after)
        )
        a, b = tensors(first["model"]), tensors(second["model"])
        a |= {f"optimizer{k}": v for k, v in tensors(first["optimizer"]).items()}
        b |= {f"optimizer{k}": v for k, v in tensors(second["optimizer"]).items()}
        if a.keys() != b.keys():
            problems.append(f"{name}: tensors {sorted(a.keys() ^ b.keys())[:4]} in one only")
        for key in sorted(a.keys() & b.keys()):
            if not torch.equal(a[key], b[key]):
                problems.append(f"{name} {key} differs")
    return problems


def runs_of(folder: Path) -> list[Path]:
    """The run folder, or a population's members."""
    if (folder / "population.json").is_file():
        return sorted(p for p in folder.iterdir() if (p / "metrics.jsonl").is_file())
    return [folder]


def main(pairs: list[str]) -> int:
    if not pairs or len(pairs) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    differing = 0
    for before, after in zip(pairs[::2], pairs[1::2], strict=True):
        for a, b in zip(runs_of(Path(before)), runs_of(Path(after)), strict=True):
            problems = compare_run(a, b)
            epochs = len(metrics(a))
            verdict = "bit-identical" if not problems else f"{len(problems)} differences"
            print(f"{b.relative_to(Path(after).parent)}: {epochs} epochs, {verdict}")
            for problem in problems[:5]:
                print(f"    {problem}")
            differing += bool(problems)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
