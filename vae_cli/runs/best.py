"""Which epoch is "best", and on what it was chosen: the lowest validation value of the bound
being trained, or, for a run without a validation split, simply the last epoch. The test set
is reported, never chosen on.

An ELBO run compares the -ELBO. An IWAE run compares the IWAE bound with its training k, which
an IWAE fine-tune improves while its -ELBO gets worse. A resume that changes the objective (or
k) starts a new phase, and only the latest phase's epochs are compared. Runs trained before the
split existed chose on the test set; their metrics lines say nothing of a choice, and are read
that way. Works on metrics.jsonl lines, so it needs no torch.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

# How an epoch was chosen, as a metrics line's "chosen_on" says.
VALIDATION, LAST, TEST = "validation", "last", "test"
DESCRIPTIONS = {
    VALIDATION: "chosen on the validation split",
    LAST: "the last epoch (no validation split, nothing chosen)",
    TEST: "chosen on the test set (trained before validation splits)",
}


def criterion(objective: str, k: int) -> str:
    """ "elbo" or "iwae-K": the name of what picks the best epoch (and best-<name>.pt)."""
    return "elbo" if objective == "elbo" else f"iwae-{k}"


def selection_criterion(metrics: dict[str, Any]) -> str:
    return criterion("iwae", metrics["test_iwae_k"]) if "test_iwae" in metrics else "elbo"


def chosen_on(metrics: dict[str, Any]) -> str:
    """VALIDATION, LAST or TEST: the rule of the run that wrote this metrics line."""
    return metrics.get("chosen_on", TEST)


def selection_loss(metrics: dict[str, Any]) -> float:
    """The value an epoch is chosen by: its validation bound (its test bound for a run from
    before the split). A run without a split chooses nothing; this is then its test bound,
    for reporting only."""
    prefix = "val" if chosen_on(metrics) == VALIDATION else "test"
    return metrics.get(f"{prefix}_iwae", metrics[f"{prefix}_loss"])


def test_loss(metrics: dict[str, Any]) -> float:
    """What an epoch reports on the test set: the bound being trained (IWAE with its k, or the
    -ELBO)."""
    return metrics.get("test_iwae", metrics["test_loss"])


def phases(history: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive epochs with the same criterion, in order: [(criterion, epochs), ...]."""
    return [(name, list(group)) for name, group in itertools.groupby(history, selection_criterion)]


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics of the chosen epoch of the latest phase (None if none is finite): the lowest
    validation bound, or the last finite epoch of a run without a split."""
    if not history:
        return None
    _, latest = phases(history)[-1]
    candidates = [m for m in latest if math.isfinite(selection_loss(m))]
    if candidates and chosen_on(candidates[-1]) == LAST:
        return candidates[-1]
    return min(candidates, key=selection_loss, default=None)


def describe_choice(metrics: dict[str, Any]) -> str:
    """How the epoch whose line this is was chosen, in words."""
    return DESCRIPTIONS[chosen_on(metrics)]


def describe_checkpoint(epoch: int | None, best: dict[str, Any] | None) -> str:
    """How a checkpoint's epoch was chosen, from its own record of the best epoch: a best.pt
    (or its export) holds the chosen epoch; a last.pt is the latest epoch, whatever was chosen."""
    best = best or {}
    if best.get("epoch") is not None and best["epoch"] == epoch:
        return DESCRIPTIONS[best.get("chosen_on", TEST)]
    return "the latest epoch saved (not a chosen one)"
