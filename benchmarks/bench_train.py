"""Training throughput of vae-cli against the classic recipe, measured in the same run.

(a) reference: the same model and negative ELBO, written with torch's stock BCE, fed by
    torchvision's MNIST with ToTensor() through a DataLoader(batch_size=128, shuffle=True) and
    a stock Adam step, as in pytorch/examples;
(b) vae-cli: the trainer's own Step on a preloaded uint8 tensor.
Rounds alternate (a) and (b) and medians are reported, since 2 shared cores are noisy.
Also prints (b)'s achieved matmul GFLOP/s against the best matmul rate measured here (the
roofline), the rate of one step's matmuls alone at their real shapes (the step's ceiling), and
the peak RSS of a real `vae train` epoch above a bare `import torch`.
On the CPU, (b) is also measured with --compile, and at batch 4, whose step time is the cost
that does not scale with the batch. With --device cuda, (b) is measured eager and captured in a
CUDA graph, at batch 128 and at --large-batch, and captured with --amp and with --compile (the
ELBO's forward and backward compiled), each against (a) on the same GPU; the roofline is the
GPU's fp32 (bf16 for --amp) matmul rate. Last, the wall time of a whole
`vae train --epochs 10` on the device, from start to exit.

    python benchmarks/bench_train.py [--data-dir ../shared/data] [--rounds 5] [--steps 150]
    python benchmarks/bench_train.py --device cuda --rounds 3 --steps 2000 --skip-rss
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vae_cli.config.settings import Config
from vae_cli.data.dataset import load_dataset
from vae_cli.data.folders import resolve_data_dir
from vae_cli.model.densities import gaussian_kl
from vae_cli.model.reparameterize import reparameterize
from vae_cli.model.vae import VAE
from vae_cli.training.graphs import build_step
from vae_cli.training.loop import build_model
from vae_cli.training.stack import Stack
from vae_cli.training.step import synchronize
from vae_cli.training.streams import make_generators

# configs/quality3.toml's model (and batch): the skip-wired two-layer hierarchy with gated
# blocks and a VampPrior, what the two-hour recipe trains.
RECIPE_MODEL = {
    "latent_dims": (100, 50), "hidden_dims": (200, 100), "wiring": "skip", "block": "gated",
    "activation": "tanh", "prior": "vamp", "pseudo_inputs": 50, "output_bias": "data",
}  # fmt: skip
TINY_BATCH = 4
TINY = f"eager b{TINY_BATCH}"


def matmul_flops_per_image(model: VAE) -> float:
    """Forward + backward matmul FLOPs per image: backward costs twice the forward, less the
    input gradient of the first layer (images need none)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    forward = sum(2 * m.in_features * m.out_features for m in linears)
    # The layers that read the image (a gated block has two) need no input gradient.
    reading = [m for m in linears if m.in_features == 784]
    return 3 * forward - sum(2 * m.in_features * m.out_features for m in reading)


