"""Non-finite steps: the step skips them on the device; here the host, reading the statistics,
finds what to say about them and when a member has had --max-bad-steps of them in a row."""

from __future__ import annotations

from vae_cli.training.member import Member
from vae_cli.training.state import Progress


def bad_step_news(
    run: Member, now: dict[str, float], before: dict[str, float], progress: Progress
) -> tuple[str | None, str | None]:
    """(a warning about the steps skipped since the last read, why the member must stop) from
    its running sums now and at the last read; None where there is nothing to say."""
    who = f"{run.label}: " if run.label else ""
    skipped = int(now["bad_steps"] - before["bad_steps"])
    warning = (
        f"{who}skipped {skipped} step(s) with a non-finite loss or gradient "
        f"(epoch {progress.epoch + 1}, step {progress.step})"
        if skipped > 0
        else None
    )
    limit = run.config.train.max_bad_steps
    failure = (
        f"{limit} non-finite steps in a row (--max-bad-steps {limit}); training "
        f"stopped, {run.folder.last} holds the last good epoch (try a lower --lr)"
        if now["halted"] or now["bad_streak"] >= limit
        else None
    )
    return warning, failure
