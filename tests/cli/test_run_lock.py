"""One trainer per run folder, with real processes: a second trainer is refused and touches
nothing, a killed trainer's run reads as died and --resume takes it over."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, dataset_name, run_vae, run_vae_process, train_args

Start = Callable[..., subprocess.Popen]


def wait_for(marker: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (temporary files of a write in progress left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".tmp")
    }


def runs_row(runs: Path, name: str) -> str:
    result = run_vae("runs", "--runs-dir", runs)
    assert result.code == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if f" {name} " in line)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line


def test_a_second_trainer_is_refused_and_a_killed_one_is_taken_over(
    tmp_path: Path, data_dir: Path, start_blocking_write: Start, wide: None
) -> None:
    runs, marker = tmp_path / "runs", tmp_path / "marker"
    run = runs / "r"
    # The first trainer stops inside its last epoch's write of last.pt, holding the folder
    # (nothing else of its own is left to write).
    first = start_blocking_write("last.pt", 2, marker, *train_args(runs, data_dir, *TINY))
    wait_for(marker, first)
    before = folder_bytes(run)
    status = json.loads((run / "status.json").read_text())
    assert (status["status"], status["epoch"]) == ("running", 1)  # follows the epochs
    assert "running" in runs_row(runs, "r")

    second = run_vae_process(
        "train", "--resume", run, "--data-dir", data_dir, "--quiet", "--epochs", 4
    )
    assert second.code == 2
    assert second.stderr.count("\n") == 1 and second.stderr.startswith("Error: ")
    assert f"process {first.pid}" in second.stderr and "Traceback" not in second.stderr
    overwrite = run_vae_process(*train_args(runs, data_dir, *TINY, "--overwrite"))
    assert overwrite.code == 2 and f"process {first.pid}" in overwrite.stderr
    assert folder_bytes(run) == before  # nothing of the first trainer's was touched

    first.kill()  # kill -9: no handler runs, status.json still says running
    first.communicate()
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    assert "died" in runs_row(runs, "r")

    taken_over = run_vae("train", "--resume", run, "--data-dir", data_dir, "--quiet", "--epochs", 3)
    assert taken_over.code == 0, taken_over.stderr
    epochs = [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3]
    assert "finished" in runs_row(runs, "r") and "3/3" in runs_row(runs, "r")


def test_a_population_member_has_one_trainer(
    tmp_path: Path, data_dir: Path, start_blocking_write: Start
) -> None:
    runs, marker = tmp_path / "runs", tmp_path / "marker"
    first = start_blocking_write(
        "last.pt", 4, marker, *train_args(runs, data_dir, *TINY, "--seeds", "0-1", name="pop")
    )
    wait_for(marker, first)
    before = folder_bytes(runs / "pop")
    for target in (runs / "pop/seed-1", runs / "pop"):
        second = run_vae_process("train", "--resume", target, "--data-dir", data_dir, "--quiet")
        assert second.code == 2, second.stderr
        assert f"process {first.pid}" in second.stderr
    assert folder_bytes(runs / "pop") == before


def test_a_sweep_trial_has_one_trainer(
    tmp_path: Path, data_dir: Path, start_blocking_write: Start
) -> None:
    config, marker = tmp_path / "sweep.toml", tmp_path / "marker"
    config.write_text(
        f'[data]\ndataset = "{dataset_name(data_dir)}"\nlimit = 512\n[train]\nepochs = 2\n'
        "batch_size = 64\n"
        "[search]\nlr = { low = 1e-3, high = 2e-3 }\n"
    )
    runs = tmp_path / "runs"
    first = start_blocking_write(
        "last.pt", 2, marker, "tune", "--config", config, "--trials", 1, "--runs-dir", runs,
        "--data-dir", data_dir,
    )  # fmt: skip
    wait_for(marker, first)
    trial = runs / "sweep/trial-0000"
    before = folder_bytes(trial)
    second = run_vae_process("train", "--resume", trial, "--data-dir", data_dir, "--quiet")
    assert second.code == 2 and f"process {first.pid}" in second.stderr
    assert folder_bytes(trial) == before
