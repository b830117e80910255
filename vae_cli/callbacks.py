"""Hooks through which training reports progress; the library never prints.

The CLI passes a display, `vae tune` a trial reporter, `--tensorboard` an event writer. Imports
no torch, so the terminal layer can use it without paying for torch at start-up.
"""

from __future__ import annotations

from typing import Any


class Callbacks:
    """Progress hooks; every one is optional (tests pass none)."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_phase(self, phase: dict[str, Any]) -> None: ...

    def on_progress(self, epoch: int, step: int, steps: int, stats: dict[str, float]) -> None: ...

    def on_epoch(self, metrics: dict[str, Any]) -> None: ...

    def on_warning(self, message: str) -> None: ...

    def close(self) -> None: ...


class CallbackGroup(Callbacks):
    """Several callbacks as one (e.g. the progress display and TensorBoard)."""

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

    def close(self) -> None:
        for member in self.members:
            member.close()
