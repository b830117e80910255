"""Which epoch is "best": the lowest test value of the bound being trained.

An ELBO run compares the test -ELBO. An IWAE run compares the test IWAE bound with its
training k, which an IWAE fine-tune improves while its -ELBO gets worse. Epochs measured by
another criterion (before a resume changed the objective) are not compared with later ones.
Works on metrics.jsonl lines, so it needs no torch.
"""

from __future__ import annotations

import math
from typing import Any


def selection_criterion(metrics: dict[str, Any]) -> str:
    return f"iwae-{metrics['test_iwae_k']}" if "test_iwae" in metrics else "elbo"


def selection_loss(metrics: dict[str, Any]) -> float:
    return metrics.get("test_iwae", metrics["test_loss"])


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics of the best epoch under the latest epoch's criterion (None if none is)."""
    if not history:
        return None
    criterion = selection_criterion(history[-1])
    candidates = [
        m
        for m in history
        if selection_criterion(m) == criterion and math.isfinite(selection_loss(m))
    ]
    return min(candidates, key=selection_loss, default=None)
