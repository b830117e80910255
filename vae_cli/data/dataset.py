"""A dataset as uint8 image tensors: read (downloading it once when online and absent), limited
to the first N images, and binarized as asked. Knows nothing about training."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from vae_cli.data.folders import DATASET_CLASSES, RAW_FILES, raw_folder
from vae_cli.data.idx import check_labels, read_idx, verify_files
from vae_cli.data.split import split_training_set
from vae_cli.errors import UserError

# Fixed seed of the Bernoulli draw of binarized test sets, so every run scores the same images.
TEST_BINARIZE_SEED = 20140101
STATIC_BINARIZE_SEED = 20140102  # the one draw of the training set in "static" mode
VALIDATION_BINARIZE_SEED = 20140103  # dynamic mode: the validation images' one fixed draw


@dataclass
class Dataset:
    train_images: torch.Tensor  # (N, 784) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, 784) uint8
    test_labels: torch.Tensor  # (M,) int64
    md5: dict[str, str]  # file name -> MD5 of the raw file


def download_dataset(root: Path, dataset: str) -> None:
    """torchvision's download into ROOT/<class>/raw, for users who are online."""
    import torchvision.datasets

    getattr(torchvision.datasets, DATASET_CLASSES[dataset])(str(root), download=True)


def ensure_files(root: Path, dataset: str) -> None:
    """Download the dataset when its files are absent; a failure names the folder searched
    and removes the folders the attempt created, so nothing is left behind."""
    folder = raw_folder(root, dataset)
    missing = [
        name for pair in RAW_FILES.values() for name in pair if not (folder / name).is_file()
    ]
    if not missing:
        return
    created = [p for p in (root, folder.parent, folder) if not p.exists()]
    try:
        download_dataset(root, dataset)
    except Exception as error:  # any network or disk failure ends the same way for the user
        if created:
            shutil.rmtree(created[0], ignore_errors=True)
        text = str(error).strip()
        reason = text.splitlines()[0].rstrip(":") if text else type(error).__name__
        raise UserError(
            f"{DATASET_CLASSES[dataset]} not found in {folder} (missing {missing[0]}) and the "
            f"download failed ({reason}); pass --data-dir or set VAE_DATA_DIR to the folder "
            f"that holds {DATASET_CLASSES[dataset]}/raw/"
        ) from None


def load_dataset(root: Path, dataset: str = "mnist", limit: int | None = None) -> Dataset:
    """The train and test sets as flat uint8 tensors (first `limit` images of each).

    The checked IDX files are read directly: importing torchvision to read them would cost
    more start-up than the whole read (it pulls in torch._dynamo), so torchvision is imported
    only to download."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: --data-dir is a file, not a folder")
    ensure_files(root, dataset)
    md5 = verify_files(root, dataset)
    folder = raw_folder(root, dataset)
    (train_images, train_labels), (test_images, test_labels) = (
        (read_idx(folder / images, 16, limit), read_idx(folder / labels, 8, limit))
        for images, labels in (RAW_FILES["train"], RAW_FILES["test"])
    )
    for name, labels in (
        (RAW_FILES["train"][1], train_labels),
        (RAW_FILES["test"][1], test_labels),
    ):
        check_labels(folder / name, labels)
    return Dataset(
        train_images=train_images.reshape(-1, 784),
        train_labels=train_labels.reshape(-1).long(),
        test_images=test_images.reshape(-1, 784),
        test_labels=test_labels.reshape(-1).long(),
        md5=md5,
    )


def binarize_fixed(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One seeded Bernoulli draw of uint8 images, returned as uint8 in {0, 255}."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.float() / 255, generator=generator).to(torch.uint8) * 255


class Pixels(NamedTuple):
    """uint8 images (N, 784) as a run sees them: what it trains on, its validation split
    (held out of the training set) and the test set."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    validation_indices: torch.Tensor  # rows of the dataset's training set held out


def prepare_images(dataset: Dataset, binarize: str, validation: int = 0) -> Pixels:
    """The images in the requested binarization, with `validation` training images held out.
    Dynamic binarization draws the training images anew at every step; the validation and
    test images get one fixed draw each, so every epoch and run scores the same pixels."""
    train, test = dataset.train_images, dataset.test_images
    if binarize == "static":  # before the split: an image's draw does not depend on it
        train = binarize_fixed(train, STATIC_BINARIZE_SEED)
    train, held_out, indices = split_training_set(train, validation)
    if binarize == "dynamic":
        held_out = binarize_fixed(held_out, VALIDATION_BINARIZE_SEED)
    if binarize in ("static", "dynamic"):
        test = binarize_fixed(test, TEST_BINARIZE_SEED)
    return Pixels(train, held_out, test, indices)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1], converted on the fly per batch."""
    return images.float().div_(255)