def best_matmul_gflops(
    device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 20
) -> float:
    """The roofline: the best rate of square matmuls of `dtype` on this device, now."""
    sizes = (512, 1024, 2048) if device.type == "cpu" else (2048, 4096, 8192)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        count = max(1, repeats * sizes[0] // n)
        for _ in range(3):
            synchronize(device)
            started = time.perf_counter()
            for _ in range(count):
                a @ b
            synchronize(device)
            elapsed = time.perf_counter() - started
            best = max(best, 2 * n**3 * count / elapsed / 1e9)
    return best


def step_matmuls_gflops(device: torch.device, batch_size: int = 128, repeats: int = 50) -> float:
    """The rate of one training step's matmuls alone (forward, weight and input gradients of
    every Linear, at their real shapes): the ceiling for the whole step's rate."""
    linears = [m for m in VAE(Config().model).modules() if isinstance(m, nn.Linear)]
    products = []
    for index, layer in enumerate(linears):
        n_in, n_out = layer.in_features, layer.out_features
        shapes = [(batch_size, n_in, n_out), (n_out, batch_size, n_in)]  # forward, weight grad
        if index > 0:  # images need no gradient
            shapes.append((batch_size, n_out, n_in))
        for m, k, n in shapes:
            a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
            products.append((a, b, torch.empty(m, n, device=device), 2 * m * k * n))
    best = 0.0
    for _ in range(5):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            for a, b, out, _ in products:
                torch.mm(a, b, out=out)
        synchronize(device)
        flops = repeats * sum(p[3] for p in products)
        best = max(best, flops / (time.perf_counter() - started) / 1e9)
    return best


def reference_images_per_s(
    data_dir: Path, steps: int, device: torch.device, warmup: int = 20
) -> float:
    """The classic recipe: ToTensor per image, DataLoader batches, stock Adam."""
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(str(data_dir), train=True, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True)
    model = VAE(Config().model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, started = 0, None
    for i, (x, _) in enumerate(loader):
        if i == warmup:
            synchronize(device)
            seen, started = 0, time.perf_counter()
        if i == warmup + steps:
            break
        x = x.view(-1, 784).to(device)
        mu, logvar = model.encode(x)
        z = reparameterize(mu, logvar)
        # The stock loss, as pytorch/examples writes it (vae-cli's own is faster on the CPU).
        recon = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="none").sum(-1)
        loss = recon.mean() + gaussian_kl(mu, logvar).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(x)
    synchronize(device)
    return seen / (time.perf_counter() - started)


def vae_cli_images_per_s(
    images: torch.Tensor,
    steps: int,
    device: torch.device,
    *,
    batch_size: int = 128,
    amp: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    model: dict | None = None,
    warmup: int = 20,
) -> float:
    """vae-cli's own step, as the trainer runs it (the uint8 gather, clipping, guard and
    statistics included); warm-up (and so compilation and graph capture) is not timed.
    `model`: settings of another model than the default (e.g. the recipe's hierarchy)."""
    config = Config().replace(
        {"amp": amp, "compile": compile, "cuda_graph": cuda_graph, "batch_size": batch_size}
        | (model or {})
    )
    train_step = build_step(
        Stack([build_model(config, device)]), [config], [make_generators(0, device)]
    )
    stats = train_step.stack.stats
    images = images.to(device)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).to(device)
    started = None
    for i in range(warmup + steps):
        if i == warmup:
            stats.read()  # drain the warm-up steps
            started = time.perf_counter()
        start = (i * batch_size) % (len(images) - batch_size)
        batch = images.index_select(0, order[start : start + batch_size])
        train_step(batch.unsqueeze(0), [config.train.lr], [1.0])
    stats.read()  # the one sync
    return steps * batch_size / (time.perf_counter() - started)


