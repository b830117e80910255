"""Out-of-distribution detection with `vae score`: how well a model trained on MNIST tells
Fashion-MNIST-like images from MNIST's test images by -log p(x) alone (Nalisnick et al. 2019
measured the pair). Prints the ROC-AUC (1: every garment scores higher than every digit; 0.5:
chance) with each set's median score.

The garments are Fashion-MNIST's own test images when their files are in the data folder
(FashionMNIST/raw/), else synthesised: filled silhouettes (shirts, trousers, bags, shoes) with
a woven texture, white on black in 28x28 as Fashion-MNIST's are.

    VAE_DATA_DIR=../shared/data python benchmarks/ood_auc.py --checkpoint runs/NAME [--n 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from vae_cli.cli.app import main as vae


def garments(n: int, seed: int = 0) -> np.ndarray:
    """n filled garment-like silhouettes (n, 28, 28) uint8: a shirt (body and sleeves),
    trousers (two legs), a bag (a box with a handle) or a shoe (a wedge), textured."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28]
    images = np.zeros((n, 28, 28), dtype=np.float32)
    for index in range(n):
        kind, shade = index % 4, rng.uniform(0.35, 1.0)
        width, top, bottom = rng.integers(12, 20), rng.integers(2, 6), rng.integers(22, 27)
        left = 14 - width // 2
        body = (x >= left) & (x < left + width) & (y >= top) & (y < bottom)
        if kind == 0:  # a shirt: the body and two sleeves
            sleeves = (y >= top) & (y < top + 9) & (x >= left - 4) & (x < left + width + 4)
            shape = body | sleeves
        elif kind == 1:  # trousers: two legs under a waist
            gap = (x >= 13) & (x < 15) & (y > top + 6)
            shape = body & ~gap
        elif kind == 2:  # a bag: a box and its handle
            handle = ((x - 14) ** 2 + (y - top - 4) ** 2 < 36) & (
                (x - 14) ** 2 + (y - top - 4) ** 2 > 12
            )
            shape = (body & (y > top + 5)) | (handle & (y <= top + 5))
        else:  # a shoe: a wedge rising to the heel
            shape = (y >= 14) & (y < 24) & (x >= 3) & (x < 25) & (y >= 24 - (x - 3) // 2)
        texture = 0.8 + 0.2 * np.sin(x * rng.uniform(0.5, 2.0)) * np.cos(y * rng.uniform(0.5, 2))
        images[index] = shape * shade * texture
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def fashion_test_images(data_dir: Path | None, n: int) -> tuple[np.ndarray, str]:
    """Fashion-MNIST's test images when its files are there, else synthesised garments."""
    raw = (data_dir or Path()) / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    if data_dir is not None and raw.is_file():
        data = raw.read_bytes()
        images = np.frombuffer(data[16:], dtype=np.uint8).reshape(-1, 28, 28)
        return images[:n].copy(), "Fashion-MNIST's test images"
    return garments(n), "synthesised garments (Fashion-MNIST is not in the data folder)"


def scores(args: list[str]) -> list[float]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = vae(["score", *args, "--json"])
    if code != 0:
        raise SystemExit(f"vae score failed (exit {code})")
    return [row["nll"] for row in json.loads(out.getvalue())["images"]]


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--iw-samples", type=int, default=100)
    args = parser.parse_args()
    common = ["--checkpoint", str(args.checkpoint), "--iw-samples", str(args.iw_samples)]
    if args.data_dir is not None:
        common += ["--data-dir", str(args.data_dir)]
    images, source = fashion_test_images(args.data_dir, args.n)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "garments.npy"
        np.save(path, images, allow_pickle=False)
        picture = ["--out", str(Path(folder) / "score.png")]
        ood = scores([*common, "--images", str(path), "--fit", "resize", "--invert", "no",
                      *picture])  # fmt: skip
        digits = scores([*common, "--limit", str(args.n), *picture])
    print(f"{len(ood)} {source} against the first {len(digits)} MNIST test images, "
          f"K={args.iw_samples}")  # fmt: skip
    print(f"median -log p(x): garments {np.median(ood):.1f}, digits {np.median(digits):.1f} nats")
    print(f"ROC-AUC (garments score higher): {roc_auc(ood, digits):.3f}")


if __name__ == "__main__":
    main()
