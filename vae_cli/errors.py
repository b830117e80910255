"""Exceptions that the CLI turns into one-line messages.

Library code raises these; `cli.py` catches them in one place and prints `Error: …`.
"""

import signal


class UserError(Exception):
    """Bad input from the user (flag, file, folder): exit code 2, no traceback."""


class TrainingFailed(Exception):
    """Training stopped for a reason the user should read, not debug (exit code 1)."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training: the runs were saved and can be resumed (exit code
    128 + the signal's number: 130 or 143). `run_dirs` are what `--resume` takes: one run, a
    population's folder, or each run of a sweep's stack."""

    def __init__(self, run_dirs: list[str], saved: str, signum: int = signal.SIGINT) -> None:
        super().__init__(f"interrupted; saved {saved}")
        self.run_dirs = run_dirs
        self.saved = saved
        self.signum = signum


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a job scheduler's stop): every command cleans up as for
    Ctrl-C, and exits 143."""


class TrainingPruned(Exception):
    """A callback stopped training after an epoch (a sweep's pruner); the run is saved."""
