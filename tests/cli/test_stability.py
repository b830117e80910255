"""Training never silently goes to NaN: clipping, the non-finite guard, an absurd learning rate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY,
    assert_same_training_state,
    make_step,
    nan_loss,
    poison_training_losses,
    run_vae,
    train_args,
    train_tiny,
)

from vae_cli.checkpoint import load_checkpoint
from vae_cli.config.settings import Config
from vae_cli.training.statistics import summarize
from vae_cli.training.step import Step


def small_step(**train: object) -> Step:
    return make_step(Config().replace({"hidden_dim": 32, "latent_dim": 4, **train}))


def step_on(train_step: Step, x: torch.Tensor) -> None:
    train_step(x.unsqueeze(0), [1e-3], [1.0])


def sums(train_step: Step) -> dict[str, float]:
    return summarize(train_step.stack.stats.read()[0])


def adam_state(train_step: Step) -> dict[str, torch.Tensor]:
    population = train_step.stack
    return population.adam.member_state_dict(
        0, lr=1e-3, beta2=0.99, layout=population.single_layout
    )["state"][0]


def test_clipped_gradient_norm_is_at_most_max_norm() -> None:
    train_step = small_step(grad_clip=0.5)
    step_on(train_step, torch.rand(16, 784))
    stats = sums(train_step)
    assert stats["mean_grad_norm"] > 0.5  # the raw norm was above the limit...
    clipped = train_step.stack.flat_grad.norm().item()
    assert clipped <= 0.5 * (1 + 1e-5)  # ...and was clipped
    assert stats["clipped_fraction"] == 1.0


def test_no_clipping_when_disabled() -> None:
    train_step = small_step(grad_clip=0.0)
    step_on(train_step, torch.rand(16, 784))
    stats = sums(train_step)
    norm = train_step.stack.flat_grad.norm().item()
    assert norm == pytest.approx(stats["mean_grad_norm"], rel=1e-6)
    assert stats["clipped_fraction"] == 0.0


def test_a_poisoned_batch_is_skipped_without_touching_the_weights() -> None:
    train_step = small_step()
    step_on(train_step, torch.rand(16, 784))
    before = train_step.stack.flat.detach().clone()
    adam_before = adam_state(train_step)
    poisoned = torch.rand(16, 784)
    poisoned[3, 100] = float("nan")
    step_on(train_step, poisoned)
    assert torch.equal(train_step.stack.flat.detach(), before)
    for key, value in adam_state(train_step).items():
        assert torch.equal(value, adam_before[key]), key
    stats = sums(train_step)
    assert stats["bad_steps"] == 1 and stats["bad_streak"] == 1 and stats["images"] == 16
    step_on(train_step, torch.rand(16, 784))
    assert sums(train_step)["bad_streak"] == 0
    assert not torch.equal(train_step.stack.flat.detach(), before)


def nan_every(period: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every `period`-th training loss NaN (a Python counter: runs that use it pin
    --device cpu, since a captured CUDA step would run the counter only once)."""
    poison_training_losses(
        monkeypatch, lambda n, parts: nan_loss(parts) if n % period == 0 else parts
    )


