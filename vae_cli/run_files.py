"""The files of one run folder: where each lives, status.json and metrics.jsonl.

Plain files and JSON, no torch: `vae runs`, the trainer and TensorBoard read them alike.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_cli.errors import UserError
from vae_cli.files import append_line, json_object, read_lines, write_atomically

POPULATION_FILE = "population.json"  # marks a population's folder: its members, its summary


@dataclass
class RunPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    def sample_picture(self, epoch: int) -> Path:
        return self.root / "samples" / f"epoch_{epoch:03d}.png"

    def reconstruction_picture(self, epoch: int) -> Path:
        return self.root / "reconstructions" / f"epoch_{epoch:03d}.png"


def write_status(paths: RunPaths, status: str, epoch: int) -> None:
    record = {"status": status, "epoch": epoch, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_atomically(paths.status, (json.dumps(record) + "\n").encode())


def read_status(root: Path) -> str:
    """running, finished, interrupted, failed, pruned, or died (it says running, but no
    trainer holds the folder: killed, or its machine went down); unknown when status.json is
    unreadable."""
    return read_status_record(root)[0]


def read_status_record(root: Path) -> tuple[str, int | None]:
    """The run's status (as read_status) and the last epoch its trainer completed."""
    from vae_cli.lock import trainer_alive

    state = json_object("\n".join(read_lines(root / "status.json"))) or {}
    status = str(state.get("status", "unknown"))
    if status == "running" and not trainer_alive(root):
        status = "died"
    epoch = state.get("epoch")
    return status, epoch if isinstance(epoch, int) else None


def append_metrics(paths: RunPaths, metrics: dict[str, Any]) -> None:
    append_line(paths.metrics, json.dumps(metrics))


def read_metrics(paths: RunPaths) -> list[dict[str, Any]]:
    """metrics.jsonl's records (none when it is missing); a last line cut short (kill -9,
    full disk) is left out."""
    lines = [line for line in read_lines(paths.metrics) if line]
    records = []
    for number, line in enumerate(lines, start=1):
        record = json_object(line)
        if record is not None and isinstance(record.get("epoch"), int):
            records.append(record)
        elif number < len(lines):
            raise UserError(f"{paths.metrics}: line {number} is not an epoch's metrics record")
    return records


def truncate_metrics(paths: RunPaths, completed_epochs: int) -> list[dict[str, Any]]:
    """Drop metric lines of epochs a resumed checkpoint does not include (crash after append)."""
    kept = [m for m in read_metrics(paths) if m["epoch"] <= completed_epochs]
    write_atomically(paths.metrics, "".join(json.dumps(m) + "\n" for m in kept).encode())
    return kept
