"""`vae sample`, `reconstruct` and `interpolate`: pictures of a trained model, each written to a
PNG and returned (the same seed gives the same bytes)."""

from __future__ import annotations

from pathlib import Path

import torch

from vae_cli.commands.interpolation_ends import require_both_ends_or_neither, require_two_images
from vae_cli.commands.load import Loaded, save_picture, test_images
from vae_cli.data.images import UserImages
from vae_cli.errors import UserError
from vae_cli.model.vae import prior_noise
from vae_cli.pictures import grids


@torch.no_grad()
def write_samples(loaded: Loaded, out: Path, *, n: int, seed: int, temperature: float) -> Path:
    """Ancestral samples: the top layer's prior, then each layer below given the one above;
    the prior's randomness is drawn on the CPU from `seed` (the same picture on every device)."""
    noise = prior_noise(loaded.model, n, torch.Generator().manual_seed(seed))
    pixels = torch.sigmoid(loaded.model.generate_from(noise, temperature))
    return save_picture(lambda: grids.save_grid(pixels, out, nrow=8), out)


@torch.no_grad()
def write_manifold(loaded: Loaded, out: Path, *, side: int) -> Path:
    """The decoded 2-D top latent over a grid of the prior's quantiles (a VampPrior's: of a
    Gaussian with the mixture's mean and spread; lower layers at their means)."""
    top = loaded.model.latent_dims[-1]
    if top != 2:
        raise UserError(
            f"--grid needs a model whose top latent is 2-D; {loaded.path} has {top} dimensions "
            "(train one with --latent-dims 2, or ending in 2 for several layers: 64,2)"
        )
    z = loaded.model.prior_grid(grids.latent_grid(side).to(loaded.device))
    pixels = torch.sigmoid(loaded.model.generate(z))
    return save_picture(lambda: grids.save_grid(pixels, out, nrow=side), out)


@torch.no_grad()
def write_reconstructions(
    loaded: Loaded,
    data_dir: Path,
    out: Path,
    *,
    n: int,
    seed: int,
    mean_only: bool,
    images: UserImages | None = None,
) -> Path:
    """The first n test images, each over its reconstruction; or the user's images, each over
    what the model read of it (greyed, inverted, fitted) and its reconstruction."""
    if images is None:
        x, _ = test_images(loaded, data_dir, None)
        rows, labels = [x[:n]], ["test image"]
    else:
        x = images.pixels
        rows, labels = [images.shown.to(x.device), x], ["your image", "what the model read"]
    generator = torch.Generator(device=loaded.device).manual_seed(seed)
    pixels = torch.sigmoid(loaded.model(rows[-1], generator, mean_only=mean_only)[0])
    nrow = min(len(pixels), 8)
    padded = [grids.pad_to_rows(images_, nrow) for images_ in [*rows, pixels]]
    grid = grids.interleave_rows(*padded, nrow=nrow)
    how = "mean of z" if mean_only else f"sampled, seed {seed}"
    labels.append(f"reconstructed ({how})")
    return save_picture(
        lambda: grids.save_labelled_grid(grid, out, nrow=nrow, row_labels=labels), out
    )


@torch.no_grad()
def write_interpolation(
    loaded: Loaded,
    data_dir: Path,
    out: Path,
    *,
    from_index: int | None,
    to_index: int | None,
    seed: int,
    steps: int,
    images: UserImages | None = None,
) -> tuple[Path, str, str]:
    """Decoded points on the straight line between the posterior means of two test images
    (every layer's, where the decoder reads them), originals at both ends. Without indices,
    the seed picks the two images; with `images`, the user's two images are the ends."""
    if images is not None:
        require_two_images(len(images.pixels))
        names = [Path(name).name for name in images.names]
        row = line_between(loaded, images.pixels, steps)
        save_interpolation(row, out, names)
        return out, names[0], names[1]
    x, _ = test_images(loaded, data_dir, None)
    require_both_ends_or_neither(from_index, to_index)
    if from_index is None:
        from_index, to_index = torch.randperm(
            len(x), generator=torch.Generator().manual_seed(seed)
        )[:2].tolist()
    for flag, index in (("--from-index", from_index), ("--to-index", to_index)):
        if not 0 <= index < len(x):
            raise UserError(f"{flag} {index}: the test set has images 0 to {len(x) - 1}")
    row = line_between(loaded, x[[from_index, to_index]], steps)
    save_interpolation(row, out, [f"test #{from_index}", f"test #{to_index}"])
    return out, f"test image {from_index}", f"test image {to_index}"


def line_between(loaded: Loaded, ends: torch.Tensor, steps: int) -> torch.Tensor:
    """The two images (2, 784) with `steps` decoded points between their posterior means."""
    means = loaded.model.encode_layers(ends)
    weights = torch.linspace(0, 1, steps, device=loaded.device).unsqueeze(1)
    path = [(1 - weights) * mu[0] + weights * mu[1] for mu, _ in means]  # (steps, D_l) each
    return torch.cat([ends[:1], torch.sigmoid(loaded.model.decode(*path)), ends[1:]])


def save_interpolation(row: torch.Tensor, out: Path, names: list[str]) -> Path:
    """The row, its two ends framed and captioned."""
    last = len(row) - 1
    return save_picture(
        lambda: grids.save_labelled_grid(
            row, out, nrow=len(row), captions={0: names[0], last: names[1]}, marked=(0, last)
        ),
        out,
    )
