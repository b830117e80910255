"""Data loading: the IDX checks, binarization modes, and Fashion-MNIST on synthetic files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import dataset_name

from vae_cli.data.dataset import binarize_fixed, load_dataset, prepare_images
from vae_cli.data.folders import resolve_data_dir
from vae_cli.pictures.grids import grid_size


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAE_DATA_DIR", "/from/env")
    assert resolve_data_dir(Path("/flag")) == Path("/flag")
    assert resolve_data_dir(None) == Path("/from/env")
    monkeypatch.delenv("VAE_DATA_DIR")
    assert resolve_data_dir(None) == Path("data")


def test_static_binarization_is_one_fixed_draw(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, dataset_name(data_dir), limit=200)
    train_a, _, test_a, _ = prepare_images(dataset, "static")
    train_b, _, test_b, _ = prepare_images(dataset, "static")
    assert torch.equal(train_a, train_b) and torch.equal(test_a, test_b)
    assert set(train_a.unique().tolist()) <= {0, 255}


def test_dynamic_keeps_training_pixels_and_fixes_the_test_draw(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, dataset_name(data_dir), limit=200)
    train, _, test, _ = prepare_images(dataset, "dynamic")
    assert torch.equal(train, dataset.train_images)  # drawn afresh per batch, in the trainer
    assert torch.equal(test, prepare_images(dataset, "static").test)  # same test set as static
    none_test = prepare_images(dataset, "none").test
    assert torch.equal(none_test, dataset.test_images)


def test_binarization_frequency_matches_intensity() -> None:
    images = torch.full((20000, 1), 64, dtype=torch.uint8)
    drawn = binarize_fixed(images, seed=1).float() / 255
    p = 64 / 255
    assert abs(drawn.mean().item() - p) < 4 * (p * (1 - p) / 20000) ** 0.5


def test_the_idx_reader_gives_torchvisions_tensors(data_dir: Path) -> None:
    """The files are read without torchvision (start-up); the tensors are the same."""
    from torchvision.datasets import MNIST, FashionMNIST

    torchvision_class = MNIST if dataset_name(data_dir) == "mnist" else FashionMNIST
    full, first = (
        load_dataset(data_dir, dataset_name(data_dir)),
        load_dataset(data_dir, dataset_name(data_dir), limit=300),
    )
    for train, prefix in ((True, "train"), (False, "test")):
        reference = torchvision_class(str(data_dir), train=train)
        assert torch.equal(getattr(full, f"{prefix}_images"), reference.data.reshape(-1, 784))
        assert torch.equal(getattr(full, f"{prefix}_labels"), reference.targets)
        head = reference.data[:300].reshape(-1, 784)
        assert torch.equal(getattr(first, f"{prefix}_images"), head)
        assert torch.equal(getattr(first, f"{prefix}_labels"), reference.targets[:300])


@pytest.mark.parametrize(("n", "nrow"), [(64, 8), (10, 8), (2, 8), (5, 2)])
def test_picture_grids_match_torchvisions_layout_and_rounding(n: int, nrow: int) -> None:
    from torchvision.utils import make_grid

    from vae_cli.pictures.grids import grid

    pixels = torch.rand(n, 784, generator=torch.Generator().manual_seed(n))
    pixels[0, :3] = torch.tensor([0.0, 1.0, 0.5 / 255])  # the ends and a rounding boundary
    reference = make_grid(pixels.reshape(-1, 1, 28, 28), nrow=nrow, padding=2)
    levels = reference.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)[0]
    assert torch.equal(grid(pixels, nrow), levels)
    assert tuple(reversed(levels.shape)) == grid_size(n, nrow)
