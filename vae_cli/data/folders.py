"""Where a dataset's files are: --data-dir, $VAE_DATA_DIR or ./data, then torchvision's layout
(ROOT/MNIST/raw/*-ubyte). No torch."""

from __future__ import annotations

import os
from pathlib import Path

# torchvision class name per dataset; files live in ROOT/<class name>/raw/.
DATASET_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def resolve_data_dir(flag: Path | None) -> Path:
    """--data-dir, else $VAE_DATA_DIR, else ./data."""
    if flag is not None:
        return flag
    return Path(os.environ.get("VAE_DATA_DIR") or "data")


def raw_folder(root: Path, dataset: str) -> Path:
    return root / DATASET_CLASSES[dataset] / "raw"
