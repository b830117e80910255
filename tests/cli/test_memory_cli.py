"""The memory check through the real CLI, on the synthetic dataset: a step that cannot fit
is one `Error:` line and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_vae, train_args

from vae_cli.training import memory


def test_train_refuses_a_step_that_cannot_fit(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pretend 8 MiB machine: the default step (~16 MiB) does not fit, and without the check
    # this small run would train instead of exiting 2.
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 8 * 2**20)
    flags = ("--limit", 256, "--epochs", 1, "--objective", "iwae", "--k", 2)
    result = run_vae(*train_args(tmp_path, data_dir, *flags))
    assert result.code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: one training step needs at least")
    assert "batch 128 x k 2, hidden 256" in lines[0] and "of cpu memory" in lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before the run folder exists
