"""`vae tune`: a hyperparameter sweep on Optuna, each trial an ordinary run folder, one at a
time or --parallel N in stacked steps.

Imported only by the `tune` command (Optuna is heavy); the study and its storage live in
study.py, the trials' reporting and heartbeats in trials.py.
"""

from __future__ import annotations

import math
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from vae_cli.commands.study import (
    default_storage,
    open_storage,
    open_study,
    save_plots,
    summarize_study,
)
from vae_cli.commands.trials import AskedTrials, TrialReporter
from vae_cli.config.search import Dimension, format_param
from vae_cli.config.settings import Config, rule
from vae_cli.config.values import show_value
from vae_cli.errors import TrainingFailed, TrainingInterrupted, UserError
from vae_cli.files import make_folder
from vae_cli.runs.best import best_epoch, selection_loss
from vae_cli.runs.folder import RunFolder
from vae_cli.training.callbacks import Callbacks
from vae_cli.training.member import Member

if TYPE_CHECKING:
    import torch

    from vae_cli.data.dataset import Dataset


@dataclass
class Sweep:
    """What one `vae tune` invocation needs to run trials."""

    config: Config
    space: list[Dimension]
    study_dir: Path
    data_dir: Path | None
    command: str
    # display(label, run_dir=, epochs=, binarize=) -> the Callbacks that show a trial's (or a
    # stack's) progress; the library draws nothing itself.
    display: Callable[..., Callbacks]
    dataset: Dataset | None = None  # read once, shared by every trial of this worker
    device: torch.device | None = None  # resolved once, shared likewise
    notify: Callable[[str], None] = lambda line: None  # a line per trial as it ends
    warn: Callable[[str], None] = lambda message: None


def suggest(trial: optuna.Trial, dimension: Dimension) -> Any:
    if dimension.kind == "choice" and isinstance(dimension.choices[0], tuple):
        # Optuna's choices are plain values: a per-layer list goes as "64,32" and back.
        shown = [show_value(choice) for choice in dimension.choices]
        return dimension.choices[shown.index(trial.suggest_categorical(dimension.name, shown))]
    if dimension.kind == "choice":
        return trial.suggest_categorical(dimension.name, list(dimension.choices))
    if dimension.kind == "int":
        return trial.suggest_int(
            dimension.name,
            int(dimension.low),
            int(dimension.high),
            step=int(dimension.step or 1),
            log=dimension.log,
        )
    return trial.suggest_float(
        dimension.name, dimension.low, dimension.high, step=dimension.step, log=dimension.log
    )


def run_in_stacks(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    sweep: Sweep,
    trials: int,
    parallel: int,
    timeout: float | None,
) -> None:
    """Ask Optuna for `parallel` trials at a time (one, without --parallel) and train those
    that share a shape in one stacked step (trials that differ in shape: one stack after
    another); every trial is still its own run folder and Optuna trial, told its own value or
    pruning. One trial is a stack of one: there is no other path."""
    started, done = time.monotonic(), 0
    while done < trials and (timeout is None or time.monotonic() - started < timeout):
        with warnings.catch_warnings():  # experimental API; heartbeats "meant for optimize"
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)  # as study.optimize does before a trial
            asked = [study.ask() for _ in range(min(parallel, trials - done))]
        with AskedTrials(study, storage, asked, warn=sweep.warn) as batch:
            drawn = [(trial, {d.name: suggest(trial, d) for d in sweep.space}) for trial in asked]
            for stack in group_by_shape(drawn, sweep.config):
                train_trial_stack(batch, sweep, stack)
        done += len(asked)


def group_by_shape(
    drawn: list[tuple[optuna.Trial, dict[str, Any]]], config: Config
) -> list[list[tuple[optuna.Trial, dict[str, Any]]]]:
    """Trials whose settings differ only in what does not change tensor shapes (lr, beta,
    seed, …: the per-member settings) train together."""
    import json

    stacks: dict[str, list[tuple[optuna.Trial, dict[str, Any]]]] = {}
    for trial, params in drawn:
        shape = config.replace(params).to_dict()
        shape["train"] = {k: v for k, v in shape["train"].items() if not rule(k, "per_member")}
        stacks.setdefault(json.dumps(shape, sort_keys=True), []).append((trial, params))
    return list(stacks.values())


