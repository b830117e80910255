"""Determinism, bit-exact resume (epoch boundary and mid-epoch), SIGINT and SIGKILL safety."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_same_training_state,
    dataset_flags,
    interrupt_at,
    metrics_without_timing,
    run_vae,
    train_args,
)

from vae_cli.checkpoint import load_checkpoint

SMALL = ("--limit", 1024, "--batch-size", 64, "--quiet")  # 16 steps per epoch
STEPS_PER_EPOCH = 625  # start_training_process: 20,000 images in batches of 32


def train(runs: Path, name: str, data_dir: Path, *args: object) -> Path:
    result = run_vae(*train_args(runs, data_dir, *SMALL, *args, name=name))
    assert result.code == 0, result.stderr
    return runs / name


def resume(run: Path, data_dir: Path, *args: object) -> None:
    result = run_vae("train", "--resume", run, "--data-dir", data_dir, "--quiet", *args)
    assert result.code == 0, result.stderr


def test_same_seed_same_weights_and_pictures(tmp_path: Path, data_dir: Path) -> None:
    a = train(tmp_path, "a", data_dir, "--epochs", 1)
    b = train(tmp_path, "b", data_dir, "--epochs", 1)
    assert_same_training_state(a, b)
    for picture in ("samples/epoch_001.png", "reconstructions/epoch_001.png"):
        assert (a / picture).read_bytes() == (b / picture).read_bytes()
    c = train(tmp_path, "c", data_dir, "--epochs", 1, "--seed", 1)
    assert not torch.equal(
        load_checkpoint(a / "checkpoints/last.pt")["model"]["decoder.body.0.weight"],
        load_checkpoint(c / "checkpoints/last.pt")["model"]["decoder.body.0.weight"],
    )


def test_resume_at_an_epoch_boundary_is_bit_exact(tmp_path: Path, data_dir: Path) -> None:
    straight = train(tmp_path, "straight", data_dir, "--epochs", 2, "--binarize", "dynamic")
    halves = train(tmp_path, "halves", data_dir, "--epochs", 1, "--binarize", "dynamic")
    resume(halves, data_dir, "--epochs", 2)
    assert_same_training_state(straight, halves)


def test_resume_after_a_mid_epoch_interrupt_is_bit_exact(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = train(tmp_path, "straight", data_dir, "--epochs", 2, "--batch-size", 16)

    interrupt_at(monkeypatch, epoch=1, step=25)
    result = run_vae(
        *train_args(
            tmp_path, data_dir, *SMALL, "--batch-size", 16, "--epochs", 2, name="interrupted"
        )
    )
    interrupted = tmp_path / "interrupted"
    assert result.code == 130
    assert f"vae train --resume {interrupted}" in result.stderr
    saved = load_checkpoint(interrupted / "checkpoints/last.pt")
    assert saved["mid_epoch"] and saved["epoch"] == 1 and saved["position"] == 25
    assert json.loads((interrupted / "status.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    resume(interrupted, data_dir)
    assert_same_training_state(straight, interrupted)


def start_training_process(runs: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vae_cli",
            "train",
            "--limit",
            "20000",
            "--batch-size",
            "32",
            "--epochs",
            "20",
            "--quiet",
            "--data-dir",
            str(data_dir),
            *dataset_flags(data_dir),
            "--runs-dir",
            str(runs),
            "--name",
            "r",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")],
)
def test_a_stop_signal_saves_a_resumable_checkpoint(
    signum: int, code: int, said: str, tmp_path: Path, data_dir: Path
) -> None:
    process = start_training_process(tmp_path, data_dir)
    wait_for(tmp_path / "r/metrics.jsonl", process)  # epoch 1 is done; epoch 2 is training
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert stderr.startswith(f"{said}: saved {tmp_path / 'r/checkpoints/last.pt'}")
    assert "Traceback" not in stderr
    assert f"vae train --resume {tmp_path / 'r'}" in stderr
    saved = load_checkpoint(tmp_path / "r/checkpoints/last.pt")
    # Saved where the signal landed, inside an epoch after the first, not at the epoch end.
    assert saved["mid_epoch"] and saved["epoch"] >= 1 and saved["position"] >= 1
    assert saved["step"] == saved["epoch"] * STEPS_PER_EPOCH + saved["position"]
    assert json.loads((tmp_path / "r/status.json").read_text())["status"] == "interrupted"


def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, data_dir: Path, start_blocking_write: Callable[..., subprocess.Popen]
) -> None:
    marker = tmp_path / "inside-the-write"
    run = tmp_path / "runs/r"
    process = start_blocking_write(
        "last.pt",
        2,  # epoch 2's last.pt: written to its temporary file, not yet renamed
        marker,
        *train_args(tmp_path / "runs", data_dir, *SMALL, "--epochs", 3),
    )
    wait_for(marker, process)
    process.kill()
    process.communicate(timeout=60)
    assert Path(marker.read_text()).parent == run / "checkpoints"  # the torn write's temp file
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 1
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()]
    assert epochs == [1, 2]  # the metrics line lands before its epoch's checkpoint
    resume(run, data_dir)
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 3
    assert [m["epoch"] for m in metrics_without_timing(run)] == [1, 2, 3]


def test_a_finished_run_can_be_fine_tuned_with_other_training_settings(
    tmp_path: Path, data_dir: Path
) -> None:
    import tomllib

    from conftest import train_tiny

    run = train_tiny(tmp_path, "r", data_dir)  # 2 epochs
    elbo_best = (run / "checkpoints/best.pt").read_bytes()
    resume(
        run,
        data_dir,
        "--epochs",
        3,
        "--objective",
        "iwae",
        "--k",
        2,
        "--lr",
        5e-4,
        "--adam-beta2",
        0.999,
    )
    saved = load_checkpoint(run / "checkpoints/last.pt")
    assert saved["epoch"] == 3
    assert saved["config"].train.objective == "iwae" and saved["config"].train.k == 2
    assert saved["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    stored = tomllib.loads((run / "config.toml").read_text())
    assert stored["train"]["epochs"] == 3 and stored["train"]["objective"] == "iwae"
    assert len(stored["manifest"]["resumed_with"]) == 1
    assert "--resume" not in stored["manifest"]["command"]  # the original command stays
    metrics = metrics_without_timing(run)
    assert len(metrics) == 3
    # The fine-tune epoch is judged by the bound it trains (test IWAE-2, tighter than the
    # -ELBO) and starts a new best: best.pt is that epoch, not the lower-ELBO epoch 2.
    assert "test_iwae" not in metrics[1] and metrics[2]["test_iwae_k"] == 2
    assert metrics[2]["test_iwae"] < metrics[2]["test_loss"]
    assert (run / "checkpoints/best.pt").read_bytes() == (run / "checkpoints/last.pt").read_bytes()
    assert (run / "checkpoints/best-elbo.pt").read_bytes() == elbo_best  # not lost
