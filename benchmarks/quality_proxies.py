"""Short proxies of the quality recipe at fixed compute: every proxy trains the same number of
epochs on the same data, then is scored the same way, so that a row differs from another in
its lever only (never in how fast the host happened to be).

Each proxy is `vae train` with the common flags and its own, holding out 10,000 training
images as the validation split, then `vae eval --split validation --iw-samples 1000` on the
first 2,000 of them, of its last epoch. Recipes are chosen on these numbers, so the test set
plays no part. One markdown row per proxy, printed (and appended to --out) as each finishes:
the command, the wall time, the validation -ELBO and IW-NLL, each layer's KL and active units.

A fine-tune proxy trains the ELBO for fewer epochs, then an importance-weighted phase whose
epochs times samples make up the rest, so that it costs the others' images x samples.

    VAE_DATA_DIR=../shared/data python benchmarks/quality_proxies.py --runs-dir /tmp/p \\
        [--epochs 30] [--only chain,skip] [--out rows.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import time
from pathlib import Path

from vae_cli.cli.app import main as vae

# What every proxy shares: configs/quality2.toml's sizes and optimiser, annealed to 1e-4 over
# the proxy, with free bits, dynamically binarized MNIST.
COMMON = (
    "--latent-dims 100,50 --hidden-dims 200,100 --activation tanh --batch-size 100 --lr 1e-3 "
    "--adam-beta2 0.999 --lr-schedule cosine --final-lr 1e-4 --free-bits 0.05 --grad-clip 0 "
    "--binarize dynamic --output-bias data --validation 10000 --quiet"
)
PROXIES = {
    "chain": "",
    "chain-zero-bias": "--output-bias zero",
    "skip": "--wiring skip",
    "ladder": "--wiring ladder",
    "chain-vamp": "--prior vamp --pseudo-inputs 50",
    "skip-vamp": "--wiring skip --prior vamp --pseudo-inputs 50",
    "skip-vamp-warmup": "--wiring skip --prior vamp --pseudo-inputs 50 --free-bits 0 "
    "--kl-warmup-epochs 10",
    "skip-gated": "--wiring skip --block gated",
    "skip-vamp-gated": "--wiring skip --block gated --prior vamp --pseudo-inputs 50",
    "skip-vamp-gated-warmup": "--wiring skip --block gated --prior vamp --pseudo-inputs 50 "
    "--free-bits 0 --kl-warmup-epochs 10",
    "ladder-3": "--wiring ladder --latent-dims 100,50,25 --hidden-dims 200,100,50",
    "chain-warmup": "--free-bits 0 --kl-warmup-epochs 10",
    "chain-ema": "--ema 0.999",
    "chain-final-lr-1e-5": "--final-lr 1e-5",
    "chain-iwae5": "",
    "chain-iwae10": "",
}
# Fine-tunes after the ELBO, each as (its samples k, its epochs): k x epochs of the proxy's
# budget go to the phase (an IWAE epoch reads each image k times), the rest to the ELBO.
FINE_TUNES = {"chain-iwae5": (5, 2), "chain-iwae10": (10, 1)}
EVAL_IMAGES, EVAL_SAMPLES = 2000, 1000


def run(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = vae(args)
    if code != 0:
        raise SystemExit(f"vae {' '.join(args[:2])} failed (exit {code})")
    return out.getvalue()


def fine_tune_config(name: str, epochs: int, runs: Path) -> list[str]:
    """`--config` of a fine-tune proxy: its ELBO epochs, then the IWAE phase with DReG."""
    k, tune_epochs = FINE_TUNES[name]
    path = runs / f"{name}.toml"
    runs.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[train]\nepochs = {epochs - k * tune_epochs}\n\n[[phases]]\nepochs = {tune_epochs}\n"
        f'objective = "iwae"\nk = {k}\ndreg = true\nfree_bits = 0.0\nlr = 1e-4\n'
        'lr_schedule = "constant"\n'
    )
    return ["--config", str(path)]


def epochs_of(name: str, epochs: int) -> str:
    """ "40", or "30 ELBO + 2 IWAE k=5" for a fine-tune."""
    if name not in FINE_TUNES:
        return str(epochs)
    k, tune_epochs = FINE_TUNES[name]
    return f"{epochs - k * tune_epochs} ELBO + {tune_epochs} IWAE k={k} (DReG)"


def proxy_row(name: str, flags: str, epochs: int, runs: Path) -> str:
    budget = (
        fine_tune_config(name, epochs, runs) if name in FINE_TUNES else ["--epochs", str(epochs)]
    )
    args = ["train", *shlex.split(COMMON), *shlex.split(flags), *budget,
            "--runs-dir", str(runs), "--name", name]  # fmt: skip
    started = time.perf_counter()
    run(args)
    minutes = (time.perf_counter() - started) / 60
    last = str(runs / name / "checkpoints" / "last.pt")
    limits = [
        "--split",
        "validation",
        "--limit",
        str(EVAL_IMAGES),
        "--iw-samples",
        str(EVAL_SAMPLES),
    ]
    report = json.loads(run(["eval", "--checkpoint", last, "--json", *limits]))
    metrics = [json.loads(line) for line in (runs / name / "metrics.jsonl").open()]
    rate = sum(m["images_per_s"] for m in metrics) / len(metrics)
    kl = " / ".join(f"{value:.1f}" for value in report["kl_per_layer"])
    units = " / ".join(str(value) for value in report["active_units_per_layer"])
    return (
        f"| {name} | `{flags or '(common)'}` | {epochs_of(name, epochs)} | "
        f"{minutes:.1f} min ({rate:,.0f} img/s) | "
        f"{report['loss']:.2f} | **{report['iw']['nll']:.2f} ± {report['iw']['stderr']:.2f}** | "
        f"{kl} | {units} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--only", default=",".join(PROXIES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    header = (
        f"common: `{COMMON}`; IW-NLL with K={EVAL_SAMPLES} on the first {EVAL_IMAGES:,} "
        "validation images, of the last epoch\n\n"
        "| proxy | its flags | epochs | wall | val −ELBO | val IW-NLL | KL per layer | "
        "active units per layer |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    print(header, flush=True)
    for name in args.only.split(","):
        row = proxy_row(name, PROXIES[name], args.epochs, args.runs_dir)
        print(row, flush=True)
        if args.out is not None:
            with args.out.open("a") as handle:
                handle.write(row + "\n")


if __name__ == "__main__":
    main()
