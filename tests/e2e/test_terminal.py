"""What the terminal shows: --help without torch, no escape codes when piped, `vae runs`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_in_terminal, run_vae, run_vae_process, train_args


def test_cli_module_does_not_import_torch() -> None:
    code = (
        "import sys, vae_cli.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', "
        "'matplotlib', 'numpy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_help_of_every_command_is_quick_and_torch_free() -> None:
    for command in (
        [],
        ["train"],
        ["eval"],
        ["sample"],
        ["reconstruct"],
        ["latent"],
        ["interpolate"],
        ["runs"],
    ):
        code = (
            "import sys\nfrom vae_cli.cli.app import main\n"
            f"code = main({[*command, '--help']!r})\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(code)\n"
        )
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout
        assert elapsed < 5, f"--help of {command} took {elapsed:.1f}s"  # torch alone takes ~3s


def test_piped_training_output_has_no_progress_bar_codes(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae_process(*train_args(tmp_path, data_dir, "--limit", 256, "--epochs", 2))
    assert result.code == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    assert "\x1b[" not in result.stdout + result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "[none]" in epoch_lines[0]
    assert "run folder" in result.stdout and "best.pt: the last epoch" in result.stdout


def test_runs_table_shows_finished_and_interrupted(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "done")
    shutil.copytree(trained_run, runs / "stopped")
    (runs / "stopped/status.json").write_text(json.dumps({"status": "interrupted", "epoch": 1}))
    lines = (runs / "stopped/metrics.jsonl").read_text().splitlines()
    (runs / "stopped/metrics.jsonl").write_text(lines[0] + "\n")
    (runs / "not-a-run").mkdir()
    result = run_vae("runs", "--runs-dir", runs)
    assert result.code == 0
    rows = {
        line.split()[0]: line
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] in ("done", "stopped")
    }
    assert "2/2" in rows["done"] and "finished" in rows["done"]
    assert "1/2" in rows["stopped"] and "interrupted" in rows["stopped"]
    last = json.loads(lines[-1])["test_loss"]  # no validation split: best.pt is the last epoch
    assert f"{last:.2f}†  none, 1 layer 32" in rows["done"]
    assert "not-a-run" not in result.stdout


def test_runs_lists_a_run_whose_status_and_metrics_files_are_damaged(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("COLUMNS", "200")
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "damaged")
    (runs / "damaged/status.json").write_text("[1, 2]")  # JSON, but not an object
    first = (runs / "damaged/metrics.jsonl").read_text().splitlines()[0]
    (runs / "damaged/metrics.jsonl").write_bytes(
        first.encode() + b"\n[3]\n\xff\xfe{\n" + b'{"epoch": "two"}\n'
    )
    result = run_vae("runs", "--runs-dir", runs)
    assert result.code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "damaged" in line)
    assert "1/2" in row and "unknown" in row
    assert f"{json.loads(first)['test_loss']:.2f}" in row


def test_runs_on_an_empty_folder_says_how_to_start(tmp_path: Path) -> None:
    result = run_vae("runs", "--runs-dir", tmp_path)
    assert result.code == 0 and "vae train" in result.stdout


def write_run(root: Path, config: str, epochs_done: int, status: str) -> None:
    """A run folder as `vae runs` reads it, without training."""
    root.mkdir(parents=True)
    (root / "config.toml").write_text(config)
    lines = [json.dumps({"epoch": e, "test_loss": 100.0 - e}) for e in range(1, epochs_done + 1)]
    (root / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (root / "status.json").write_text(json.dumps({"status": status, "epoch": epochs_done}))


def test_runs_counts_every_phase_and_says_when_a_time_budget_ends_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    phases = "[train]\nepochs = 2\n[[phases]]\nepochs = 1\nobjective = 'iwae'\nk = 2\n"
    write_run(tmp_path / "phased", phases, 3, "finished")
    budgeted = "[train]\nepochs = 5000\ntime_budget = 2.0\n[[phases]]\nepochs = 4\n"
    write_run(tmp_path / "budget", budgeted, 7, "finished")
    layers = "[model]\nstochastic_layers = 2\nlatent_dim = 20\nlatent2_dim = 6\n"
    write_run(tmp_path / "layers", layers, 10, "finished")
    result = run_vae("runs", "--runs-dir", tmp_path)
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.split()}
    assert "3/3" in rows["phased"]
    assert "7 (time budget)" in rows["budget"] and "/5004" not in rows["budget"]
    assert "2 layers 20-6, chain" in rows["layers"] and "10/10" in rows["layers"]


def test_a_long_evaluation_shows_a_bar_on_a_terminal(trained_run: Path, data_dir: Path) -> None:
    shown = run_in_terminal(
        "eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--iw-samples", 64
    )
    assert shown.code == 0, shown.stdout
    assert "IW NLL, K=64:" in shown.stdout and "100%" in shown.stdout
    piped = run_vae_process(
        "eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--iw-samples", 64
    )
    assert "IW NLL, K=64:" not in piped.stdout + piped.stderr  # no bar off a terminal


def test_ctrl_c_at_a_terminal_leaves_no_echo_in_the_bars(tmp_path: Path, data_dir: Path) -> None:
    args = train_args(tmp_path, data_dir, "--limit", 8192, "--epochs", 3, "--batch-size", 32)
    shown = run_in_terminal(*args, interrupt_after="loss=")  # training has begun
    assert shown.code == 130, shown.stdout
    assert "Interrupted: saved" in shown.stdout
    assert "^C" not in shown.stdout


def test_quiet_prints_the_epoch_lines_and_the_files_only(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, "--limit", 256, "--epochs", 1, "--quiet"))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"training {tmp_path / 'r'}"  # what the epoch lines are of
    assert lines[1].startswith("epoch   1/1")
    assert all(line.startswith(("epoch", "wrote")) for line in lines[1:]), lines
    resumed = run_vae("train", "--resume", tmp_path / "r", "--epochs", 2, "--quiet",
                      "--data-dir", data_dir)  # fmt: skip
    assert resumed.stdout.splitlines()[0] == f"training {tmp_path / 'r'}, after epoch 1"
