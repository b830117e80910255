"""`vae runs`: what each run folder says of itself (epochs, the test loss of its best.pt and how
that epoch was chosen, model, status),
a population's members as NAME/MEMBER."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vae_cli.config.settings import Config, describe_model
from vae_cli.config.toml import load_config
from vae_cli.errors import UserError
from vae_cli.files import json_object, read_lines
from vae_cli.runs.best import best_epoch, chosen_on, test_loss
from vae_cli.runs.folder import POPULATION_FILE


@dataclass
class RunSummary:
    name: str
    started: float  # when config.toml was written (seconds since the epoch)
    epochs_done: int
    epochs_planned: int | None  # every phase's epochs; None when a time budget ends a phase
    best_test_loss: float | None  # the test bound at the epoch best.pt holds
    chosen_on: str | None  # how that epoch was chosen (runs/best.py), None before one
    binarize: str
    model: str  # its shape in words, e.g. "2 layers 100-50, skip, VampPrior K=500"
    status: str

    @property
    def when(self) -> str:
        """ "23:45" for a run started today, "12-06" for an older one (as `ls -l` shortens)."""
        started, today = time.localtime(self.started), time.localtime()
        same_day = started[:3] == today[:3]
        return time.strftime("%H:%M" if same_day else "%m-%d", started)

    @property
    def epochs(self) -> str:
        """e.g. "3/3", or "412 (time budget)" when a time budget, not a count, ends a phase."""
        if self.epochs_planned is None:
            return f"{self.epochs_done} (time budget)"
        return f"{self.epochs_done}/{self.epochs_planned}"


def planned_epochs(config: Config) -> int | None:
    """The epochs of every phase together; None when some phase is ended by its time budget
    (its epoch count is then only an upper bound, or none at all)."""
    phases = [config.phase(index).train for index in range(len(config.phases) + 1)]
    if any(train.time_budget for train in phases):
        return None
    return sum(train.epochs for train in phases)


def summarize_run(root: Path) -> RunSummary | None:
    """What `vae runs` shows of one folder, or None when it is not a run."""
    from vae_cli.runs.status import read_status

    if not (root / "config.toml").is_file():
        return None
    try:
        config = load_config(root / "config.toml")
    except UserError:
        return None
    # A line cut by a crash, or a file edited by hand, is skipped rather than fatal.
    lines = read_lines(root / "metrics.jsonl")
    metrics = [m for m in map(json_object, lines) if m and isinstance(m.get("epoch"), int)]
    scored = [m for m in metrics if isinstance(m.get("test_loss"), float)]
    best = best_epoch(scored)
    return RunSummary(
        name=root.name,
        started=(root / "config.toml").stat().st_mtime,
        epochs_done=max((m["epoch"] for m in metrics), default=0),
        epochs_planned=planned_epochs(config),
        best_test_loss=test_loss(best) if best else None,
        chosen_on=chosen_on(best) if best else None,
        binarize=config.data.binarize,
        model=describe_model(config.model),
        status=read_status(root),
    )


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run folder, a population's members as NAME/MEMBER."""
    if not runs_dir.is_dir():
        return []
    summaries = []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if (folder / POPULATION_FILE).is_file():
            for member in sorted(p for p in folder.iterdir() if p.is_dir()):
                summary = summarize_run(member)
                if summary is not None:
                    summary.name = f"{folder.name}/{member.name}"
                    summaries.append(summary)
        elif (summary := summarize_run(folder)) is not None:
            summaries.append(summary)
    return summaries
