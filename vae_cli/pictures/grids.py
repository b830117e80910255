"""Image grids as PNG files: samples, reconstructions, interpolations, the 2-D manifold.

Takes tensors and paths, knows nothing of training. PNGs are written atomically, so an
interrupted command never leaves half a picture.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F

from vae_cli.files import write_atomically
from vae_cli.model.layers import IMAGE_SIDE

GRID_PADDING = 2


def grid_size(n_images: int, nrow: int) -> tuple[int, int]:
    """(width, height) in pixels of a grid picture of n images, nrow per row."""
    columns = min(n_images, nrow)
    rows = -(-n_images // nrow)
    step = IMAGE_SIDE + GRID_PADDING
    return columns * step + GRID_PADDING, rows * step + GRID_PADDING


def grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, 784) pixel values in [0, 1] as one (H, W) uint8 picture: nrow images per row,
    GRID_PADDING black pixels around each (torchvision's make_grid layout, without importing
    torchvision, which costs more start-up than a command's work)."""
    n = len(images)
    columns, rows = min(n, nrow), -(-n // nrow)
    # Rounded to the nearest level, as torchvision.utils.save_image does.
    levels = images.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    tiles = torch.zeros(rows * columns, IMAGE_SIDE + GRID_PADDING, IMAGE_SIDE + GRID_PADDING)
    tiles = tiles.to(torch.uint8)
    tiles[:n, GRID_PADDING:, GRID_PADDING:] = levels.reshape(n, IMAGE_SIDE, IMAGE_SIDE)
    step = IMAGE_SIDE + GRID_PADDING
    picture = tiles.reshape(rows, columns, step, step).permute(0, 2, 1, 3)
    return F.pad(picture.reshape(rows * step, columns * step), (0, GRID_PADDING, 0, GRID_PADDING))


def save_grid(images: torch.Tensor, path: Path, *, nrow: int = 8) -> Path:
    """Save (N, 784) pixel values in [0, 1] as a greyscale PNG grid, nrow images per row."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grid(images, nrow).numpy(), mode="L").save(buffer, format="png")
    write_atomically(path, buffer.getvalue())
    return path


def interleave_rows(
    originals: torch.Tensor, reconstructions: torch.Tensor, nrow: int
) -> torch.Tensor:
    """Rows of originals, each directly above the row of its reconstructions."""
    pairs = []
    for start in range(0, len(originals), nrow):
        pairs += [originals[start : start + nrow], reconstructions[start : start + nrow]]
    return torch.cat(pairs)


def pad_to_rows(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """Blank images appended so every row of the grid is full (keeps pairs of rows aligned)."""
    missing = -len(images) % nrow
    return torch.cat([images, images.new_zeros(missing, images.shape[1])]) if missing else images


def latent_grid(side: int) -> torch.Tensor:
    """(side², 2) points on the prior's quantiles, the classic 2-D manifold figure."""
    quantiles = torch.linspace(0.5 / side, 1 - 0.5 / side, side, dtype=torch.float64)
    values = torch.distributions.Normal(0.0, 1.0).icdf(quantiles).float()
    y, x = torch.meshgrid(values.flip(0), values, indexing="ij")  # z2 grows upwards
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
