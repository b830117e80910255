"""A sweep's trials while they train: the reporter that tells Optuna each epoch's value and
prunes, and the trials a --parallel worker asked for at once, with their heartbeats."""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna

from vae_cli.commands.optuna_ids import trial_id
from vae_cli.errors import TrainingPruned
from vae_cli.runs.best import selection_loss
from vae_cli.training.callbacks import Callbacks
from vae_cli.training.events import EpochEnded

HEARTBEAT_SECONDS = 10  # a running trial's worker writes a heartbeat this often
GRACE_SECONDS = 60  # a trial with no heartbeat for this long is marked failed by the others


class TrialReporter(Callbacks):
    """Reports each epoch's validation value to the trial (the test set is never a trial's
    value) and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch(self, event: EpochEnded) -> None:
        epoch = event.metrics.epoch
        value = selection_loss(event.metrics.line())  # as best.pt is chosen
        self.trial.set_user_attr("epochs", epoch)
        if math.isfinite(value):
            self.trial.report(value, epoch)
            if self.trial.should_prune():
                raise TrainingPruned(f"pruned after epoch {epoch}")


class AskedTrials:
    """The trials a --parallel worker asked for at once. Each one's heartbeat beats from the
    ask (Optuna's stale-trial check passes over a trial that never had one), so if the worker
    is killed, another fails them all; each is told once; and whatever is still untold when the
    worker stops (Ctrl-C in an earlier stack, any error) is failed here, never left RUNNING."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.RDBStorage,
        trials: list[optuna.Trial],
        *,
        warn: Callable[[str], None],
    ) -> None:
        self.study, self.untold, self.warn = study, list(trials), warn
        self.started: list[optuna.Trial] = []  # those whose stack began to train
        self.heartbeats = Heartbeats(storage, self.untold, warn=warn)

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
            self.warn(
                f"trial {trial.number} was already ended by another worker (its "
                f"heartbeats stopped for over {GRACE_SECONDS} s); its run ended {status}"
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

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        trials: list[optuna.Trial],
        *,
        warn: Callable[[str], None],
    ) -> None:
        import threading

        self.storage, self.trials, self.warn = storage, list(trials), warn
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
                    self.storage.record_heartbeat(trial_id(trial, self.storage))
            except Exception as error:  # the database is away for a moment: try again
                if not self.failed:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    self.warn(
                        f"a trial heartbeat could not be recorded ({first}); "
                        f"retrying every {HEARTBEAT_SECONDS} s"
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
