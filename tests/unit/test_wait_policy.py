"""How torch's OpenMP threads wait (vae_cli/openmp.py): passive beside another process, libgomp's
spin when the machine is the run's own, the user's own choice never overridden."""

from __future__ import annotations

import pytest

from vae_cli.openmp import decide, others_running


def test_another_process_makes_the_threads_wait_passively() -> None:
    environ: dict[str, str] = {}
    policy = decide(environ, busy=lambda: True, torch_loaded=False)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert policy.startswith("passive")


def test_an_idle_machine_keeps_libgomps_spin() -> None:
    environ: dict[str, str] = {}
    assert decide(environ, busy=lambda: False, torch_loaded=False).startswith("spin")
    assert environ == {}


@pytest.mark.parametrize("users", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}])
def test_the_users_own_choice_is_kept(users: dict[str, str]) -> None:
    environ = dict(users)
    policy = decide(environ, busy=lambda: True, torch_loaded=False)
    assert environ == users
    name, value = next(iter(users.items()))
    assert policy == f"set by the user: {name}={value}"


def test_nothing_is_set_once_torch_has_loaded() -> None:
    environ: dict[str, str] = {}
    assert decide(environ, busy=lambda: True, torch_loaded=True).startswith("libgomp's own")
    assert environ == {}


def test_most_looks_decide_and_no_proc_stat_decides_nothing() -> None:
    def counts(values: list[int | None]):
        looks = iter(values)
        return lambda: next(looks)

    assert others_running(counts([1, 2, 1, 1, 2])) is False  # a passing shell command
    assert others_running(counts([2, 3, 1, 2, 1])) is True
    assert others_running(counts([None])) is None
