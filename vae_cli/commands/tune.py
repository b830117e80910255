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
from typing import Any

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
from vae_cli.errors import TrainingFailed, TrainingInterrupted, TrainingPruned, UserError
from vae_cli.files import make_folder
from vae_cli.runs.best import best_epoch, selection_loss
from vae_cli.runs.folder import RunFolder
from vae_cli.training.callbacks import Callbacks
from vae_cli.training.member import Member


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
    dataset: Any = None  # read once, shared by every trial of this worker


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


def run_trial(trial: optuna.Trial, sweep: Sweep) -> float:
    """Train one trial's run folder; its value is the run's best validation bound."""
    from vae_cli.commands.stack import train_members

    params = {dimension.name: suggest(trial, dimension) for dimension in sweep.space}
    config = sweep.config.replace(params)
    root = sweep.study_dir / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(root.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    member = Member(config, RunFolder(root), callbacks=TrialReporter(trial))
    try:
        (state,) = train_members(
            [member],
            data_dir=sweep.data_dir,
            dataset=sweep.dataset,
            command=f"{sweep.command}  # trial {trial.number}",
            display=lambda **kw: sweep.display(f"trial {trial.number}", **kw),
        )
        if state.status == "pruned":
            raise TrainingPruned(f"pruned after epoch {state.progress.epoch}")
    except TrainingPruned:
        trial.set_user_attr("status", "pruned")
        print_trial(trial, "pruned", None, params, root)
        raise optuna.TrialPruned() from None
    except TrainingInterrupted:
        trial.set_user_attr("status", "interrupted")
        raise
    except TrainingFailed as error:  # e.g. non-finite steps at a bad lr: the sweep goes on
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("error", str(error))
        print_trial(trial, "failed", None, params, root)
        return math.nan
    best = best_epoch(state.history)
    value = selection_loss(best) if best is not None else math.nan
    trial.set_user_attr("status", "finished")
    print_trial(trial, "complete", value, params, root)
    return value


def run_in_stacks(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    sweep: Sweep,
    trials: int,
    parallel: int,
    timeout: float | None,
) -> None:
    """--parallel N: ask Optuna for N trials at a time and train those that share a shape in
    one stacked step (trials that differ in shape: one stack after another); every trial is
    still its own run folder and Optuna trial, told its own value or pruning."""
    started, done = time.monotonic(), 0
    while done < trials and (timeout is None or time.monotonic() - started < timeout):
        with warnings.catch_warnings():  # experimental API; heartbeats "meant for optimize"
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)  # as study.optimize does before a trial
            asked = [study.ask() for _ in range(min(parallel, trials - done))]
        with AskedTrials(study, storage, asked) as batch:
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
        members.append(Member(config, RunFolder(root), callbacks=reporter, label=root.name))
    states, failure = None, ""
    numbers = ", ".join(str(trial.number) for trial, _ in stack)
    batch.started += [trial for trial, _ in stack]
    try:
        states = train_members(
            members,
            data_dir=sweep.data_dir,
            dataset=sweep.dataset,
            command=f"{sweep.command}  # trials {', '.join(m.label for m in members)}",
            display=lambda **kw: sweep.display(f"trials {numbers}", **kw),
        )
    except TrainingInterrupted:
        for trial, _ in stack:
            batch.tell(trial, "interrupted", state=optuna.trial.TrialState.FAIL)
        raise
    except TrainingFailed as error:  # every member diverged: the sweep goes on
        failure = str(error)
    for index, ((trial, params), member) in enumerate(zip(stack, members, strict=True)):
        status = "failed" if states is None else states[index].status
        if status == "pruned":
            batch.tell(trial, status, state=optuna.trial.TrialState.PRUNED)
            print_trial(trial, "pruned", None, params, member.folder.root)
            continue
        best = best_epoch(states[index].history) if states is not None else None
        value = selection_loss(best) if best is not None else math.nan
        if status == "failed" or not math.isfinite(value):
            error = failure if states is None else "non-finite steps"
            batch.tell(trial, "failed", state=optuna.trial.TrialState.FAIL, error=error)
            print_trial(trial, "failed", None, params, member.folder.root)
            continue
        batch.tell(trial, status, value=value)
        print_trial(trial, "complete", value, params, member.folder.root)


def print_trial(
    trial: optuna.Trial, state: str, value: float | None, params: dict[str, Any], root: Path
) -> None:
    shown = " ".join(f"{k}={format_param(v)}" for k, v in params.items())
    score = f"value {value:.3f}" if value is not None else ""
    print(f"trial {trial.number:>4}  {state:<8} {score:<14} {shown}  {root}", flush=True)


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
        if parallel > 1:
            run_in_stacks(study, storage, sweep, trials, parallel, timeout)
        else:
            study.optimize(lambda trial: run_trial(trial, sweep), n_trials=trials, timeout=timeout)
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
