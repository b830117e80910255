"""A trial's id in Optuna's storage, which `record_heartbeat` takes: the one private Optuna API.

Why: Optuna has no public name for it on a Trial; study.optimize uses the same attribute for
its own heartbeats. If an Optuna upgrade removes `trial._trial_id`, the storage's public lookup
by study and trial number takes over (a query per beat); a test fails loudly so the change is
seen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


def trial_id(trial: optuna.Trial, storage: optuna.storages.BaseStorage) -> int:
    private = getattr(trial, "_trial_id", None)
    if isinstance(private, int):
        return private
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