def operations_per_step(
    images: torch.Tensor, device: torch.device, *, cuda_graph: bool, steps: int = 5
) -> float:
    """CUDA kernels per step on a GPU (a captured step: the kernels of one replay), or aten
    operator calls per step on the CPU, counted with torch.profiler after warm-up."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    config = Config().replace({"cuda_graph": cuda_graph})
    train_step = build_step(
        Stack([build_model(config, device)]), [config], [make_generators(0, device)]
    )
    batch = images[:128].to(device).unsqueeze(0)
    for _ in range(10):  # warm-up and capture
        train_step(batch, [config.train.lr], [1.0])
    synchronize(device)
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as profiler:
        for _ in range(steps):
            train_step(batch, [config.train.lr], [1.0])
        synchronize(device)
    if device.type == "cuda":
        count = sum(1 for e in profiler.events() if e.device_type == DeviceType.CUDA)
    else:
        count = sum(1 for e in profiler.events() if e.name.startswith("aten::"))
    return count / steps


def train_command_seconds(data_dir: Path, device: str, epochs: int) -> float:
    """Wall time of a whole default `vae train` from start to exit, torch import included."""
    import tempfile

    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "vae_cli", "train", "--epochs", str(epochs)]
        command += ["--device", device, "--quiet", "--runs-dir", runs, "--data-dir", str(data_dir)]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started


def peak_rss_mb(data_dir: Path) -> tuple[float, float]:
    """Peak RSS (MB) of `import torch` alone and of one default `vae train` epoch."""

    def child_peak(command: list[str]) -> float:
        subprocess.run(command, check=True, capture_output=True)
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    import tempfile

    baseline = child_peak([sys.executable, "-c", "import torch"])
    with tempfile.TemporaryDirectory() as runs:
        one_epoch = ["--epochs", "1", "--quiet", "--device", "cpu", "--runs-dir", runs]
        training = child_peak(
            [sys.executable, "-m", "vae_cli", "train", *one_epoch, "--data-dir", str(data_dir)]
        )
    return baseline, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--large-batch", type=int, default=1024)
    parser.add_argument("--train-epochs", type=int, default=10, help="0 skips the whole-run time")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--kernels", action="store_true", help="count kernels (ops) per step")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    images = load_dataset(data_dir).train_images
    device = torch.device(args.device)
    variants: dict[str, dict] = {"eager": {}}
    if device.type == "cuda":
        # The captured step at the default and a larger batch, and with bf16 autocast.
        variants |= {
            "graph": {"cuda_graph": True},
            f"eager b{args.large_batch}": {"batch_size": args.large_batch},
            f"graph b{args.large_batch}": {"batch_size": args.large_batch, "cuda_graph": True},
            "graph amp": {"cuda_graph": True, "amp": True},
            "graph compile": {"cuda_graph": True, "compile": True},
            "graph recipe": {"cuda_graph": True, "model": RECIPE_MODEL},
        }
    else:
        # The compiled ELBO, and a tiny batch: its step time is the part that does not scale
        # with the batch (Python, dispatch, autograd, the parameter-sized Adam and clipping).
        variants |= {
            "compile": {"compile": True},
            TINY: {"batch_size": TINY_BATCH},
            "recipe": {"model": RECIPE_MODEL},
        }

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    print(
        f"torch {torch.__version__}{cuda}, {where}, {torch.get_num_threads()} threads, "
        f"OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND', 'unset')}"
    )
    reference: list[float] = []
    ours: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        reference.append(reference_images_per_s(data_dir, args.steps, device))
        line = f"round {round_ + 1}: reference {reference[-1]:,.0f} img/s"
        for name, options in variants.items():
            ours[name].append(vae_cli_images_per_s(images, args.steps, device, **options))
            line += f", {name} {ours[name][-1]:,.0f}"
        print(line, flush=True)
    ref = statistics.median(reference)
    flops = matmul_flops_per_image(VAE(Config().model))
    rooflines = {"fp32": best_matmul_gflops(device)}
    if device.type == "cuda":
        rooflines["bf16"] = best_matmul_gflops(device, torch.bfloat16)
    print(f"\nmatmul FLOPs per image (fwd + bwd): {flops / 1e6:.2f} MFLOP")
    print(", ".join(f"{k} matmul roofline {v:,.0f} GFLOP/s" for k, v in rooflines.items()))
    ceiling = step_matmuls_gflops(device)
    print(
        f"one batch-128 step's matmuls alone: {ceiling:,.1f} GFLOP/s = "
        f"{ceiling / rooflines['fp32']:.1%} of the fp32 roofline (the step's ceiling)"
    )
    print(f"median reference (DataLoader + ToTensor, batch 128): {ref:,.0f} images/s")
    for name in variants:
        own = statistics.median(ours[name])
        if name == TINY:
            fixed_ms, full_ms = 1e3 * TINY_BATCH / own, 1e3 * 128 / statistics.median(ours["eager"])
            print(
                f"fixed cost of a step (batch {TINY_BATCH}): {fixed_ms:.2f} ms, "
                f"{fixed_ms / full_ms:.0%} of a batch-128 step's {full_ms:.2f} ms"
            )
            continue
        roofline = rooflines["bf16" if "amp" in name else "fp32"]
        model = variants[name].get("model")  # another model's matmuls per image
        per_image = (
            flops if model is None else matmul_flops_per_image(VAE(Config().replace(model).model))
        )
        achieved = own * per_image / 1e9
        print(
            f"median vae-cli {name:16} {own:>12,.0f} images/s, ratio {own / ref:6.2f}x, "
            f"{achieved:,.1f} GFLOP/s = {achieved / roofline:.1%} of the matmul roofline"
        )
    if args.kernels:
        captured = device.type == "cuda"
        what = "CUDA kernels per captured step" if captured else "aten operator calls per step"
        print(f"{what}: {operations_per_step(images, device, cuda_graph=captured):.0f}")
    if args.train_epochs:
        seconds = train_command_seconds(data_dir, args.device, args.train_epochs)
        print(
            f"vae train --device {args.device} --epochs {args.train_epochs}: "
            f"{seconds:.1f} s wall, start to exit"
        )
    if not args.skip_rss:
        baseline, training = peak_rss_mb(data_dir)
        print(
            f"peak RSS: import torch {baseline:.0f} MB, vae train (1 epoch, defaults) "
            f"{training:.0f} MB, difference {training - baseline:.0f} MB (target <= 500 MB)"
        )


if __name__ == "__main__":
    main()
