"""A newcomer's first five minutes: every command the tool prints works as printed, a phased
config shows its plan, a command says which run it used, and commands import only what they
use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, interrupt_at, run_vae, train_args, train_tiny

TINY_ONE_EPOCH = ("--limit", 256, "--epochs", 1, "--batch-size", 64, "--quiet")
TWO_PHASES = """
[data]
limit = 256
[train]
epochs = 1
batch_size = 64
device = "cpu"
[[phases]]
epochs = 1
objective = "iwae"
k = 2
lr = 5e-4
lr_schedule = "cosine"
final_lr = 1e-4
"""


def shell_without_data_dir() -> dict[str, str]:
    """The environment of a fresh shell: no VAE_DATA_DIR, this venv's `vae` on PATH."""
    env = {key: value for key, value in os.environ.items() if key != "VAE_DATA_DIR"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_in_shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, shell=True, cwd=cwd, env=shell_without_data_dir(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def test_the_printed_resume_command_works_as_printed(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at(monkeypatch, epoch=0, step=2, every=2)
    runs = tmp_path / "runs"
    stopped = run_vae(*train_args(runs, data_dir, *TINY_ONE_EPOCH))
    assert stopped.code == 130, stopped.stderr
    printed = stopped.stderr.splitlines()[-1].strip()
    assert printed.startswith("vae train --resume ")
    # A new shell without VAE_DATA_DIR, somewhere with no ./data: the run knows its data.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = run_in_shell(printed, elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((runs / "r/status.json").read_text())["status"] == "finished"
    assert not (elsewhere / "data").exists()


def test_a_resume_whose_data_folder_is_gone_says_so(tmp_path: Path, data_dir: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir / "MNIST", copy / "MNIST")
    run = train_tiny(tmp_path / "runs", "r", copy, "--epochs", 1)
    shutil.rmtree(copy)
    result = subprocess.run(
        [sys.executable, "-m", "vae_cli", "train", "--resume", str(run), "--epochs", "2"],
        env=shell_without_data_dir(), cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {run} was trained on data in {copy}, which is gone")


def test_the_printed_reproduce_command_of_a_sweep_works_as_printed(
    tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(
        '[data]\nlimit = 256\n[train]\nepochs = 1\nbatch_size = 64\ndevice = "cpu"\n'
        "[search]\nlr = { low = 1e-4, high = 3e-3, log = true }\n"
    )
    swept = run_vae("tune", "--config", config, "--runs-dir", tmp_path / "runs",
                    "--data-dir", data_dir, "--trials", 1)  # fmt: skip
    assert swept.code == 0, swept.stderr
    printed = next(line for line in swept.stdout.splitlines() if line.startswith("reproduce"))
    command = printed.removeprefix("reproduce").strip()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    reproduced = run_in_shell(command, elsewhere)
    assert reproduced.returncode == 0, reproduced.stderr
    (again,) = (elsewhere / "runs").iterdir()
    trial = tmp_path / "runs/sweep/trial-0000"
    lines = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert [m["test_loss"] for m in lines] == [m["test_loss"] for m in expected]


def test_the_quick_start_leaves_the_shell_ready_for_the_rest_of_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start") : readme.index("## Commands")]
    first = next(line for line in quick_start.splitlines() if line.startswith("python3 -m venv"))
    assert re.search(r"export VAE_DATA_DIR=\S+ &&", first), first
    assert first.index("export VAE_DATA_DIR") < first.index("vae train")


def write_phases(folder: Path) -> Path:
    config = folder / "phases.toml"
    config.write_text(TWO_PHASES)
    return config


def test_the_start_panel_shows_the_plan_and_each_phase_change_is_announced(
    tmp_path: Path, data_dir: Path
) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, "--config", write_phases(tmp_path)))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("plan        phase 1: elbo, 1 epoch, lr 0.0012" in line for line in lines)
    assert any("phase 2: iwae k=2, 1 epoch, lr 0.0005 -> 0.0001 cosine" in line for line in lines)
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    change = lines.index("phase 2 of 2: iwae k=2, 1 epoch, lr 0.0005 -> 0.0001 cosine")
    assert epochs[0] < change < epochs[1]


@pytest.mark.parametrize("flag", [("--epochs", 1), ("--time-budget", 0.5)])
def test_a_length_flag_on_a_phased_config_is_refused_with_how_to_shorten_it(
    flag: tuple, tmp_path: Path, data_dir: Path
) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, "--config", write_phases(tmp_path), *flag))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"Error: {flag[0]}: ")
    assert "trains in 2 phases" in result.stderr and "each phase's epochs" in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_command_without_checkpoint_says_which_run_it_used(
    trained_run: Path, tmp_path: Path
) -> None:
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "stopped")
    (runs / "stopped/status.json").write_text(json.dumps({"status": "interrupted", "epoch": 1}))
    result = run_vae("sample", "--runs-dir", runs, "--out", tmp_path / "s.png")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"using {runs / 'stopped'} (the latest run in {runs}, interrupted): best.pt, epoch 2"
    )
    evaluated = run_vae("eval", "--runs-dir", runs, "--limit", 100, "--json")
    assert json.loads(evaluated.stdout)["latest_run"] == {
        "run": str(runs / "stopped"),
        "status": "interrupted",
    }
    named = run_vae("sample", "--checkpoint", runs / "stopped", "--out", tmp_path / "t.png")
    assert named.stdout.splitlines()[0] == f"wrote {tmp_path / 't.png'}"


HEAVY = ("torch", "torch._dynamo", "torchvision", "optuna", "matplotlib")


def imported_by(*args: object) -> set[str]:
    """The heavy modules a `vae` command imports (run in a fresh interpreter)."""
    code = (
        "import sys\nfrom vae_cli.cli.app import main\n"
        f"code = main({[str(a) for a in args]!r})\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1].replace("'", '"')))


def test_each_command_imports_only_what_it_uses(
    trained_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    assert imported_by("runs", "--runs-dir", trained_run.parent) == set()
    assert imported_by("export", "--help") == set()
    checkpoint = ("--checkpoint", trained_run)
    for command in (
        ("sample", *checkpoint, "--out", tmp_path / "s.png"),
        ("reconstruct", *checkpoint, "--out", tmp_path / "r.png", "--data-dir", data_dir),
        ("export", *checkpoint, "--out", tmp_path / "m.safetensors"),
    ):
        assert imported_by(*command) == {"torch"}, command
    trained = imported_by(*train_args(tmp_path, data_dir, "--limit", 256, "--epochs", 1, "--quiet"))
    assert trained == {"torch", "matplotlib"}  # matplotlib: curves.png after the last epoch