def train_trial_stack(
    batch: AskedTrials, sweep: Sweep, stack: list[tuple[optuna.Trial, dict[str, Any]]]
) -> None:
    """Train one stack of trials and tell Optuna how each ended (their heartbeats beat from
    the moment they were asked: see AskedTrials)."""
    from vae_cli.commands.stack import train_members

    members = []
    for trial, params in stack:
        root = sweep.study_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(root.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        config = sweep.config.replace(params)
        reporter = TrialReporter(trial)
        label = root.name if len(stack) > 1 else ""  # a lone trial's lines need no name
        members.append(Member(config, RunFolder(root), callbacks=reporter, label=label))
    states, failure = None, ""
    numbers = ", ".join(str(trial.number) for trial, _ in stack)
    named = "trials" if len(stack) > 1 else "trial"
    batch.started += [trial for trial, _ in stack]
    try:
        states = train_members(
            members,
            data_dir=sweep.data_dir,
            dataset=sweep.dataset,
            device=sweep.device,
            command=f"{sweep.command}  # {named} {numbers}",
            display=lambda **kw: sweep.display(f"{named} {numbers}", **kw),
        )
    except TrainingInterrupted:
        for trial, _ in stack:
            batch.tell(trial, "interrupted", state=optuna.trial.TrialState.FAIL)
        raise
    except TrainingFailed as error:  # every member diverged: the sweep goes on
        failure = str(error)
    for index, ((trial, params), run) in enumerate(zip(stack, members, strict=True)):
        status = "failed" if states is None else states[index].status
        if status == "pruned":
            batch.tell(trial, status, state=optuna.trial.TrialState.PRUNED)
            report_trial(sweep, trial, "pruned", None, params, run.folder.root)
            continue
        best = best_epoch(states[index].history) if states is not None else None
        value = selection_loss(best) if best is not None else math.nan
        if status == "failed" or not math.isfinite(value):
            error = failure if states is None else "non-finite steps"
            batch.tell(trial, "failed", state=optuna.trial.TrialState.FAIL, error=error)
            report_trial(sweep, trial, "failed", None, params, run.folder.root)
            continue
        batch.tell(trial, status, value=value)
        report_trial(sweep, trial, "complete", value, params, run.folder.root)


def report_trial(
    sweep: Sweep,
    trial: optuna.Trial,
    state: str,
    value: float | None,
    params: dict[str, Any],
    root: Path,
) -> None:
    """The trial's line, through the sweep's notify (the library prints nothing)."""
    shown = " ".join(f"{k}={format_param(v)}" for k, v in params.items())
    score = f"value {value:.3f}" if value is not None else ""
    sweep.notify(f"trial {trial.number:>4}  {state:<8} {score:<14} {shown}  {root}")


def tune(
    sweep: Sweep,
    storage_url: str | None,
    study_name: str,
    *,
    trials: int,
    timeout_minutes: float | None,
    pruner: str,
    seed: int | None,
    summary_only: bool,
    parallel: int = 1,
) -> dict[str, Any]:
    """Run `trials` more trials of the study (none with summary_only); return its summary."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial prints its own line
    if storage_url is None:
        if not (sweep.study_dir / "study.db").is_file():
            if summary_only:
                raise UserError(
                    f"{sweep.study_dir}: no study.db yet; run vae tune without --summary"
                )
            if any(sweep.study_dir.glob("trial-*")):  # e.g. study.db deleted, folders kept
                raise UserError(
                    f"{sweep.study_dir} holds trial folders but no study.db; pick another "
                    "--study or --runs-dir, or remove the old trial folders"
                )
        make_folder(sweep.study_dir, "study folder")
        storage_url = default_storage(sweep.study_dir)
    storage = open_storage(storage_url)
    study = open_study(storage, study_name, pruner=pruner, seed=seed, create=not summary_only)
    if not summary_only:
        check_trial_folders(study, sweep.study_dir)
        make_folder(sweep.study_dir, "study folder")
        timeout = timeout_minutes * 60 if timeout_minutes else None
        run_in_stacks(study, storage, sweep, trials, parallel, timeout)
    plots = save_plots(study, sweep.study_dir)
    return summarize_study(study, plots, storage_url)


def check_trial_folders(study: optuna.Study, study_dir: Path) -> None:
    """Every trial folder must be one of this study's trials: a same-named study in another
    storage numbers its trials from 0 too, and would collide with them halfway through."""
    known = {trial.number for trial in study.get_trials(deepcopy=False)}
    for folder in sorted(study_dir.glob("trial-*")):
        number = folder.name.removeprefix("trial-")
        if not (number.isdigit() and int(number) in known):
            raise UserError(
                f"{folder} is not a trial of study {study.study_name!r} in this storage "
                "(a study of the same name in another --storage?); pick another --study or "
                "--runs-dir, or remove the old trial folders"
            )
