"""The terminal's words for a run's start, from a real RunStarted event (tiny model, tiny data)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vae_cli.cli import console
from vae_cli.config.settings import ModelConfig
from vae_cli.data.dataset import Dataset
from vae_cli.model.vae import VAE
from vae_cli.training.events import RunStarted


def run_started(**changes: object) -> RunStarted:
    images = torch.zeros(4, 784, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    started = RunStarted(
        device=torch.device("cpu"),
        model=VAE(ModelConfig(latent_dims=[2], hidden_dims=[8])),
        dataset=Dataset(images, labels, images, labels, md5={}),
        steps_per_epoch=469,
        train_images=60_000,
        batch_size=128,
        validation_images=0,
        resumed_epoch=0,
        resumed_position=0,
        plan=["elbo, 10 epochs, lr 0.0012"],
        phase=1,
        members=[""],
        pictured=images[:2],
    )
    return replace(started, **changes)


def test_a_resume_mid_epoch_names_the_epoch_and_the_next_batch() -> None:
    lines = console.resumed_lines(run_started(resumed_epoch=0, resumed_position=451))
    assert lines == ["resumed     in epoch 1, at batch 452 of 469"]


def test_a_resume_at_an_epoch_boundary_says_after_which_epoch() -> None:
    assert console.resumed_lines(run_started(resumed_epoch=3)) == ["resumed     after epoch 3"]


def test_a_resume_names_its_phase_only_when_there_are_several() -> None:
    two_phases = ["elbo, 10 epochs, lr 0.001", "iwae k=5, 5 epochs, lr 0.0003"]
    lines = console.resumed_lines(run_started(resumed_epoch=12, plan=two_phases, phase=2))
    assert lines == ["resumed     after epoch 12 (phase 2)"]


def test_a_new_run_says_nothing_about_resuming() -> None:
    assert console.resumed_lines(run_started()) == []


def test_the_start_panel_wraps_long_values_under_their_column_at_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value wider than the terminal wraps under the values' column; it is not cut off at
    the panel's edge (the choice of best.pt once lost its last words at 80 columns)."""
    monkeypatch.setenv("COLUMNS", "80")
    folder = "/tmp/" + "a-long-folder-name/" * 6 + "run"
    display = console.TrainingDisplay(run_dir=folder, epochs=10, binarize="none", quiet=False)
    display.on_start(run_started())
    rows = capsys.readouterr().out.splitlines()
    assert max(len(row) for row in rows) <= 80
    inside = [row[2:-2] for row in rows[1:-1]]  # between "│ " and " │"
    keys = [row[: console.KEY_WIDTH].strip() for row in inside]
    values = [row[console.KEY_WIDTH :].rstrip() for row in inside]
    shown: dict[str, str] = {}
    key = ""
    for row_key, value in zip(keys, values, strict=True):
        key = row_key or key  # a wrapped value's rows leave the key blank
        shown[key] = shown.get(key, "") + ("" if key == "run folder" else " ") + value
    assert shown["run folder"] == folder
    assert shown["best.pt"].strip() == console.choice_words(run_started())
    assert keys[0] == "device" and len([k for k in keys if k]) == 7
