"""A run's metrics.jsonl: one JSON object per epoch, appended and fsynced once per epoch; a
last line cut short by a crash is left out when it is read back."""

from __future__ import annotations

import json
from typing import Any

from vae_cli.errors import UserError
from vae_cli.files import append_line, json_object, read_lines, write_atomically
from vae_cli.runs.folder import RunFolder


def append_metrics(paths: RunFolder, metrics: dict[str, Any]) -> None:
    append_line(paths.metrics, json.dumps(metrics))


def read_metrics(paths: RunFolder) -> list[dict[str, Any]]:
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


def truncate_metrics(paths: RunFolder, completed_epochs: int) -> list[dict[str, Any]]:
    """Drop metric lines of epochs a resumed checkpoint does not include (crash after append)."""
    kept = [m for m in read_metrics(paths) if m["epoch"] <= completed_epochs]
    write_atomically(paths.metrics, "".join(json.dumps(m) + "\n" for m in kept).encode())
    return kept
