"""What schedules and the clock give at the places bugs hide: captured replays that follow a
changing learning rate and KL weight, a time-budgeted cosine phase at its first step, and the
clock's sums (each second counted once). Synthetic data, no MNIST."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import RecordedGraphs, make_step

from vae_cli.config.plan import build_plan
from vae_cli.config.schedule import kl_weight, learning_rate
from vae_cli.config.settings import Config
from vae_cli.training import clock as clock_module
from vae_cli.training import epoch as epoch_module
from vae_cli.training.clock import TrainingClock
from vae_cli.training.epoch import EpochTimer
from vae_cli.training.graphs import CapturedStep
from vae_cli.training.state import PhaseStart, Progress
from vae_cli.training.step import Step


def test_captured_replays_follow_a_changing_lr_and_kl_weight() -> None:
    """The CPU stand-in for CUDA graphs replays the recorded step: each replay must read the
    learning rate and KL weight written for it, not the ones of the capture."""
    config = Config().replace(
        {"hidden_dim": 32, "latent_dim": 4, "lr_schedule": "cosine", "kl_warmup_epochs": 1}
    )
    eager, captured = make_step(config), make_step(config, graphs=RecordedGraphs())
    assert isinstance(eager, Step) and isinstance(captured, CapturedStep)
    images = (torch.rand(12, 16, 784, generator=torch.Generator().manual_seed(0)) * 255).byte()
    for index, batch in enumerate(images):
        lr = learning_rate(config, index / len(images))  # 1.2e-3 down to ~1e-4
        beta = kl_weight(config, index, 8)  # 0 up to 1 over 8 steps
        eager(batch[None], [lr], [beta])
        captured(batch[None], [lr], [beta])
    assert 16 in captured.graphs  # steps 4 to 12 were replays
    assert torch.equal(captured.stack.flat, eager.stack.flat)
    assert torch.equal(captured.stack.stats.values, eager.stack.stats.values)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_clock_counts_each_second_of_training_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    monkeypatch.setattr(clock_module.time, "perf_counter", fake)
    progress = Progress(seconds=7.0)  # what a resumed run had trained before
    clock = TrainingClock(progress)
    clock.synced()  # not started: nothing counts
    clock.start()
    fake.now += 1.0
    clock.synced()
    fake.now += 2.0
    clock.synced()
    assert progress.seconds == 10.0
    fake.now += 0.5  # trained, not yet synced when the compilation starts: counts as training
    with clock.setup_time("compile_seconds", lambda: None, images=64):
        fake.now += 4.0  # compiling: never training time
    assert clock.setup["compile_seconds"] == 4.0 and clock.setup_images == 64
    assert progress.seconds == 10.5
    fake.now += 1.0
    clock.stop()
    assert progress.seconds == 11.5
    fake.now += 30.0  # the epoch's bookkeeping: not training
    clock.synced()
    with clock.setup_time("capture_seconds", lambda: None):
        fake.now += 2.0
    assert progress.seconds == 11.5 and clock.setup["capture_seconds"] == 2.0


def test_epoch_wall_times_share_no_second_and_add_up_to_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeTime()
    monkeypatch.setattr(clock_module.time, "perf_counter", fake)
    monkeypatch.setattr(epoch_module.time, "perf_counter", fake)
    progress = Progress()
    clock = TrainingClock(progress)
    timer = EpochTimer(clock, progress)
    walls = []
    for steps, test_pass, writes in ((10.0, 2.0, 1.0), (8.0, 3.0, 0.5)):
        clock.start()
        fake.now += steps
        clock.stop()
        assert timer.timing()["seconds"] == steps
        fake.now += test_pass  # the epoch's test pass: in its wall time, once
        walls.append(timer.epoch_seconds())
        fake.now += writes  # pictures and writes: the next epoch's wall time
    assert walls == [12.0, 1.0 + 8.0 + 3.0]
    assert sum(walls) == fake.now - 100.0 - 0.5


def two_phases(budget_minutes: float) -> Config:
    config = Config().replace({"epochs": 3})
    phase = {"time_budget": budget_minutes, "lr_schedule": "cosine", "lr": 1e-3, "final_lr": 1e-4}
    return Config(config.model, config.data, config.train, phases=(phase,))


def test_a_time_budgeted_cosine_phase_starts_at_its_peak_rate() -> None:
    """Phase 2's schedule runs over its own budget, from its own start: at its first step the
    rate is its lr, whatever phase 1 took (10 minutes here), and half way through it is the
    mid-point of the cosine."""
    phase = build_plan(two_phases(budget_minutes=2.0))[1]
    start = PhaseStart(epoch=3, step=300, seconds=600.0)
    first = Progress(epoch=3, step=300, seconds=600.0, phase=1, phase_start=start)
    assert phase.schedule_progress(first, steps_per_epoch=100) == 0.0
    assert learning_rate(phase.settings, 0.0) == 1e-3
    halfway = Progress(epoch=4, step=350, seconds=660.0, phase=1, phase_start=start)
    fraction = phase.schedule_progress(halfway, steps_per_epoch=100)
    assert fraction == 0.5
    assert learning_rate(phase.settings, fraction) == pytest.approx((1e-3 + 1e-4) / 2)
    spent = Progress(epoch=5, step=400, seconds=721.0, phase=1, phase_start=start)
    assert phase.schedule_progress(spent, steps_per_epoch=100) == 1.0
    assert phase.done(spent) and not phase.done(halfway)


def test_an_epoch_bounded_cosine_phase_counts_its_own_steps() -> None:
    config = Config().replace({"epochs": 2})
    phase_settings = {"epochs": 4, "lr_schedule": "cosine", "lr": 1e-3, "final_lr": 0.0}
    phase = build_plan(Config(config.model, config.data, config.train, (phase_settings,)))[1]
    start = PhaseStart(epoch=2, step=20, seconds=50.0)
    at = Progress(epoch=4, step=40, seconds=90.0, phase=1, phase_start=start)
    fraction = phase.schedule_progress(at, steps_per_epoch=10)
    assert fraction == 0.5
    assert learning_rate(phase.settings, fraction) == pytest.approx(0.5e-3)
    assert math.isclose(phase.schedule_progress(Progress(step=20, phase_start=start), 10), 0.0)
