"""The validation split: which training images are held out, chosen by a permutation whose seed
is fixed here, not the run's, so every run and trial with the same N (and --limit) sees the same
images. best.pt and sweeps choose on them; the test set only reports."""

from __future__ import annotations

import hashlib

import torch

from vae_cli.errors import UserError

SPLIT_SEED = 20161101  # fixed: the split is the data's, not a run's
SWEEP_VALIDATION = 10_000  # a sweep's split when its config has none (the references' size)


def validation_indices(train_images: int, validation: int) -> torch.Tensor:
    """The sorted indices (N,) of the training images held out for validation."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(train_images, generator=generator)
    return order[:validation].sort().values


def sweep_validation(train_images: int) -> int:
    """A sweep's split when its config sets none: 10,000 of MNIST's 60,000 training images, as
    the VampPrior and Ladder VAE code hold out, and a sixth of a smaller (--limit) set."""
    return max(1, min(SWEEP_VALIDATION, train_images // 6))


def split_training_set(
    images: torch.Tensor, validation: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(training images, validation images, validation indices): the rows kept for training
    stay in their order, so a run without a split trains on exactly the images it did."""
    held_out = validation_indices(len(images), validation)
    keep = torch.ones(len(images), dtype=torch.bool)
    keep[held_out] = False
    return images[keep], images[held_out], held_out


def split_digest(indices: torch.Tensor) -> str:
    """A short SHA-256 of the held-out indices, recorded in the manifest: a resume checks that
    it holds out the same images."""
    data = indices.to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def check_validation(validation: int, train_images: int, limit: int | None) -> None:
    """A split must leave at least one training image."""
    if validation < train_images:
        return
    source = f"--limit {limit}" if limit is not None else "the training set"
    raise UserError(
        f"--validation {validation}: expected fewer than the {train_images:,} training images "
        f"{source} holds, leaving some to train on"
    )


def check_batch_size(batch_size: int, train_images: int) -> None:
    """A batch fits in the training set (a larger one would silently train full-batch)."""
    if batch_size > train_images:
        raise UserError(
            f"--batch-size {batch_size}: expected at most the {train_images:,} training images"
        )
