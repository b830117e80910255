"""Data through the real CLI, on synthetic files: Fashion-MNIST's layout end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_labelled_rows, run_vae, synthetic_fashion, train_args, write_idx

from vae_cli.pictures.grids import grid_size


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
