"""Exceptions that the CLI turns into one-line messages.

Library code raises these; `cli.py` catches them in one place and prints `Error: …`.
"""


class UserError(Exception):
    """Bad input from the user (flag, file, folder): exit code 2, no traceback."""


class TrainingFailed(Exception):
    """Training stopped for a reason the user should read, not debug (exit code 1)."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the run was saved and can be resumed (exit code 130)."""

    def __init__(self, run_dir: str, checkpoint: str) -> None:
        super().__init__(f"interrupted; saved {checkpoint}")
        self.run_dir = run_dir
        self.checkpoint = checkpoint


class TrainingPruned(Exception):
    """A callback stopped training after an epoch (a sweep's pruner); the run is saved."""
