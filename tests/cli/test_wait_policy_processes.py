"""The OpenMP wait policy chosen with real processes on the machine: `vae train` beside two busy
processes waits passively and says so in its manifest; the user's own policy is kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    TINY,
    assert_same_training_state,
    metrics_without_timing,
    run_vae_process,
    train_args,
)

from vae_cli.openmp import USER_VARIABLES, others_running, runnable_tasks

needs_proc_stat = pytest.mark.skipif(
    not os.path.exists("/proc/stat"), reason="reads Linux's /proc/stat"
)


@pytest.fixture
def two_busy_processes() -> Iterator[None]:
    """Two real processes keeping both cores of a 2-core machine busy."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    time.sleep(0.5)  # past the interpreter's start
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def manifest_policy(run: Path) -> str:
    return tomllib.loads((run / "config.toml").read_text())["manifest"]["cpu_wait_policy"]


def without_policy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}


@needs_proc_stat
def test_real_busy_processes_are_seen(two_busy_processes: None) -> None:
    assert runnable_tasks() >= 3  # the two and this one
    assert others_running() is True


@needs_proc_stat
def test_a_run_beside_busy_processes_waits_passively(
    two_busy_processes: None, tmp_path: Path, data_dir: Path
) -> None:
    result = run_vae_process(*train_args(tmp_path, data_dir, *TINY), env=without_policy())
    assert result.code == 0, result.stderr
    assert manifest_policy(tmp_path / "r") == "passive: another process was running at start"


def test_the_users_policy_is_kept_and_recorded(tmp_path: Path, data_dir: Path) -> None:
    env = without_policy() | {"OMP_WAIT_POLICY": "ACTIVE"}
    result = run_vae_process(*train_args(tmp_path, data_dir, *TINY), env=env)
    assert result.code == 0, result.stderr
    assert manifest_policy(tmp_path / "r") == "set by the user: OMP_WAIT_POLICY=ACTIVE"


def test_the_policy_changes_no_number(tmp_path: Path, data_dir: Path) -> None:
    """Only the speed: a run sleeping at once and a run spinning agree to the bit."""
    for policy in ("PASSIVE", "ACTIVE"):
        env = without_policy() | {"OMP_WAIT_POLICY": policy}
        args = train_args(tmp_path, data_dir, *TINY, name=policy)
        assert run_vae_process(*args, env=env).code == 0
    assert metrics_without_timing(tmp_path / "PASSIVE") == metrics_without_timing(
        tmp_path / "ACTIVE"
    )
    assert_same_training_state(tmp_path / "PASSIVE", tmp_path / "ACTIVE")
