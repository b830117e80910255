"""A run's status.json: running, finished, interrupted, failed or pruned, and the last epoch
completed; a run that says running while no trainer holds its folder reads as died."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vae_cli.files import json_object, read_lines, write_atomically
from vae_cli.runs.folder import RunFolder


def write_status(paths: RunFolder, status: str, epoch: int) -> None:
    record = {"status": status, "epoch": epoch, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_atomically(paths.status, (json.dumps(record) + "\n").encode())


def read_status(root: Path) -> str:
    """running, finished, interrupted, failed, pruned, or died (it says running, but no
    trainer holds the folder: killed, or its machine went down); unknown when status.json is
    unreadable."""
    return read_status_record(root)[0]


def read_status_record(root: Path) -> tuple[str, int | None]:
    """The run's status (as read_status) and the last epoch its trainer completed."""
    from vae_cli.runs.lock import trainer_alive

    state = json_object("\n".join(read_lines(root / "status.json"))) or {}
    status = str(state.get("status", "unknown"))
    if status == "running" and not trainer_alive(root):
        status = "died"
    epoch = state.get("epoch")
    return status, epoch if isinstance(epoch, int) else None