def test_skipped_steps_are_counted_and_warned(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_every(3, monkeypatch)
    result = run_vae(
        *train_args(
            tmp_path,
            data_dir,
            "--limit",
            512,
            "--epochs",
            1,
            "--batch-size",
            32,
            "--quiet",
            "--device",
            "cpu",
        )
    )
    assert result.code == 0, result.stderr
    assert "Warning: skipped" in result.stderr
    metrics = json.loads((tmp_path / "r/metrics.jsonl").read_text())
    assert metrics["bad_steps"] == 5  # 16 steps, every third one poisoned


def test_too_many_bad_steps_stop_with_exit_1_and_keep_the_checkpoint(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "r"
    train_tiny(tmp_path, "r", data_dir, "--epochs", 1)
    good = (run / "checkpoints/last.pt").read_bytes()
    nan_every(1, monkeypatch)
    result = run_vae(
        "train",
        "--resume",
        run,
        "--epochs",
        3,
        "--max-bad-steps",
        4,
        "--quiet",
        "--data-dir",
        data_dir,
    )
    assert result.code == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: ") and "non-finite steps in a row" in last_line
    assert "Traceback" not in result.stderr
    assert (run / "checkpoints/last.pt").read_bytes() == good
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def test_an_absurd_learning_rate_never_writes_nan_weights(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(
        *train_args(
            tmp_path, data_dir, "--lr", 1.0, "--limit", 2048, "--batch-size", 16, "--epochs", 2
        ),
        *("--quiet", "--device", "cpu"),
    )
    assert result.code == 0, result.stderr  # huge losses, but finite: the run finishes
    for name, epochs in (("last.pt", {2}), ("best.pt", {1, 2})):
        checkpoint = load_checkpoint(tmp_path / "r/checkpoints" / name)
        assert checkpoint["epoch"] in epochs
        assert all(torch.isfinite(t).all() for t in checkpoint["model"].values()), name


def test_weights_that_turn_non_finite_are_never_saved(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A NaN that slips past the step's guard (here: written straight into a weight in the
    # second epoch) must stop training before a checkpoint holds it.
    real_step, calls = Step.run, {"n": 0}

    def poisoning_step(train_step: Step, images: torch.Tensor) -> None:
        real_step(train_step, images)
        calls["n"] += 1
        if calls["n"] == 12:  # epoch 2 of 8-step epochs
            next(train_step.model.decoder.parameters()).data[0, 0] = math.nan

    monkeypatch.setattr(Step, "run", poisoning_step)
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, "--device", "cpu"))
    assert result.code == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: parameter decoder.") and "is not finite" in last_line
    checkpoint = load_checkpoint(tmp_path / "r/checkpoints/last.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert json.loads((tmp_path / "r/status.json").read_text())["status"] == "failed"


def nan_window(first: int, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make training losses number first .. first + count - 1 (counting from 1) NaN."""
    poison_training_losses(
        monkeypatch, lambda n, parts: nan_loss(parts) if first <= n < first + count else parts
    )


@pytest.mark.parametrize(
    ("first", "count", "stops"),
    [(3, 4, True), (3, 3, False), (15, 4, True)],
    ids=["exactly-the-limit", "one-short", "across-an-epoch-boundary"],
)
def test_max_bad_steps_is_exact_and_spans_epochs(
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: int,
    count: int,
    stops: bool,
) -> None:
    # 16 steps per epoch; the streak recovers right after the window, long before the host's
    # next read of the statistics (every 25 steps), and the third window spans epochs 1-2.
    nan_window(first, count, monkeypatch)
    args = ("--limit", 512, "--batch-size", 32, "--epochs", 2, "--max-bad-steps", 4)
    result = run_vae(*train_args(tmp_path, data_dir, *args, "--quiet", "--device", "cpu"))
    if stops:
        assert result.code == 1, result.stderr
        assert "4 non-finite steps in a row" in result.stderr
        assert json.loads((tmp_path / "r/status.json").read_text())["status"] == "failed"
    else:
        assert result.code == 0, result.stderr
        bad = [json.loads(line)["bad_steps"] for line in (tmp_path / "r/metrics.jsonl").open()]
        assert bad == [3, 0]


def poison_steps(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    """The training step's losses are NaN at these steps (counted from 1 in this process)."""
    poison_training_losses(monkeypatch, lambda n, parts: nan_loss(parts) if n in steps else parts)


def test_a_streak_of_bad_steps_across_an_epoch_end_survives_a_resume(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 steps an epoch, --max-bad-steps 3, NaN at steps 7, 8 and 9: the streak spans the
    end of epoch 1, and the resumed run must stop where the uninterrupted one does."""
    args = ("--limit", 512, "--batch-size", 64, "--max-bad-steps", 3, "--quiet")
    poison_steps(monkeypatch, {7, 8, 9})
    straight = run_vae(*train_args(tmp_path, data_dir, *args, "--epochs", 2, name="straight"))
    assert straight.code == 1 and "3 non-finite steps in a row" in straight.stderr
    monkeypatch.undo()
    poison_steps(monkeypatch, {7, 8})
    first = run_vae(*train_args(tmp_path, data_dir, *args, "--epochs", 1, name="resumed"))
    assert first.code == 0, first.stderr
    monkeypatch.undo()
    poison_steps(monkeypatch, {1})  # step 9 overall
    resumed = run_vae(
        "train", "--resume", tmp_path / "resumed", "--epochs", 2, "--data-dir", data_dir, "--quiet"
    )
    assert resumed.code == 1 and "3 non-finite steps in a row" in resumed.stderr
    assert_same_training_state(tmp_path / "straight", tmp_path / "resumed")


def test_a_crash_between_last_pt_and_best_pt_is_repaired_on_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    """last.pt is the truth: when it says its epoch was the best, best.pt must hold it."""
    split = ("--validation", 64)  # best.pt is chosen, not simply the last epoch
    two = train_tiny(tmp_path, "two", data_dir, *split)  # best.pt: epoch 2 (checked below)
    one = train_tiny(tmp_path, "one", data_dir, *split, "--epochs", 1)
    assert load_checkpoint(two / "checkpoints/best.pt")["epoch"] == 2
    crashed = tmp_path / "crashed"
    shutil.copytree(two, crashed)
    # The kill came after epoch 2's last.pt and before its best.pt: best.pt is epoch 1's.
    shutil.copy(one / "checkpoints/best.pt", crashed / "checkpoints/best.pt")
    result = run_vae(
        "train", "--resume", crashed, "--epochs", 3, "--lr", 0.05, "--data-dir", data_dir, "--quiet"
    )
    assert result.code == 0, result.stderr
    metrics = [json.loads(line) for line in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert min(metrics, key=lambda m: m["val_loss"])["epoch"] == 2  # lr 0.05 made epoch 3 worse
    assert (crashed / "checkpoints/best.pt").read_bytes() == (
        two / "checkpoints/best.pt"
    ).read_bytes()
