"""`vae eval`: the test-set report of a checkpoint (the ELBO and its parts, posterior-collapse
diagnostics, the importance-weighted NLL), with a caveat when its pixels are continuous."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vae_cli.commands.load import Loaded, test_images, validation_images
from vae_cli.data.images import UserImages
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.runs.best import describe_checkpoint

CONTINUOUS_CAVEAT = (
    "continuous pixels: a cross-entropy, not -log p(x); for likelihoods that compare with "
    "the literature, train (or evaluate) with --binarize dynamic"
)


def evaluate_checkpoint(
    loaded: Loaded,
    data_dir: Path,
    *,
    iw_samples: int | None = None,
    limit: int | None = None,
    binarize: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    images: UserImages | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """The report of `vae eval` on the test set, the run's validation split (`split`), or the
    user's `images` when given; `progress(done, total)` follows the IW estimate."""
    if images is not None:
        x = images.pixels[:limit]
    elif split == "validation":
        x, _ = validation_images(loaded, data_dir, limit, binarize)
    else:
        x, _ = test_images(loaded, data_dir, limit, binarize)
    elbo = evaluate_elbo(loaded.model, x)
    result: dict[str, Any] = {
        "checkpoint": str(loaded.path),
        "epoch": loaded.checkpoint["epoch"],
        "step": loaded.checkpoint["step"],
        "chosen": describe_checkpoint(loaded.checkpoint["epoch"], loaded.checkpoint.get("best")),
        "dataset": "your images" if images is not None else loaded.config.data.dataset,
        "split": "your images" if images is not None else split,
        "binarize": binarize or loaded.config.data.binarize,
        "trained_binarize": loaded.config.data.binarize,
        **asdict(elbo),
    }
    if loaded.picked is not None:  # no --checkpoint: say which run answered
        result["latest_run"] = {key: loaded.picked[key] for key in ("run", "status")}
    if iw_samples:
        estimate = importance_weighted_nll(loaded.model, x, iw_samples, progress=progress)
        result["iw"] = asdict(estimate)
    # A Bernoulli decoder gives pixels in {0, 1} a probability; scored on continuous pixels
    # its "log-likelihood" is a cross-entropy, not log p(x).
    result["likelihood"] = result["binarize"] != "none"
    if not result["likelihood"]:
        result["caveat"] = CONTINUOUS_CAVEAT
    return result
