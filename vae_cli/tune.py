"""`vae tune`: a hyperparameter sweep on Optuna, each trial an ordinary run folder.

Optuna's relational storage holds the study: a SQLite file for one machine, or any database
SQLAlchemy reaches (e.g. PostgreSQL) for workers on many machines. Heartbeats let the others
mark a killed worker's trial failed. Imported only by the `tune` command (Optuna is heavy).
"""

from __future__ import annotations

import io
import math
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from vae_cli.callbacks import Callbacks
from vae_cli.config import Config
from vae_cli.errors import TrainingFailed, TrainingInterrupted, TrainingPruned, UserError
from vae_cli.files import make_folder, write_atomically
from vae_cli.runs import check_folder_name
from vae_cli.search import Dimension, format_param
from vae_cli.selection import best_epoch, selection_loss

HEARTBEAT_SECONDS = 10  # a running trial's worker writes a heartbeat this often
GRACE_SECONDS = 60  # a trial with no heartbeat for this long is marked failed by the others
SQLITE_LOCK_TIMEOUT_SECONDS = 60  # concurrent local workers wait for the file's lock
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the results
SCHEMA_ATTEMPTS = 5


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


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def masked(url: str) -> str:
    """The URL with any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable as a URL: mask what looks like user:password@
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats; a bad or unreachable URL is a UserError."""
    import sqlalchemy.exc

    try:
        return create_storage(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise UserError(
            f"--storage {masked(url)}: cannot open the study storage ({reason})"
        ) from None


def create_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage; workers that start together race to create its tables, and the
    losers retry and find them made."""
    import sqlalchemy.exc

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_SECONDS}}
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
        except sqlalchemy.exc.SQLAlchemyError as error:
            # The race shows as a duplicate key (PostgreSQL), "table ... already exists" or a
            # locked file (SQLite); anything else is a real error.
            raced = isinstance(error, sqlalchemy.exc.IntegrityError) or any(
                sign in str(error) for sign in ("already exists", "database is locked")
            )
            if not raced or attempt == SCHEMA_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


def open_study(
    storage: optuna.storages.RDBStorage,
    name: str,
    *,
    pruner: str,
    seed: int | None,
    create: bool,
) -> optuna.Study:
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    chosen_pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3)  # from epoch 1
        if pruner == "median"
        else optuna.pruners.NopPruner()
    )
    if not create:
        try:
            return optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=chosen_pruner
            )
        except KeyError:
            raise UserError(f"--study {name}: no such study in the storage yet") from None
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=chosen_pruner,
        direction="minimize",
        load_if_exists=True,
    )


def suggest(trial: optuna.Trial, dimension: Dimension) -> Any:
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


class TrialReporter(Callbacks):
    """Reports each epoch's test value to the trial and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch(self, metrics: dict[str, Any]) -> None:
        value = selection_loss(metrics)
        self.trial.set_user_attr("epochs", metrics["epoch"])
        if math.isfinite(value):
            self.trial.report(value, metrics["epoch"])
            if self.trial.should_prune():
                raise TrainingPruned(f"pruned after epoch {metrics['epoch']}")


def run_trial(trial: optuna.Trial, sweep: Sweep) -> float:
    """Train one trial's run folder; its value is the best test bound of the run."""
    from vae_cli.session import run_training

    params = {dimension.name: suggest(trial, dimension) for dimension in sweep.space}
    config = sweep.config.replace(params)
    root = sweep.study_dir / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(root.resolve()))
    trial.set_user_attr("host", socket.gethostname())
    try:
        history, _ = run_training(
            config,
            root,
            None,
            data_dir=sweep.data_dir,
            dataset=sweep.dataset,
            command=f"{sweep.command}  # trial {trial.number}",
            display=lambda **kw: sweep.display(f"trial {trial.number}", **kw),
            reporter=TrialReporter(trial),
        )
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
    best = best_epoch(history)
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
    seed, …: PER_MEMBER_KEYS) train together."""
    import json

    from vae_cli.config import PER_MEMBER_KEYS

    stacks: dict[str, list[tuple[optuna.Trial, dict[str, Any]]]] = {}
    for trial, params in drawn:
        shape = config.replace(params).to_dict()
        shape["train"] = {k: v for k, v in shape["train"].items() if k not in PER_MEMBER_KEYS}
        stacks.setdefault(json.dumps(shape, sort_keys=True), []).append((trial, params))
    return list(stacks.values())


def train_trial_stack(
    batch: AskedTrials, sweep: Sweep, stack: list[tuple[optuna.Trial, dict[str, Any]]]
) -> None:
    """Train one stack of trials and tell Optuna how each ended (their heartbeats beat from
    the moment they were asked: see AskedTrials)."""
    from vae_cli.session import RunSpec, train_stack

    specs = []
    for trial, params in stack:
        root = sweep.study_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(root.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        reporter = TrialReporter(trial)
        config = sweep.config.replace(params)
        specs.append(RunSpec(config, root, label=root.name, reporter=reporter))
    states, failure = None, ""
    numbers = ", ".join(str(trial.number) for trial, _ in stack)
    batch.started += [trial for trial, _ in stack]
    try:
        states = train_stack(
            specs,
            data_dir=sweep.data_dir,
            dataset=sweep.dataset,
            command=f"{sweep.command}  # trials {', '.join(s.label for s in specs)}",
            display=lambda **kw: sweep.display(f"trials {numbers}", **kw),
        )
    except TrainingInterrupted:
        for trial, _ in stack:
            batch.tell(trial, "interrupted", state=optuna.trial.TrialState.FAIL)
        raise
    except TrainingFailed as error:  # every member diverged: the sweep goes on
        failure = str(error)
    for index, ((trial, params), spec) in enumerate(zip(stack, specs, strict=True)):
        status = "failed" if states is None else states[index].status
        if status == "pruned":
            batch.tell(trial, status, state=optuna.trial.TrialState.PRUNED)
            print_trial(trial, "pruned", None, params, spec.root)
            continue
        best = best_epoch(states[index].history) if states is not None else None
        value = selection_loss(best) if best is not None else math.nan
        if status == "failed" or not math.isfinite(value):
            error = failure if states is None else "non-finite steps"
            batch.tell(trial, "failed", state=optuna.trial.TrialState.FAIL, error=error)
            print_trial(trial, "failed", None, params, spec.root)
            continue
        batch.tell(trial, status, value=value)
        print_trial(trial, "complete", value, params, spec.root)


class AskedTrials:
    """The trials a --parallel worker asked for at once. Each one's heartbeat beats from the
    ask (Optuna's stale-trial check passes over a trial that never had one), so if the worker
    is killed, another fails them all; each is told once; and whatever is still untold when the
    worker stops (Ctrl-C in an earlier stack, any error) is failed here, never left RUNNING."""

    def __init__(
        self, study: optuna.Study, storage: optuna.storages.RDBStorage, trials: list[optuna.Trial]
    ) -> None:
        self.study, self.untold = study, list(trials)
        self.started: list[optuna.Trial] = []  # those whose stack began to train
        self.heartbeats = Heartbeats(storage, self.untold)

    def __enter__(self) -> AskedTrials:
        self.heartbeats.__enter__()
        return self

    def tell(
        self,
        trial: optuna.Trial,
        status: str,
        *,
        value: float | None = None,
        state: optuna.trial.TrialState | None = None,
        error: str = "",
    ) -> None:
        """Record how the trial's run ended and tell Optuna; a trial another worker already
        failed (its heartbeats stopped for over GRACE_SECONDS) keeps that end, with a warning."""
        self.heartbeats.forget(trial)
        if trial in self.untold:
            self.untold.remove(trial)
        try:
            trial.set_user_attr("status", status)
            if error:
                trial.set_user_attr("error", error)
            self.study.tell(trial, value, state=state)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            print(
                f"Warning: trial {trial.number} was already ended by another worker (its "
                f"heartbeats stopped for over {GRACE_SECONDS} s); its run ended {status}",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        for trial in list(self.untold):
            if trial in self.started:  # its stack raised: e.g. a disk or storage error
                self.tell(trial, "failed", state=optuna.trial.TrialState.FAIL, error=repr(error))
            else:  # asked for a stack that never started
                self.tell(trial, "not started", state=optuna.trial.TrialState.FAIL)
        self.heartbeats.__exit__()


class Heartbeats:
    """A thread recording a heartbeat for each trial still running, as study.optimize does for
    its one trial: another worker fails them once they stop (a killed worker). A storage error
    in a beat is retried at the next beat and reported once, instead of ending the thread (the
    other workers would then fail live trials)."""

    def __init__(self, storage: optuna.storages.RDBStorage, trials: list[optuna.Trial]) -> None:
        import threading

        self.storage, self.trials = storage, list(trials)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)
        self.failed = False

    def forget(self, trial: optuna.Trial) -> None:
        with self.lock:
            if trial in self.trials:
                self.trials.remove(trial)

    def beat(self) -> None:
        while True:
            with self.lock:
                beating = list(self.trials)
            try:
                for trial in beating:
                    self.storage.record_heartbeat(trial_id(trial))
            except Exception as error:  # the database is away for a moment: try again
                if not self.failed:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    print(
                        f"Warning: a trial heartbeat could not be recorded ({first}); "
                        f"retrying every {HEARTBEAT_SECONDS} s",
                        file=sys.stderr,
                        flush=True,
                    )
                self.failed = True
            if self.stop.wait(HEARTBEAT_SECONDS):
                return

    def __enter__(self) -> Heartbeats:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a trial, which record_heartbeat takes (Optuna has no public name
    for it: study.optimize uses the same attribute)."""
    return trial._trial_id


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


def summarize_study(study: optuna.Study, plots: list[str], storage_url: str) -> dict[str, Any]:
    """The best trials first, then the study's counts, the plots and how to reproduce the best."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    complete = [t for t in complete if math.isfinite(t.value)]
    ranked = sorted(complete, key=lambda t: t.value)
    rows = [trial_row(t) for t in ranked[:10]]
    best = ranked[0] if ranked else None
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return {
        "study": study.study_name,
        "storage": masked(storage_url),
        "counts": counts,
        "rows": rows,
        "best_run": best.user_attrs.get("run_dir") if best else None,
        "best_host": best.user_attrs.get("host") if best else None,
        "reproduce": reproduce_command(Path(best.user_attrs["run_dir"]))
        if best and "run_dir" in best.user_attrs
        else None,
        "plots": plots,
    }


def reproduce_command(run_dir: Path) -> str:
    """`vae train` of a trial's config, on the data the sweep used: it works as printed in a
    shell without VAE_DATA_DIR."""
    import shlex

    from vae_cli.runs import recorded_data_dir

    command = f"vae train --config {shlex.quote(str(run_dir / 'config.toml'))}"
    data_dir = recorded_data_dir(run_dir)
    return command + (f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else "")


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "params": dict(trial.params),
        "value": trial.value,
        "epochs": trial.user_attrs.get("epochs"),
        "state": trial.state.name.lower(),
    }


def save_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Optuna's matplotlib history and importance plots, where there are trials enough."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    wanted = [("optimization_history.png", optuna_plots.plot_optimization_history, 1)]
    wanted.append(("param_importances.png", optuna_plots.plot_param_importances, 2))
    written = []
    for name, plot, needed in wanted:
        if len(complete) < needed:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental API; degenerate-importance notes
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # e.g. importances of a parameter never varied
                continue
        buffer = io.BytesIO()
        axes.figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        write_atomically(folder / name, buffer.getvalue())
        written.append(str(folder / name))
    return written


def check_fixed_settings(config: Config, space: list[Dimension]) -> None:
    """The settings every trial shares must be valid before the study is touched: a trial
    that failed on them would be left in the study for nothing."""
    from vae_cli.session import check_posterior_bounds, check_training_settings

    check_training_settings(config)
    check_posterior_bounds(config)
    if config.train.seeds is not None:
        raise UserError(
            "[train] seeds: a sweep trains one run per trial; --parallel N trains N trials "
            "at a time in one stacked step"
        )


# Sizes whose largest searched values make the most demanding trial.
MEMORY_SIZES = ("batch_size", "hidden_dim", "latent_dim", "k")


def check_largest_trial_fits(
    config: Config, space: list[Dimension], n_train: int, parallel: int = 1
) -> None:
    """The memory check of `vae train`, for a stack of `parallel` of the largest trial the
    space can draw (before any trial is asked: a stack that cannot fit would leave them)."""
    from vae_cli.device import resolve_device
    from vae_cli.memory import check_step_fits

    largest = {d.name: max(d.choices or (d.low, d.high)) for d in space if d.name in MEMORY_SIZES}
    device = resolve_device(config.train.device)
    check_step_fits(
        config.replace(largest), device, n_train, members=parallel, members_flag="--parallel"
    )


def start_sweep(
    config_file: Path,
    *,
    study: str | None,
    trials: int,
    storage: str | None,
    runs_dir: Path,
    data_dir: Path | None,
    timeout: float | None,
    pruner: str,
    seed: int | None,
    command: str,
    parallel: int = 1,
    display: Callable[..., Callbacks] = lambda label, **_: Callbacks(),
) -> dict[str, Any]:
    """Check every flag, the search space and the data before the study is touched; then run
    `trials` trials (0: only the summary), `parallel` at a time in stacks."""
    from vae_cli.data import load_dataset, resolve_data_dir
    from vae_cli.device import flush_denormals, resolve_device
    from vae_cli.search import load_tune_config

    if pruner not in ("median", "none"):
        raise UserError(f"--pruner: expected median or none, got {pruner!r}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UserError(f"--timeout: expected minutes > 0, got {timeout}")
    name = config_file.stem if study is None else study
    check_folder_name(name, "--study")
    config, space = load_tune_config(config_file)
    dataset = None
    if trials:
        check_fixed_settings(config, space)
        flush_denormals(resolve_device(config.train.device))  # before torch's worker threads
        resolved = resolve_data_dir(data_dir)
        dataset = load_dataset(resolved, config.data.dataset, config.data.limit)
        data_dir = resolved
        check_largest_trial_fits(config, space, len(dataset.train_images), parallel)
    sweep = Sweep(config, space, runs_dir / name, data_dir, command, display, dataset)
    return tune(
        sweep,
        storage,
        name,
        trials=trials,
        timeout_minutes=timeout,
        pruner=pruner,
        seed=seed,
        summary_only=trials == 0,
        parallel=parallel,
    )
