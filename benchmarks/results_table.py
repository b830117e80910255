"""Markdown rows for the results table, produced by the tool itself from finished runs.

For each run folder: its model and objective (from config.toml), binarization, epochs and
training time (from metrics.jsonl), and `vae eval --json [--iw-samples K]` on its best.pt.

    python benchmarks/results_table.py runs/default runs/quality --iw-samples 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import tomllib
from pathlib import Path

from vae_cli.cli.app import main as vae
from vae_cli.config.settings import describe_model
from vae_cli.config.toml import from_dict
from vae_cli.runs.best import phases


def load_config_dict(config: dict):
    """A run's config.toml table as its settings (old keys folded into the lists)."""
    return from_dict({k: v for k, v in config.items() if k != "manifest"}, "config.toml")


def describe(config: dict, metrics: list[dict]) -> str:
    """Architecture, then the objective of each phase, e.g. "ELBO ×520, then IWAE k=10 ×60"."""
    model = load_config_dict(config).model
    width = "784-" + "-".join(f"{h}-{h}-{z}" for z, h in model.layer_sizes())
    runs = [
        (name.replace("iwae-", "IWAE k=").replace("elbo", "ELBO"), len(epochs))
        for name, epochs in phases(metrics)
    ]
    if len(runs) == 1:
        objective = runs[0][0]
    else:
        objective = ", then ".join(f"{name} ×{count}" for name, count in runs)
    dreg = any(t.get("dreg") for t in [config["train"], *config.get("phases", [])])
    shape = describe_model(model)
    return f"{model.arch} {width} {model.activation} ({shape}), {objective}" + (
        " (DReG)" if dreg else ""
    )


def evaluate(run: Path, data_dir: Path | None, iw_samples: int | None) -> tuple[dict, float]:
    args = ["eval", "--checkpoint", str(run), "--json", "--device", "cpu"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    if iw_samples:
        args += ["--iw-samples", str(iw_samples)]
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = vae(args)
    if code != 0:
        raise SystemExit(f"vae eval failed on {run} (exit {code})")
    return json.loads(out.getvalue()), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--iw-samples", type=int, default=None)
    args = parser.parse_args()
    print(
        "| run | model | pixels | checkpoint | epochs | training time | test −ELBO | IW-NLL | "
        "active units | eval time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in args.runs:
        config = tomllib.loads((run / "config.toml").read_text())
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        minutes = sum(m["seconds"] for m in metrics) / 60
        report, seconds = evaluate(run, args.data_dir, args.iw_samples)
        iw = "–"
        if "iw" in report:
            iw = f"{report['iw']['nll']:.2f} ± {report['iw']['stderr']:.2f} (K={args.iw_samples})"
        model = describe(config, metrics)
        print(
            f"| {run.name} | {model} | {report['binarize']} | best.pt: {report['chosen']} | "
            f"{report['epoch']} of {len(metrics)} | {minutes:.1f} min | {report['loss']:.2f} | "
            f"{iw} | "
            f"{report['active_units']} / {len(report['kl_per_dim'])} | {seconds / 60:.1f} min |",
            flush=True,
        )


if __name__ == "__main__":
    main()
