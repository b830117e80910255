"""Training settings reach the step that trains: the cosine lr, beta with its warm-up, free bits,
and a fresh binarization draw per epoch, as seen from inside the step of a real `vae train`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import StepSpy, train_tiny

from vae_cli.config.settings import Config

STEPS_PER_EPOCH, EPOCHS = 8, 3  # TINY: 512 images in batches of 64
LR, FINAL_LR, BETA, FREE_BITS = 2e-3, 1e-4, 0.5, 0.1


def cosine(step: int) -> float:
    """The documented schedule, written out: lr -> final_lr over all steps of the run."""
    progress = step / (STEPS_PER_EPOCH * EPOCHS)
    return FINAL_LR + (LR - FINAL_LR) * (1 + math.cos(math.pi * progress)) / 2


def test_lr_beta_warmup_free_bits_and_dynamic_draws_reach_the_step(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = StepSpy(monkeypatch, steps_per_epoch=STEPS_PER_EPOCH)
    run = train_tiny(
        tmp_path,
        "r",
        data_dir,
        *("--epochs", EPOCHS, "--device", "cpu", "--binarize", "dynamic"),
        *("--lr", LR, "--lr-schedule", "cosine", "--final-lr", FINAL_LR),
        *("--beta", BETA, "--kl-warmup-epochs", 1, "--free-bits", FREE_BITS),
    )
    steps = range(STEPS_PER_EPOCH * EPOCHS)
    assert spy.lr == pytest.approx([cosine(s) for s in steps], rel=1e-12)
    # beta grows linearly over the first epoch's steps, then stays.
    assert spy.beta == pytest.approx([BETA * min(1.0, s / STEPS_PER_EPOCH) for s in steps])
    assert spy.free_bits == pytest.approx([FREE_BITS] * len(steps), rel=1e-7)  # float32
    # Binary pixels, freshly drawn: the same images sum differently from epoch to epoch.
    assert all(torch.equal(x, x.round()) for x in spy.pixels)
    sums = spy.epoch_pixel_sums()
    assert len(set(sums)) == EPOCHS
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    last_steps = [(e + 1) * STEPS_PER_EPOCH - 1 for e in range(EPOCHS)]
    assert [m["lr"] for m in metrics] == pytest.approx([cosine(s) for s in last_steps])


def test_static_binarization_trains_on_one_draw(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = StepSpy(monkeypatch, steps_per_epoch=STEPS_PER_EPOCH)
    train_tiny(
        tmp_path, "r", data_dir, "--epochs", EPOCHS, "--device", "cpu", "--binarize", "static"
    )
    assert spy.lr == [Config().train.lr] * STEPS_PER_EPOCH * EPOCHS and set(spy.beta) == {1.0}
    sums = spy.epoch_pixel_sums()
    assert all(torch.equal(x, x.round()) for x in spy.pixels)
    assert sums == [sums[0]] * EPOCHS
