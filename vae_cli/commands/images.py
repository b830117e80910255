"""A user's images (`--images`) as a model reads them: read and fitted by data/images.py, then
in the model's pixels (a fixed Bernoulli draw for a model trained on binarized MNIST, as its
test set gets), on its device."""

from __future__ import annotations

from pathlib import Path

import torch

from vae_cli.commands.load import Loaded
from vae_cli.data.images import UserImages, read_images

USER_BINARIZE_SEED = 20140104  # the one draw of a user's images, as the test set has its own


def user_pixels(loaded: Loaded, paths: list[Path], *, invert: str, fit: str) -> UserImages:
    """The images at `paths` as the model reads them: their pixels (N, 784) on its device."""
    images = read_images(paths, invert=invert, fit=fit)
    if loaded.config.data.binarize != "none":
        generator = torch.Generator().manual_seed(USER_BINARIZE_SEED)
        images.pixels = torch.bernoulli(images.pixels, generator=generator)
        images.said += ", binarized (one fixed draw) as the model's training images were"
    images.pixels = images.pixels.to(loaded.device)
    return images
