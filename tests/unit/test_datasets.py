"""Data loading: the IDX checks, binarization modes, and Fashion-MNIST on synthetic files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_labelled_rows, dataset_name, run_vae, train_args

from vae_cli.data.dataset import binarize_fixed, load_dataset, prepare_images
from vae_cli.data.folders import resolve_data_dir
from vae_cli.pictures.grids import grid_size


def write_idx(path: Path, array: torch.Tensor, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def synthetic_fashion(root: Path, n_train: int = 256, n_test: int = 128) -> Path:
    """Small IDX files in torchvision's FashionMNIST layout: bright squares per class."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator)
        images = torch.zeros(n, 28, 28)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label : 10 + 2 * label, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x803)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    return root


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


def test_fashion_mnist_end_to_end_on_synthetic_files(tmp_path: Path) -> None:
    root = synthetic_fashion(tmp_path / "data")
    runs = tmp_path / "runs"
    result = run_vae(
        *train_args(runs, root, "--dataset", "fashion-mnist", "--epochs", 2, name="f"),
        "--batch-size",
        64,
    )
    assert result.code == 0, result.stderr
    assert "256 train / 128 test" in result.stdout  # the start panel (piped: no bars)
    metrics = [json.loads(line) for line in (runs / "f/metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]
    # eval and reconstruct read the dataset the checkpoint names; MNIST is not in this folder.
    evaluation = run_vae("eval", "--checkpoint", runs / "f", "--data-dir", root, "--json")
    assert evaluation.code == 0, evaluation.stderr
    report = json.loads(evaluation.stdout)
    assert report["dataset"] == "fashion-mnist" and report["images"] == 128
    out = tmp_path / "r.png"
    assert (
        run_vae(
            "reconstruct",
            "--checkpoint",
            runs / "f",
            "--data-dir",
            root,
            "--n",
            8,
            "--mean-only",
            "--out",
            out,
        ).code
        == 0
    )
    assert_labelled_rows(out, rows=2, grid_width=grid_size(16, 8)[0], scale=3)


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


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("no-images", "train-images-idx3-ubyte: holds no images (its header counts 0)"),
        (
            "label-200",
            "train-labels-idx1-ubyte: label 200 at item 3; labels are the classes 0 to 9",
        ),
        ("short-header", "train-images-idx3-ubyte: 6 bytes, shorter than an IDX images file's"),
        ("short-labels", "t10k-labels-idx1-ubyte: 5 bytes, shorter than an IDX labels file's 8"),
    ],
)
def test_idx_files_that_cannot_be_trained_on_are_named(
    damage: str, fragment: str, tmp_path: Path
) -> None:
    root = synthetic_fashion(tmp_path / "data")
    raw = root / "FashionMNIST/raw"
    if damage == "no-images":
        write_idx(raw / "train-images-idx3-ubyte", torch.zeros(0, 28, 28), 0x803)
        write_idx(raw / "train-labels-idx1-ubyte", torch.zeros(0), 0x801)
    elif damage == "label-200":
        labels = torch.zeros(256)
        labels[3] = 200
        write_idx(raw / "train-labels-idx1-ubyte", labels, 0x801)
    elif damage == "short-header":
        (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    else:
        (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    runs = tmp_path / "runs"
    result = run_vae(*train_args(runs, root, "--dataset", "fashion-mnist", "--epochs", 1))
    assert result.code == 2 and result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    assert not runs.exists()
