"""One run to train in a stack, as the loop is handed it. Plain data (no torch), so that the
commands that assemble members check every flag before torch loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vae_cli.config.settings import Config
from vae_cli.runs.folder import RunFolder
from vae_cli.training.callbacks import Callbacks


@dataclass
class Member:
    """One run to train in a stack: its settings, its folder, the checkpoint it resumes from
    (None: a new run), its own callbacks (TensorBoard, a sweep's reporter) and its name among
    the stack's members."""

    config: Config
    folder: RunFolder
    checkpoint: dict[str, Any] | None = None
    callbacks: Callbacks = field(default_factory=Callbacks)
    label: str = ""
