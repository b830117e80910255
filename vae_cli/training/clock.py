"""Training time: one clock, read where the host already waits for the device.

On a GPU the host runs ahead of the device, so time taken around a step's launch measures
launches, not training. The clock adds the time between two sync points (on the CPU every
step returns synchronously; on a GPU the reads of the statistics wait for the device), so it
counts the training done, waits included. Compilation and CUDA graph capture are timed once
each, apart, and never counted as training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vae_cli.training.state import Progress


class TrainingClock:
    """Adds training time to `progress.seconds`, the one place it is kept."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or Progress()
        self.setup = {"compile_seconds": 0.0, "capture_seconds": 0.0}
        self.setup_images = 0.0  # images trained by steps timed as setup (a compiling step)
        self.mark: float | None = None  # None while not training (epoch-end bookkeeping)

    def start(self) -> None:
        self.mark = time.perf_counter()

    def synced(self) -> None:
        """The device has done all work launched so far: count the time since the last mark."""
        if self.mark is not None:
            now = time.perf_counter()
            self.progress.seconds += now - self.mark
            self.mark = now

    def stop(self) -> None:
        """At a sync point, before the epoch's bookkeeping (not training)."""
        self.synced()
        self.mark = None

    @contextmanager
    def setup_time(
        self, kind: str, synchronize: Callable[[], None], images: float = 0.0
    ) -> Iterator[None]:
        """Time a compilation or capture apart: work launched before it counts as training,
        the setup's own time (and the images of a step inside it) do not."""
        synchronize()
        self.synced()
        started = time.perf_counter()
        yield
        synchronize()
        now = time.perf_counter()
        self.setup[kind] += now - started
        self.setup_images += images
        if self.mark is not None:
            self.mark = now
