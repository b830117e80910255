"""Saving and restoring training state, as torchtitan's checkpointer does: each component (the
stack's weights and moments for a member, its random streams, the progress, its best and
status, the statistics kept, its settings) gives its own state_dict, and one checkpoint
collects them; a restore hands each component the checkpoint back. The checkpointer knows
nothing else: the loop decides what to save, and what to do with weights that are not finite.

Writes go through a background thread (training goes on meanwhile); a population's saves of
one step become its members' files together (runs.population.commit_checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from vae_cli.checkpoint import serialize_checkpoint
from vae_cli.files import OrderedWriter, write_atomically
from vae_cli.runs.population import commit_checkpoints, pending_path


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None: ...


class Checkpointer:
    def __init__(self, writer: OrderedWriter, population: Path | None) -> None:
        self.writer, self.population = writer, population
        self.pending: list[Path] = []  # a population's files saved since the last commit

    def save(self, components: Sequence[Stateful], targets: list[Path]) -> dict[str, Any]:
        """One checkpoint of the components' state_dicts (copied to the CPU now, written in
        the background) to each of `targets`; returns it. Two components may not claim the
        same key."""
        state: dict[str, Any] = {}
        for component in components:
            part = component.state_dict()
            if clash := state.keys() & part.keys():
                raise ValueError(f"two components save {sorted(clash)}")
            state.update(snapshot(part))
        if self.population is not None:
            targets = [pending_path(target) for target in targets]
            self.pending += targets
        self.writer.submit(write_checkpoints, state, targets)
        return state

    def commit(self) -> None:
        """A population's checkpoints saved since the last commit become the members' files in
        one step, once all of them are written."""
        if self.population is not None and self.pending:
            self.writer.submit(commit_checkpoints, self.population, self.pending)
            self.pending = []

    @staticmethod
    def restore(components: Sequence[Stateful], checkpoint: dict[str, Any]) -> None:
        """Each component takes its state back from the checkpoint, in order."""
        for component in components:
            component.load_state_dict(checkpoint)


def snapshot(value: Any) -> Any:
    """A CPU copy of every tensor in a nested state dict (training mutates the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value


def write_checkpoints(state: dict[str, Any], paths: list[Path]) -> None:
    """Serialise once and write the same bytes to each path (last.pt, and best.pt)."""
    data = serialize_checkpoint(state)
    for path in paths:
        write_atomically(path, data)
