"""Hooks the training loop calls, each with one event (events.py); the library never prints.

The CLI's bars and lines, a sweep's pruner, TensorBoard and the epoch pictures are all
callbacks of this one kind. Imports no torch, so the terminal layer can use it without paying
for torch at start-up.
"""

from __future__ import annotations

from vae_cli.training.events import (
    EpochEnded,
    MemberStopped,
    PhaseStarted,
    RunStarted,
    StepProgress,
    TrainingFinished,
    TrainingWarning,
)


class Callbacks:
    """Every hook is optional (tests pass none)."""

    def on_start(self, event: RunStarted) -> None: ...

    def on_phase(self, event: PhaseStarted) -> None: ...

    def on_progress(self, event: StepProgress) -> None: ...

    def on_epoch(self, event: EpochEnded) -> None:
        """A member's epoch is recorded (before its checkpoint is written); a sweep's pruner
        may raise TrainingPruned here."""

    def on_warning(self, event: TrainingWarning) -> None: ...

    def on_member_stop(self, event: MemberStopped) -> None:
        """A member stopped early: failed or pruned."""

    def on_finish(self, event: TrainingFinished) -> None:
        """Training ended with its plan done (not on Ctrl-C or an error)."""

    def close(self) -> None: ...


class CallbackGroup(Callbacks):
    """Several callbacks as one, called in order (e.g. pictures before TensorBoard, which
    shows them)."""

    def __init__(self, *callbacks: Callbacks) -> None:
        self.callbacks = callbacks

    def on_start(self, event: RunStarted) -> None:
        for callback in self.callbacks:
            callback.on_start(event)

    def on_phase(self, event: PhaseStarted) -> None:
        for callback in self.callbacks:
            callback.on_phase(event)

    def on_progress(self, event: StepProgress) -> None:
        for callback in self.callbacks:
            callback.on_progress(event)

    def on_epoch(self, event: EpochEnded) -> None:
        for callback in self.callbacks:
            callback.on_epoch(event)

    def on_warning(self, event: TrainingWarning) -> None:
        for callback in self.callbacks:
            callback.on_warning(event)

    def on_member_stop(self, event: MemberStopped) -> None:
        for callback in self.callbacks:
            callback.on_member_stop(event)

    def on_finish(self, event: TrainingFinished) -> None:
        for callback in self.callbacks:
            callback.on_finish(event)

    def close(self) -> None:
        for callback in self.callbacks:
            callback.close()
