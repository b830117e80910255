"""The IDX files MNIST comes in: their headers, sizes, checksums and labels checked, each problem
one UserError that says what is wrong; then their items as uint8 rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from vae_cli.data.folders import RAW_FILES, raw_folder
from vae_cli.errors import UserError

# MD5 of the official uncompressed MNIST files (torchvision lists those of the .gz archives).
MNIST_MD5 = {
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
}
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # unsigned bytes, 3 or 1 dimensions


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
