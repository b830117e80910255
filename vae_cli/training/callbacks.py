"""Hooks the training loop calls; the library never prints.

Display hooks take plain data: the CLI's bars and lines, a sweep's reporter, TensorBoard. The
trainer's hooks take the Trainer itself, as minGPT's callbacks do: the epoch pictures. Imports
no torch, so the terminal layer can use it without paying for torch at start-up.
"""

from __future__ import annotations

from typing import Any


class Callbacks:
    """Every hook is optional (tests pass none)."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_phase(self, phase: dict[str, Any]) -> None: ...

    def on_progress(self, epoch: int, step: int, steps: int, stats: dict[str, float]) -> None: ...

    def on_epoch(self, metrics: dict[str, Any]) -> None: ...

    def on_warning(self, message: str) -> None: ...

    def on_member_epoch(self, trainer: Any, member: int, metrics: dict[str, Any]) -> None:
        """A member's epoch is recorded (before its checkpoint is written)."""

    def on_member_stop(self, trainer: Any, member: int) -> None:
        """A member stopped early: failed or pruned."""

    def on_finish(self, trainer: Any) -> None:
        """Training ended with its plan done (not on Ctrl-C or an error)."""

    def close(self) -> None: ...


class CallbackGroup(Callbacks):
    """Several callbacks as one, called in order (e.g. pictures before TensorBoard, which
    shows them)."""

    def __init__(self, *members: Callbacks) -> None:
        self.members = members

    def on_start(self, info: dict[str, Any]) -> None:
        for member in self.members:
            member.on_start(info)

    def on_phase(self, phase: dict[str, Any]) -> None:
        for member in self.members:
            member.on_phase(phase)

    def on_progress(self, epoch: int, step: int, steps: int, stats: dict[str, float]) -> None:
        for member in self.members:
            member.on_progress(epoch, step, steps, stats)

    def on_epoch(self, metrics: dict[str, Any]) -> None:
        for member in self.members:
            member.on_epoch(metrics)

    def on_warning(self, message: str) -> None:
        for member in self.members:
            member.on_warning(message)

    def on_member_epoch(self, trainer: Any, member: int, metrics: dict[str, Any]) -> None:
        for callback in self.members:
            callback.on_member_epoch(trainer, member, metrics)

    def on_member_stop(self, trainer: Any, member: int) -> None:
        for callback in self.members:
            callback.on_member_stop(trainer, member)

    def on_finish(self, trainer: Any) -> None:
        for callback in self.members:
            callback.on_finish(trainer)

    def close(self) -> None:
        for member in self.members:
            member.close()
