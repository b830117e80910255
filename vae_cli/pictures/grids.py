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
SCALE = 3  # a labelled picture's digits drawn 84 pixels wide: readable at 100 %
MARK = (255, 160, 0)  # the frame around a marked image (an interpolation's endpoints)
TEXT = (230, 230, 230)
LABEL_SIZE = 18


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


def save_grid(images: torch.Tensor, path: Path, *, nrow: int = 8, scale: int = 1) -> Path:
    """Save (N, 784) pixel values in [0, 1] as a greyscale PNG grid, nrow images per row,
    each pixel `scale` pixels wide."""
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(grid(images, nrow).numpy(), mode="L")
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(buffer, format="png")
    write_atomically(path, buffer.getvalue())
    return path


def labelled_grid(
    images: torch.Tensor,
    nrow: int,
    *,
    row_labels: list[str] = (),
    captions: dict[int, str] | None = None,
    marked: tuple[int, ...] = (),
    scale: int = SCALE,
) -> object:
    """A grid drawn `scale` times larger as an RGB PIL image, for a person to read: each row
    of images named at its left (`row_labels`, cycled), a caption under chosen images, and a
    coloured frame around the `marked` ones."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(grid(images, nrow).numpy(), mode="L")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    font = ImageFont.load_default(size=LABEL_SIZE)
    margin = max((font.getbbox(text)[2] for text in row_labels), default=-12) + 12
    below = LABEL_SIZE + 8 if captions else 0
    canvas = Image.new("RGB", (margin + picture.width, picture.height + below))
    canvas.paste(picture.convert("RGB"), (margin, 0))
    draw, step = ImageDraw.Draw(canvas), (IMAGE_SIDE + GRID_PADDING) * scale
    rows = -(-len(images) // nrow)
    for row in range(rows if row_labels else 0):
        middle = GRID_PADDING * scale + row * step + IMAGE_SIDE * scale // 2
        draw.text((margin - 6, middle), row_labels[row % len(row_labels)], TEXT, font, "rm")
    for index in range(len(images)):
        left = margin + GRID_PADDING * scale + (index % nrow) * step
        top = GRID_PADDING * scale + (index // nrow) * step
        if index in marked:
            box = (left - 2, top - 2, left + IMAGE_SIDE * scale + 1, top + IMAGE_SIDE * scale + 1)
            draw.rectangle(box, outline=MARK, width=3)
        if captions and index in captions:
            centre = (left + IMAGE_SIDE * scale // 2, picture.height + 2)
            draw.text(centre, captions[index], TEXT, font, "mt")
    return canvas


def save_labelled_grid(images: torch.Tensor, path: Path, *, nrow: int, **labels: object) -> Path:
    """`labelled_grid` written as a PNG (atomically)."""
    buffer = io.BytesIO()
    labelled_grid(images, nrow, **labels).save(buffer, format="png")
    write_atomically(path, buffer.getvalue())
    return path


def contrast_stretched(images: torch.Tensor) -> torch.Tensor:
    """Each image's pixels spread over [0, 1] (its darkest black, its brightest white): what a
    VampPrior's pseudo-inputs look like, which sit near 0 with faint strokes."""
    low = images.min(dim=-1, keepdim=True).values
    high = images.max(dim=-1, keepdim=True).values
    return (images - low) / (high - low).clamp(min=1e-6)


def interleave_rows(*sets: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of the first set (originals), each directly above the same row of every other
    (what the model read, its reconstructions)."""
    rows = []
    for start in range(0, len(sets[0]), nrow):
        rows += [images[start : start + nrow] for images in sets]
    return torch.cat(rows)


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
