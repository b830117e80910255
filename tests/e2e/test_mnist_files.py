"""The real MNIST files: read as flat uint8 rows, their checksums the official ones."""

from __future__ import annotations

from pathlib import Path

import torch

from vae_cli.data.dataset import load_dataset


def test_mnist_loads_as_flat_uint8(data_dir: Path) -> None:
    dataset = load_dataset(data_dir, "mnist", limit=100)
    assert dataset.train_images.shape == (100, 784) and dataset.train_images.dtype == torch.uint8
    assert dataset.test_labels.shape == (100,)
    assert dataset.md5["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
