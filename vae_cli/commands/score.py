"""`vae score`: how unusual each image is to a model: its importance-weighted -log p(x), in
nats and bits/dim, its reconstruction error, and where it falls among the model's own
test-set scores (computed once per checkpoint and settings, cached in the run folder). The
out-of-distribution use of a VAE (Nalisnick et al. 2019)."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_cli.commands.load import Loaded, save_picture, test_images
from vae_cli.errors import UserError
from vae_cli.files import write_atomically
from vae_cli.model.densities import bernoulli_log_likelihood
from vae_cli.model.evaluate import nll_per_image
from vae_cli.model.layers import IMAGE_PIXELS
from vae_cli.pictures import grids

SHOWN = 8  # images per row of the picture: the most and the least typical


def checkpoint_digest(path: Path) -> str:
    """What the cache of test-set scores is keyed by: the checkpoint's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def test_set_scores(
    loaded: Loaded,
    data_dir: Path,
    samples: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, Path, bool]:
    """Every test image's -log p(x) under the model (sorted), the cache file that holds them,
    and whether it was already there."""
    cache = (
        loaded.run_dir
        / "scores"
        / (f"test-{checkpoint_digest(loaded.path)}-K{samples}-seed{seed}.npy")
    )
    if cache.is_file():
        try:
            return np.load(cache, allow_pickle=False), cache, True
        except (OSError, ValueError):
            pass  # a damaged cache is computed again
    x, _ = test_images(loaded, data_dir, None)
    nll = nll_per_image(loaded.model, x, samples, seed=seed, progress=progress)
    scores = np.sort(nll.cpu().numpy())
    buffer = io.BytesIO()
    np.save(buffer, scores, allow_pickle=False)
    write_atomically(cache, buffer.getvalue())
    return scores, cache, False


@torch.no_grad()
def score_images(
    loaded: Loaded,
    x: torch.Tensor,
    names: list[str],
    reference: np.ndarray,
    *,
    samples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Per image: -log p(x) (K = `samples`), bits/dim, -log p(x | z = mu) and the share of the
    reference (the test set's scores) it is higher than. Each image draws its samples from its
    own generator seeded with `seed`, so an image's score does not depend on the others
    scored with it (the first test image's is `vae eval --limit 1`'s)."""
    nll = torch.cat(
        [nll_per_image(loaded.model, x[i : i + 1], samples, seed=seed) for i in range(len(x))]
    )
    nll = nll.cpu().numpy()
    logits = loaded.model(x, mean_only=True)[0]
    recon = (-bernoulli_log_likelihood(logits, x)).cpu().numpy()
    above = np.searchsorted(reference, nll, side="left") / len(reference)
    return [
        {
            "image": name,
            "nll": float(value),
            "bits_per_dim": float(value) / (IMAGE_PIXELS * math.log(2)),
            "recon": float(error),
            "higher_than_test": float(100 * share),
        }
        for name, value, error, share in zip(names, nll, recon, above, strict=True)
    ]


def write_score_picture(rows: list[dict[str, Any]], x: torch.Tensor, out: Path) -> Path:
    """The most typical inputs (lowest -log p(x)) over the least typical, each captioned."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["nll"])
    shown = min(SHOWN, len(order))
    typical, unusual = order[:shown], order[::-1][:shown]
    images = torch.cat([x[typical].cpu(), x[unusual].cpu()])

    def spread(indices: list[int]) -> str:
        values = sorted(rows[i]["nll"] for i in indices)
        return f"{values[0]:.0f}-{values[-1]:.0f} nats"

    labels = [f"most typical, {spread(typical)}", f"least typical, {spread(unusual)}"]
    return save_picture(
        lambda: grids.save_labelled_grid(images, out, nrow=shown, row_labels=labels), out
    )


def scores_for(
    loaded: Loaded,
    data_dir: Path,
    images: list[Path] | None,
    *,
    invert: str,
    fit: str,
    limit: int,
    samples: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The `vae score` report of the user's images, or of the first `limit` test images, and
    the pixels scored."""
    said = None
    if images:  # read (and refused, if need be) before the test set's scores are computed
        from vae_cli.commands.images import user_pixels

        read = user_pixels(loaded, images, invert=invert, fit=fit)
        x, names, said = read.pixels, read.names, read.said
    else:
        x, _ = test_images(loaded, data_dir, limit)
        names = [f"test[{index}]" for index in range(len(x))]
    reference, cache, cached = test_set_scores(loaded, data_dir, samples, seed, progress)
    rows = score_images(loaded, x, names, reference, samples=samples, seed=seed)
    report = {
        "checkpoint": str(loaded.path),
        "samples": samples,
        "seed": seed,
        "likelihood": loaded.config.data.binarize != "none",
        "read": said,
        "test_set": {
            "images": len(reference),
            "median_nll": float(np.median(reference)),
            "cache": str(cache),
            "cached": cached,
        },
        "images": rows,
    }
    return report, x


def write_scores_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The report's rows as CSV, one per image."""
    import csv

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    try:
        write_atomically(path, text.getvalue().encode())
    except OSError as error:
        raise UserError(f"--csv {path}: cannot write ({error.strerror or error})") from None
    return path
