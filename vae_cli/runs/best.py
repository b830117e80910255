"""Which epoch is "best": the lowest test value of the bound being trained.

An ELBO run compares the test -ELBO. An IWAE run compares the test IWAE bound with its
training k, which an IWAE fine-tune improves while its -ELBO gets worse. A resume that changes
the objective (or k) starts a new phase, and only the latest phase's epochs are compared.
Works on metrics.jsonl lines, so it needs no torch.
"""

from __future__ import annotations

import itertools
import math
from typing import Any


def criterion(objective: str, k: int) -> str:
    """ "elbo" or "iwae-K": the name of what picks the best epoch (and best-<name>.pt)."""
    return "elbo" if objective == "elbo" else f"iwae-{k}"


def selection_criterion(metrics: dict[str, Any]) -> str:
    return criterion("iwae", metrics["test_iwae_k"]) if "test_iwae" in metrics else "elbo"


def selection_loss(metrics: dict[str, Any]) -> float:
    return metrics.get("test_iwae", metrics["test_loss"])


def phases(history: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive epochs with the same criterion, in order: [(criterion, epochs), ...]."""
    return [(name, list(group)) for name, group in itertools.groupby(history, selection_criterion)]


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics of the best epoch of the latest phase (None if none is finite)."""
    if not history:
        return None
    _, latest = phases(history)[-1]
    candidates = [m for m in latest if math.isfinite(selection_loss(m))]
    return min(candidates, key=selection_loss, default=None)
