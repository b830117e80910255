"""Ctrl-C and SIGTERM during training: finish the step, save, then stop."""

from __future__ import annotations

import signal
from typing import Any


class InterruptFlag:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step and save; a
    second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptFlag:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self.previous = {}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested, self.signum = True, signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # The CLI's own SIGTERM handler (it raises Terminated), else the default: terminate.
        previous = self.previous.get(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
