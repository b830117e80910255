"""Non-finite steps: the step skips them on the device; here the host, reading the statistics,
warns about them and fails a member after --max-bad-steps of them in a row."""

from __future__ import annotations

from typing import Any


def check_bad_steps(
    trainer: Any, current: list[dict[str, float]], last_read: list[dict[str, float]]
) -> None:
    """Warn about the skipped steps since the last read; a member stops after --max-bad-steps
    of them in a row (a single run: training stops with an error)."""
    progress = trainer.progress
    for member in trainer.members_training():
        run, now = trainer.members[member], current[member]
        who = f"{run.label}: " if run.label else ""
        skipped = int(now["bad_steps"] - last_read[member]["bad_steps"])
        if skipped > 0:
            trainer.callbacks.on_warning(
                f"{who}skipped {skipped} step(s) with a non-finite loss or gradient "
                f"(epoch {progress.epoch + 1}, step {progress.step})"
            )
        limit = run.config.train.max_bad_steps
        if now["halted"] or now["bad_streak"] >= limit:
            trainer.fail_member(
                member,
                f"{limit} non-finite steps in a row (--max-bad-steps {limit}); training "
                f"stopped, {run.folder.last} holds the last good epoch (try a lower --lr)",
            )
