"""The validation split: which training images it holds out (the data's choice, not a run's),
their fixed binarization, and that no held-out image ever reaches a training step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_cli.config.settings import Config
from vae_cli.data.dataset import Dataset, binarize_fixed, prepare_images
from vae_cli.data.split import check_validation, split_digest, sweep_validation, validation_indices
from vae_cli.errors import UserError
from vae_cli.runs.folder import RunFolder
from vae_cli.training.batches import Batches
from vae_cli.training.loop import Member, train


def numbered_dataset(train: int, test: int) -> Dataset:
    """Images whose first two pixels spell their row number (little-endian base 256)."""

    def numbered(n: int) -> torch.Tensor:
        rows = torch.arange(n)
        images = torch.zeros(n, 784, dtype=torch.uint8)
        images[:, 0], images[:, 1] = (rows % 256).to(torch.uint8), (rows // 256).to(torch.uint8)
        return images

    labels = torch.zeros(train, dtype=torch.int64)
    return Dataset(numbered(train), labels, numbered(test), labels[:test], md5={})


def row_numbers(images: torch.Tensor) -> list[int]:
    flat = images.reshape(-1, 784).long()
    return (flat[:, 0] + 256 * flat[:, 1]).tolist()


def test_the_split_depends_on_the_sizes_only() -> None:
    first = validation_indices(1000, 100)
    assert torch.equal(first, validation_indices(1000, 100))
    assert len(first) == 100 and len(set(first.tolist())) == 100
    assert torch.equal(first, first.sort().values) and first.min() >= 0 and first.max() < 1000
    assert set(first.tolist()) < set(validation_indices(1000, 200).tolist())  # nested splits
    assert not torch.equal(first, validation_indices(1001, 100))  # another set, another split
    assert split_digest(first) == split_digest(first.clone()) != split_digest(first[:-1])
    assert len(validation_indices(1000, 0)) == 0


def test_held_out_rows_leave_the_training_set_in_order() -> None:
    dataset = numbered_dataset(500, 20)
    pixels = prepare_images(dataset, "none", 50)
    held_out = pixels.validation_indices.tolist()
    assert row_numbers(pixels.validation) == held_out
    assert row_numbers(pixels.train) == [i for i in range(500) if i not in set(held_out)]
    assert torch.equal(pixels.test, dataset.test_images)
    none = prepare_images(dataset, "none", 0)
    assert torch.equal(none.train, dataset.train_images) and len(none.validation) == 0


def test_validation_pixels_get_one_fixed_draw() -> None:
    dataset = numbered_dataset(400, 20)
    dataset.train_images[:, 2:] = 128  # grey: every pixel a coin flip under binarization
    dynamic = prepare_images(dataset, "dynamic", 40)
    again = prepare_images(dataset, "dynamic", 40)
    assert torch.equal(dynamic.validation, again.validation)
    assert set(dynamic.validation[:, 2:].unique().tolist()) == {0, 255}
    assert torch.equal(dynamic.train, prepare_images(dataset, "none", 40).train)  # drawn per step
    static = prepare_images(dataset, "static", 40)
    whole = binarize_fixed(dataset.train_images, 20140102)  # the training set's one draw
    assert torch.equal(static.validation, whole[static.validation_indices])


def test_no_held_out_image_reaches_a_training_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = numbered_dataset(300, 50)
    held_out = set(validation_indices(300, 60).tolist())
    reached: list[int] = []
    take_batch = Batches.batch

    def recording(self: Batches, orders: torch.Tensor, index: int) -> torch.Tensor:
        batch = take_batch(self, orders, index)
        reached.extend(row_numbers(batch))
        return batch

    monkeypatch.setattr(Batches, "batch", recording)
    config = Config().replace(
        {"validation": 60, "epochs": 2, "batch_size": 48, "hidden_dim": 8, "latent_dim": 2}
    )
    train([Member(config, RunFolder(tmp_path / "r"))], dataset=dataset, device=torch.device("cpu"))
    assert len(reached) == 2 * 240 and not held_out & set(reached)
    assert sorted(reached) == sorted(2 * [i for i in range(300) if i not in held_out])


@pytest.mark.parametrize(
    ("validation", "images", "limit", "message"),
    [
        (100, 100, None, "--validation 100: expected fewer than the 100 training images the"),
        (60, 50, 50, "expected fewer than the 50 training images --limit 50 holds"),
    ],
)
def test_a_split_must_leave_images_to_train_on(
    validation: int, images: int, limit: int | None, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        check_validation(validation, images, limit)
    check_validation(images - 1, images, limit)


def test_a_sweeps_default_split() -> None:
    assert sweep_validation(60_000) == 10_000  # the references' size
    assert sweep_validation(600) == 100 and sweep_validation(3) == 1
