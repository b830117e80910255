"""Documented promises that once broke: resume across device types, a torn metrics line, the
write order, IWAE's settings, cosine resumes, and a run finding its own data folder."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY,
    assert_same_training_state,
    dataset_flags,
    interrupt_at,
    metrics_without_timing,
    run_vae,
    train_args,
    train_tiny,
)

from vae_cli import files
from vae_cli.checkpoint import load_checkpoint, save_checkpoint
from vae_cli.training import checkpointer


def manifest(run: Path) -> dict:
    return tomllib.loads((run / "config.toml").read_text())["manifest"]


def resume(run: Path, data_dir: Path, *args: object):
    return run_vae("train", "--resume", run, "--data-dir", data_dir, "--quiet", *args)


def as_if_saved_on_cuda(checkpoint: Path, *, say_so: bool) -> None:
    """Give a CPU checkpoint the 16-byte generator states a CUDA run saves."""
    state = load_checkpoint(checkpoint)
    state["config"] = state["config"].to_dict()
    for name in ("noise", "binarize"):
        state["rng"][name] = torch.zeros(16, dtype=torch.uint8)
    if say_so:
        state["rng"]["device_type"] = "cuda"
    else:
        del state["rng"]["device_type"]  # as in checkpoints written before it was recorded
    save_checkpoint(checkpoint, state)


@pytest.mark.parametrize("say_so", [True, False], ids=["recorded", "inferred"])
def test_a_cuda_checkpoint_resumes_on_the_cpu(tmp_path: Path, data_dir: Path, say_so: bool) -> None:
    for name in ("a", "b"):
        run = train_tiny(tmp_path, name, data_dir, "--epochs", 1, "--binarize", "dynamic")
        as_if_saved_on_cuda(run / "checkpoints/last.pt", say_so=say_so)
        result = resume(run, data_dir, "--epochs", 2, "--device", "cpu")
        assert result.code == 0, result.stderr
        assert [m["epoch"] for m in metrics_without_timing(run)] == [1, 2]
        assert any("cuda -> cpu" in note for note in manifest(run)["resume_notes"])
    # The re-derived streams depend only on the seed and the step: the two resumes agree.
    assert_same_training_state(tmp_path / "a", tmp_path / "b")


def test_resume_accepts_a_torn_last_metrics_line(tmp_path: Path, data_dir: Path) -> None:
    run = train_tiny(tmp_path, "r", data_dir, "--epochs", 1)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 2, "step": 1')  # kill -9 in the middle of a line
    result = resume(run, data_dir, "--epochs", 2)
    assert result.code == 0, result.stderr
    assert [m["epoch"] for m in metrics_without_timing(run)] == [1, 2]


@pytest.mark.parametrize("damage", [b"[1, 2]", b'{"epoch": "one"}', b"\xff\xfe{"])
def test_resume_names_a_damaged_metrics_line(damage: bytes, tmp_path: Path, data_dir: Path) -> None:
    run = train_tiny(tmp_path, "r", data_dir, "--epochs", 1)
    intact = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(damage + b"\n" + intact)
    result = resume(run, data_dir, "--epochs", 2)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"Error: {run / 'metrics.jsonl'}: line 1 is not an epoch's metrics record"
    )
    assert (run / "metrics.jsonl").read_bytes() == damage + b"\n" + intact


def test_resume_rewrites_a_damaged_config_toml(tmp_path: Path, data_dir: Path) -> None:
    import tomllib

    run = train_tiny(tmp_path, "r", data_dir, "--epochs", 1)
    (run / "config.toml").write_bytes((run / "config.toml").read_bytes() + b"\xff\xfe")
    result = resume(run, data_dir, "--epochs", 2)
    assert result.code == 0, result.stderr
    rewritten = tomllib.loads((run / "config.toml").read_text())
    assert rewritten["train"]["epochs"] == 2 and len(rewritten["manifest"]["resumed_with"]) == 1


def reshaped_manifest(text: str, damage: str) -> str:
    """config.toml with its [manifest] table (the last one) edited into another shape."""
    if damage == "not a table":
        return "manifest = 3\n" + text[: text.index("[manifest]")]
    return text.replace("[manifest]\n", "[manifest]\nresumed_with = 5\n")


@pytest.mark.parametrize("damage", ["not a table", "resumed_with not a list"])
def test_resume_and_data_lookup_survive_a_reshaped_manifest(
    damage: str, tmp_path: Path, data_dir: Path
) -> None:
    import tomllib

    from vae_cli.runs.manifest import recorded_data_dir

    run = train_tiny(tmp_path, "r", data_dir, "--epochs", 1)
    assert recorded_data_dir(run) == data_dir.resolve()
    (run / "config.toml").write_text(reshaped_manifest((run / "config.toml").read_text(), damage))
    assert recorded_data_dir(run) == (None if damage == "not a table" else data_dir.resolve())
    result = resume(run, data_dir, "--epochs", 2)
    assert result.code == 0, result.stderr
    manifest = tomllib.loads((run / "config.toml").read_text())["manifest"]
    assert len(manifest["resumed_with"]) == 1
    assert manifest["resumed_with"][0].startswith("vae train --resume")


def test_a_checkpoint_write_failing_in_training_keeps_the_last_one_and_resumes(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = train_tiny(tmp_path, "straight", data_dir)
    real = files.write_atomically

    def disk_full_for_the_second_epochs_checkpoint(path: Path, data: bytes) -> None:
        if path.name == "last.pt" and epochs_saved["n"] >= 1:
            raise files.UserError(f"{path}: could not write (No space left on device)")
        real(path, data)
        if path.name == "last.pt":
            epochs_saved["n"] += 1

    epochs_saved = {"n": 0}
    disk_full = disk_full_for_the_second_epochs_checkpoint
    monkeypatch.setattr(checkpointer, "write_atomically", disk_full)
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, name="full"))
    run = tmp_path / "full"
    assert result.code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 1
    # The metrics line is written before its checkpoint: epoch 2's line is there, and the
    # resume drops it with the epoch it belongs to, then trains that epoch again.
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    monkeypatch.undo()
    assert resume(run, data_dir).code == 0
    assert_same_training_state(straight, run)
    assert metrics_without_timing(straight) == metrics_without_timing(run)


@pytest.mark.parametrize(
    "setting", [("--beta", 0.5), ("--kl-warmup-epochs", 2), ("--free-bits", 0.1)]
)
def test_iwae_refuses_the_elbo_only_settings(
    tmp_path: Path, data_dir: Path, setting: tuple
) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, "--objective", "iwae", *setting))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: --objective iwae")
    assert setting[0] in result.stderr
    assert not (tmp_path / "r").exists()


def test_cosine_resume_with_the_same_total_is_bit_exact_and_a_new_horizon_is_noted(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cosine = ("--lr-schedule", "cosine", "--epochs", 2)
    straight = train_tiny(tmp_path, "straight", data_dir, *cosine)

    interrupt_at(monkeypatch, epoch=1, step=4, every=4)
    interrupted = run_vae(*train_args(tmp_path, data_dir, *TINY, *cosine, name="halted"))
    assert interrupted.code == 130
    monkeypatch.undo()
    assert resume(tmp_path / "halted", data_dir).code == 0
    assert_same_training_state(straight, tmp_path / "halted")
    assert metrics_without_timing(straight) == metrics_without_timing(tmp_path / "halted")
    assert "resume_notes" not in manifest(tmp_path / "halted")

    extended = train_tiny(tmp_path, "extended", data_dir, "--lr-schedule", "cosine", "--epochs", 1)
    assert resume(extended, data_dir, "--epochs", 2).code == 0
    assert any("cosine" in note for note in manifest(extended)["resume_notes"])
    # Epoch 1 decayed over a 1-epoch horizon, so the extended run is not the straight one.
    assert metrics_without_timing(extended)[0]["lr"] < metrics_without_timing(straight)[0]["lr"]
    assert (
        metrics_without_timing(extended)[1]["test_loss"]
        != (metrics_without_timing(straight)[1]["test_loss"])
    )


def test_commands_find_the_data_folder_the_run_was_trained_on(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./data here
    monkeypatch.setenv("VAE_DATA_DIR", str(data_dir))
    result = run_vae("train", "--runs-dir", "runs", "--name", "r", *TINY, *dataset_flags(data_dir))
    assert result.code == 0, result.stderr
    monkeypatch.delenv("VAE_DATA_DIR")
    run = tmp_path / "runs/r"
    for command in (("reconstruct",), ("eval", "--limit", 64), ("interpolate",)):
        result = run_vae(*command, "--checkpoint", run, "--device", "cpu")
        assert result.code == 0, (command, result.stderr)
    config = (run / "config.toml").read_text()
    (run / "config.toml").write_text(config.replace(str(data_dir), str(tmp_path / "moved")))
    result = run_vae("reconstruct", "--checkpoint", run, "--device", "cpu")
    assert result.code == 2
    assert "which is gone" in result.stderr and str(tmp_path / "moved") in result.stderr
