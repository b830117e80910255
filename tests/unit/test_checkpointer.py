"""The checkpointer with fake components, as torchtitan tests its own: it collects whatever
state_dicts it is handed, copies them at once, writes one file per target and hands a
checkpoint back to each component; it needs no Trainer, model or data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vae_cli.files import OrderedWriter
from vae_cli.training.checkpointer import Checkpointer


class FakeComponent:
    """Holds a tensor and a number under its own keys; remembers what it was restored from."""

    def __init__(self, name: str, value: float) -> None:
        self.name, self.tensor, self.count = name, torch.full((3,), value), int(value)
        self.restored: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {f"{self.name}_tensor": self.tensor, f"{self.name}_count": self.count}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.restored.append(checkpoint)
        self.tensor = checkpoint[f"{self.name}_tensor"].clone()
        self.count = checkpoint[f"{self.name}_count"]


def read(path: Path) -> dict[str, Any]:
    """A written file as torch.load reads it (the fakes' keys are not a vae-cli checkpoint)."""
    return torch.load(path, weights_only=True)


@pytest.fixture
def writer() -> Iterator[OrderedWriter]:
    writer = OrderedWriter()
    yield writer
    writer.close()


def test_one_checkpoint_holds_every_component_and_each_target_gets_the_same_bytes(
    tmp_path: Path, writer: OrderedWriter
) -> None:
    weights, streams = FakeComponent("weights", 1.0), FakeComponent("streams", 2.0)
    targets = [tmp_path / "last.pt", tmp_path / "best.pt"]
    saved = Checkpointer(writer, population=None).save([weights, streams], targets)
    writer.drain()
    assert list(saved) == ["weights_tensor", "weights_count", "streams_tensor", "streams_count"]
    assert targets[0].read_bytes() == targets[1].read_bytes()
    loaded = read(targets[0])
    assert torch.equal(loaded["weights_tensor"], torch.full((3,), 1.0))
    assert (loaded["weights_count"], loaded["streams_count"]) == (1, 2)


def test_the_state_is_copied_when_saved_not_when_written(
    tmp_path: Path, writer: OrderedWriter
) -> None:
    """Training goes on while the writer thread writes: a later update must not leak in."""
    weights = FakeComponent("weights", 1.0)
    saved = Checkpointer(writer, population=None).save([weights], [tmp_path / "c.pt"])
    weights.tensor.add_(100.0)  # the next step, before or while the file is written
    writer.drain()
    assert torch.equal(saved["weights_tensor"], torch.full((3,), 1.0))
    assert torch.equal(read(tmp_path / "c.pt")["weights_tensor"], torch.full((3,), 1.0))


def test_two_components_may_not_claim_the_same_key(tmp_path: Path, writer: OrderedWriter) -> None:
    with pytest.raises(ValueError, match="weights_tensor"):
        Checkpointer(writer, None).save(
            [FakeComponent("weights", 1.0), FakeComponent("weights", 2.0)], [tmp_path / "c.pt"]
        )
    writer.drain()
    assert not (tmp_path / "c.pt").exists()


def test_restore_hands_the_checkpoint_to_each_component(
    tmp_path: Path, writer: OrderedWriter
) -> None:
    saved = Checkpointer(writer, None).save(
        [FakeComponent("weights", 5.0), FakeComponent("streams", 7.0)], [tmp_path / "c.pt"]
    )
    writer.drain()
    fresh = [FakeComponent("weights", 0.0), FakeComponent("streams", 0.0)]
    Checkpointer.restore(fresh, read(tmp_path / "c.pt"))
    assert [component.count for component in fresh] == [5, 7]
    assert torch.equal(fresh[0].tensor, saved["weights_tensor"])
    assert all(len(component.restored) == 1 for component in fresh)


def test_a_population_saves_pending_files_that_become_checkpoints_together(
    tmp_path: Path, writer: OrderedWriter
) -> None:
    population = tmp_path / "pop"
    members = [population / f"seed-{seed}" / "last.pt" for seed in range(2)]
    for path in members:
        path.parent.mkdir(parents=True)
    checkpointer = Checkpointer(writer, population)
    for seed, path in enumerate(members):
        checkpointer.save([FakeComponent("weights", float(seed))], [path])
    writer.drain()
    assert not any(path.exists() for path in members)  # pending until the commit
    checkpointer.commit()
    writer.drain()
    assert [read(path)["weights_count"] for path in members] == [0, 1]
    assert not list(population.rglob("*.pending"))
