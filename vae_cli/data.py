"""Turns a data folder into uint8 image tensors, checking the files first.

Knows torchvision's MNIST layout (`ROOT/MNIST/raw/*-ubyte`) and nothing about training.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from vae_cli.errors import UserError

# torchvision class name per dataset; files live in ROOT/<class name>/raw/.
DATASET_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# MD5 of the official uncompressed MNIST files (torchvision lists those of the .gz archives).
MNIST_MD5 = {
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
}
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # unsigned bytes, 3 or 1 dimensions
# Fixed seed of the Bernoulli draw of binarized test sets, so every run scores the same images.
TEST_BINARIZE_SEED = 20140101
STATIC_BINARIZE_SEED = 20140102  # the one draw of the training set in "static" mode


@dataclass
class Dataset:
    train_images: torch.Tensor  # (N, 784) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, 784) uint8
    test_labels: torch.Tensor  # (M,) int64
    md5: dict[str, str]  # file name -> MD5 of the raw file


def resolve_data_dir(flag: Path | None) -> Path:
    """--data-dir, else $VAE_DATA_DIR, else ./data."""
    if flag is not None:
        return flag
    return Path(os.environ.get("VAE_DATA_DIR") or "data")


def raw_folder(root: Path, dataset: str) -> Path:
    return root / DATASET_CLASSES[dataset] / "raw"


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_idx_file(path: Path, kind: str) -> int:
    """Check an IDX file's header (its length, magic number, item count, image size) and its
    size against the header; returns the item count, which is at least 1."""
    header_bytes = 16 if kind == "images" else 8
    with path.open("rb") as handle:
        header = handle.read(header_bytes)
    if len(header) < header_bytes:
        raise UserError(
            f"{path}: {len(header)} bytes, shorter than an IDX {kind} file's {header_bytes}-byte "
            "header; the file is truncated: delete it and download it again"
        )
    if int.from_bytes(header[:4], "big") != IDX_MAGIC[kind]:
        raise UserError(
            f"{path}: not an IDX {kind} file (wrong magic number); "
            "the file is corrupt: delete it and download it again"
        )
    dims = [int.from_bytes(header[i : i + 4], "big") for i in range(4, len(header), 4)]
    if dims[0] == 0:
        raise UserError(
            f"{path}: holds no {kind} (its header counts 0); nothing to train or test on"
        )
    expected = len(header) + _product(dims)
    if kind == "images" and dims[1:] != [28, 28]:
        raise UserError(f"{path}: images are {dims[1:]} pixels, expected 28x28")
    if path.stat().st_size != expected:
        raise UserError(
            f"{path}: {path.stat().st_size} bytes but its header says {expected}; "
            "the file is truncated or corrupt: delete it and download it again"
        )
    return dims[0]


def _product(values: list[int]) -> int:
    total = 1
    for value in values:
        total *= value
    return total


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


def verify_files(root: Path, dataset: str) -> dict[str, str]:
    """Check every raw file's structure (and MNIST's MD5 sums); returns the MD5s."""
    folder = raw_folder(root, dataset)
    md5 = {}
    for images_name, labels_name in RAW_FILES.values():
        n_images = check_idx_file(folder / images_name, "images")
        n_labels = check_idx_file(folder / labels_name, "labels")
        if n_images != n_labels:
            raise UserError(
                f"{folder}: {images_name} holds {n_images} images but "
                f"{labels_name} {n_labels} labels"
            )
        for name in (images_name, labels_name):
            md5[name] = file_md5(folder / name)
            if dataset == "mnist" and md5[name] != MNIST_MD5[name]:
                raise UserError(
                    f"{folder / name}: MD5 {md5[name]} does not match the official "
                    f"{MNIST_MD5[name]}; the file is corrupt: delete it and download "
                    "it again"
                )
    return md5


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


CLASSES = 10  # MNIST's digits, Fashion-MNIST's garments


def check_labels(path: Path, labels: torch.Tensor) -> None:
    """Labels are classes 0-9 (the pictures and `vae latent` colour by them)."""
    if len(labels) and int(labels.max()) >= CLASSES:
        index = int(labels.reshape(-1).argmax())
        raise UserError(
            f"{path}: label {int(labels.reshape(-1)[index])} at item {index}; labels are the "
            f"classes 0 to {CLASSES - 1}: the file is corrupt or not this dataset's"
        )


def read_idx(path: Path, header_bytes: int, limit: int | None) -> torch.Tensor:
    """An IDX file's items (checked by check_idx_file) as uint8 rows, the first `limit` only."""
    data = path.read_bytes()
    count = int.from_bytes(data[4:8], "big")  # at least 1 (check_idx_file)
    items = torch.frombuffer(bytearray(data[header_bytes:]), dtype=torch.uint8)
    items = items.reshape(count, -1)
    return items[:limit].clone() if limit is not None else items


def binarize_fixed(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One seeded Bernoulli draw of uint8 images, returned as uint8 in {0, 255}."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.float() / 255, generator=generator).to(torch.uint8) * 255


def prepare_images(dataset: Dataset, binarize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 train and test images in the requested binarization (dynamic: test only)."""
    train, test = dataset.train_images, dataset.test_images
    if binarize == "static":
        train = binarize_fixed(train, STATIC_BINARIZE_SEED)
    if binarize in ("static", "dynamic"):
        test = binarize_fixed(test, TEST_BINARIZE_SEED)
    return train, test


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1], converted on the fly per batch."""
    return images.float().div_(255)
