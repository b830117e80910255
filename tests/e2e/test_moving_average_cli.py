"""--ema through the CLI: a resumed run is bit-identical to a straight one, and evaluation,
best.pt, export and the Python API all read the averaged weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import assert_same_training_state, run_vae, train_args

from vae_cli.checkpoint import load_checkpoint

EMA = ("--limit", 600, "--batch-size", 50, "--ema", 0.95, "--quiet", "--binarize", "dynamic")


def test_a_run_with_a_moving_average_resumes_bit_identical(tmp_path: Path, data_dir: Path) -> None:
    straight = run_vae(*train_args(tmp_path, data_dir, *EMA, "--epochs", 2, name="straight"))
    assert straight.code == 0, straight.stderr
    half = run_vae(*train_args(tmp_path, data_dir, *EMA, "--epochs", 1, name="halves"))
    assert half.code == 0, half.stderr
    resumed = run_vae("train", "--resume", tmp_path / "halves", "--epochs", 2,
                      "--data-dir", data_dir, "--quiet")  # fmt: skip
    assert resumed.code == 0, resumed.stderr
    assert_same_training_state(tmp_path / "straight", tmp_path / "halves")
    last = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    first = load_checkpoint(tmp_path / "halves/checkpoints/last.pt")
    for key, tensor in last["training_weights"].items():
        assert torch.equal(tensor, first["training_weights"][key]), key


def test_every_command_reads_the_averaged_weights(tmp_path: Path, data_dir: Path) -> None:
    import vae_cli
    from vae_cli.commands.load import load_model, test_images
    from vae_cli.model.evaluate import evaluate_elbo

    assert run_vae(*train_args(tmp_path, data_dir, *EMA, "--epochs", 2, name="r")).code == 0
    saved = load_checkpoint(tmp_path / "r/checkpoints/best.pt")
    averaged, trained = saved["model"], saved["training_weights"]
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    export = tmp_path / "m.safetensors"
    assert run_vae("export", "--checkpoint", tmp_path / "r", "--out", export).code == 0
    for path in (tmp_path / "r", export):
        weights = vae_cli.load(path).state_dict()
        assert all(torch.equal(weights[k], averaged[k]) for k in averaged), path
    # The epoch's test pass scored the averaged weights too.
    metrics = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").open()]
    loaded = load_model(tmp_path / "r/checkpoints/last.pt", "cpu")
    x, _ = test_images(loaded, data_dir, 600)
    assert evaluate_elbo(loaded.model, x).loss == metrics[-1]["test_loss"]
