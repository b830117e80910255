"""A sweep's Optuna study: its storage (a SQLite file, or any database SQLAlchemy reaches, e.g.
PostgreSQL, for workers on many machines), opening it, and its summary and plots."""

from __future__ import annotations

import io
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from vae_cli.commands import trials
from vae_cli.errors import UserError
from vae_cli.files import write_atomically

SQLITE_LOCK_TIMEOUT_SECONDS = 60  # concurrent local workers wait for the file's lock
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the results
SCHEMA_ATTEMPTS = 5


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
                    heartbeat_interval=trials.HEARTBEAT_SECONDS,
                    grace_period=trials.GRACE_SECONDS,  # read now: tests shorten it
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

    from vae_cli.runs.manifest import recorded_data_dir

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
