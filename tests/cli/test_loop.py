"""The training loop's parts that used to hide: CUDA graph capture (driven on the CPU through a
recording stand-in), the clock behind metrics and time budgets, and the step's settings per
phase."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import (
    TWO_PHASES,
    RecordedGraphs,
    dataset_name,
    interrupt_at,
    metrics_without_timing,
    record_batch_sizes,
    run_vae,
    train_config,
)

from vae_cli.checkpoint import load_checkpoint
from vae_cli.cli import console
from vae_cli.config.settings import Config
from vae_cli.config.toml import load_config
from vae_cli.data.dataset import load_dataset
from vae_cli.runs.folder import RunFolder
from vae_cli.runs.metrics import read_metrics
from vae_cli.training import step as step_module
from vae_cli.training.adam import MemberAdam
from vae_cli.training.loop import Member, train
from vae_cli.training.statistics import Statistics

# 1000 images in batches of 128: 7 full batches and a last one of 104 per epoch.
SHORT_LAST_BATCH = {"limit": 1000, "batch_size": 128, "device": "cpu", "binarize": "dynamic"}


def train_directly(
    folder: Path, data_dir: Path, config: Config, graphs: object = None, name: str = "r"
) -> Path:
    config = config.replace({"dataset": dataset_name(data_dir)})
    dataset = load_dataset(data_dir, config.data.dataset, config.data.limit)
    train(
        [Member(config, RunFolder(folder / name))],
        dataset=dataset,
        device=torch.device("cpu"),
        graphs=graphs,
    )
    return folder / name


def test_captured_steps_train_exactly_as_eager_steps(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replays must train on each new batch: the batch is copied into the graph's input."""
    config = Config().replace({**SHORT_LAST_BATCH, "epochs": 5})
    graphs = RecordedGraphs()
    record_batch_sizes(graphs, monkeypatch)
    captured = train_directly(tmp_path, data_dir, config, graphs, name="captured")
    eager = train_directly(tmp_path, data_dir, config, name="eager")
    assert metrics_without_timing(captured) == metrics_without_timing(eager)
    for name in ("last.pt", "best.pt"):
        weights = (
            load_checkpoint(run / "checkpoints" / name)["model"] for run in (captured, eager)
        )
        first, second = weights
        assert all(torch.equal(first[key], second[key]) for key in first), name
    assert Counter(what for what, _ in graphs.events)["replay"] > 30


def test_one_graph_per_batch_size_after_three_eager_steps(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config().replace({**SHORT_LAST_BATCH, "epochs": 5})
    graphs = RecordedGraphs()
    record_batch_sizes(graphs, monkeypatch)
    train_directly(tmp_path, data_dir, config, graphs)
    for batch in (128, 104):
        events = [what for what, size in graphs.events if size == batch]
        # Three real eager steps, then one capture, and a replay for the 4th step and after.
        assert events[:4] == ["warm-up", "warm-up", "warm-up", "capture"], batch
        calls = 5 * (7 if batch == 128 else 1)
        assert events[4:] == ["replay"] * (calls - 3)
    assert [size for what, size in graphs.events if what == "capture"] == [128, 104]


def test_a_phase_change_captures_again(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new phase's settings change what the step does: its step is built and captured anew."""
    text = TWO_PHASES.replace("limit = 512", "limit = 1000")
    (tmp_path / "c.toml").write_text(text.replace("batch_size = 64", "batch_size = 128"))
    config = load_config(tmp_path / "c.toml")
    graphs = RecordedGraphs()
    record_batch_sizes(graphs, monkeypatch)
    train_directly(tmp_path, data_dir, config, graphs)
    captures = [size for what, size in graphs.events if what == "capture"]
    assert captures == [128, 128]  # 2 epochs x 7 full batches per phase: 3 warm-ups, then one
    phase_two = graphs.events[graphs.events.index(("capture", 128)) + 1 :]
    assert phase_two.count(("warm-up", 128)) == 3  # the new step warms up again


def slow_first_call(seconds: float, first_call: dict[str, float]):
    """A stand-in for torch.compile whose first call takes `seconds` longer (compiling); the
    first call's whole duration lands in `first_call["seconds"]`."""

    def compile_(function, **options):
        calls = {"n": 0}

        def compiled(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > 1:
                return function(*args, **kwargs)
            started = time.perf_counter()
            time.sleep(seconds)
            result = function(*args, **kwargs)
            first_call["seconds"] = time.perf_counter() - started
            return result

        return compiled

    return compile_


def test_compile_and_capture_time_are_each_counted_once_and_apart(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first (compiling) step runs inside the graph's warm-up: its time is compile time
    only, never capture time too, and neither is taken out of the training seconds twice."""
    compiling = 1.0
    first_call: dict[str, float] = {}
    monkeypatch.setattr(torch, "compile", slow_first_call(compiling, first_call))
    config = Config().replace({**SHORT_LAST_BATCH, "epochs": 1, "compile": True})
    started = time.perf_counter()
    run = train_directly(tmp_path, data_dir, config, RecordedGraphs())
    wall = time.perf_counter() - started
    (metrics,) = read_metrics(RunFolder(run))
    # Bounds relative to the compiling call's own duration, so that a loaded machine, which
    # slows the step inside it, cannot fail them; counting it twice adds at least `compiling`.
    compiled_in = first_call["seconds"]
    assert compiled_in <= metrics["compile_seconds"] < compiled_in + compiling / 2
    assert metrics["capture_seconds"] < compiling  # capturing only: no compilation inside
    assert metrics["seconds"] > 0
    assert metrics["seconds"] + metrics["compile_seconds"] + metrics["capture_seconds"] < wall
    # The compiling step's images are left out with its time; every other image counts.
    trained = metrics["images_per_s"] * metrics["seconds"]
    assert trained == pytest.approx(1000 - 128, rel=1e-9)


def test_compile_leaves_an_iwae_step_eager_and_times_no_compilation(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compile compiles the ELBO only: an IWAE run's first step is training, not compile time."""
    monkeypatch.setattr(torch, "compile", slow_first_call(0.5, {}))
    config = Config().replace(
        {**SHORT_LAST_BATCH, "epochs": 1, "compile": True, "objective": "iwae", "k": 2}
    )
    run = train_directly(tmp_path, data_dir, config, RecordedGraphs())
    (metrics,) = read_metrics(RunFolder(run))
    assert metrics.get("compile_seconds", 0.0) == 0.0
    trained = metrics["images_per_s"] * metrics["seconds"]
    assert trained == pytest.approx(1000, rel=1e-9)  # every image counts


class AsyncGraphs(RecordedGraphs):
    """A device that runs behind the host, like a GPU: a replay returns at once and its work
    (taking DEVICE_SECONDS) happens when the host next waits for the device."""

    DEVICE_SECONDS = 0.02

    def __init__(self) -> None:
        super().__init__()
        self.pending: list = []

    def replay(self, graph: dict) -> None:
        self.pending.append(graph["work"])

    def synchronize(self) -> None:
        while self.pending:
            self.pending.pop(0)()
            time.sleep(self.DEVICE_SECONDS)


def test_a_time_budget_counts_the_training_done_not_the_launches(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs = AsyncGraphs()
    real_read = Statistics.read

    def read_after_the_device(stats: Statistics) -> list:
        graphs.synchronize()  # reading the sums waits for the device, as .tolist() does
        return real_read(stats)

    monkeypatch.setattr(Statistics, "read", read_after_the_device)
    budget = 1.0  # seconds; an epoch of 8 steps takes about 8 x 20 ms of device time
    config = Config().replace(
        {
            "limit": 512,
            "batch_size": 64,
            "device": "cpu",
            "epochs": 40,  # an upper bound the budget should end long before
            "time_budget": budget / 60,
        }
    )
    run = train_directly(tmp_path, data_dir, config, graphs)
    metrics = read_metrics(RunFolder(run))
    trained = sum(m["seconds"] for m in metrics)
    # It stopped at the first epoch end past the budget, by the time the device trained.
    assert trained >= budget and trained - metrics[-1]["seconds"] < budget
    # Each epoch's seconds hold at least the device time of its replayed steps.
    replays = Counter(what for what, _ in graphs.events)["replay"]
    assert trained >= replays * AsyncGraphs.DEVICE_SECONDS
    # Counting launches only, it would run to far more epochs (the upper bound is 40); no wall
    # clock bound here, as a loaded machine stretches the set-up around the budget.
    assert len(metrics) < 12


def test_each_phase_builds_its_step_from_its_own_settings(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """adam_beta2 and grad_clip set in phase 2 reach the Adam update and the clip of the step
    that trains it, and a resume in phase 2 builds its step the same way."""
    used: list[tuple[float, float]] = []
    real_adam, real_clip = MemberAdam.step, step_module.clip_per_member
    clip_seen: list[float] = []

    def adam_step(adam: MemberAdam, skip: torch.Tensor) -> None:
        used.append((adam.beta2[0], clip_seen[-1]))
        real_adam(adam, skip)

    def clip_per_member(grads: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
        clip_seen.append(max_norm.item())
        return real_clip(grads, max_norm)

    monkeypatch.setattr(MemberAdam, "step", adam_step)
    monkeypatch.setattr(step_module, "clip_per_member", clip_per_member)
    text = TWO_PHASES.replace("[[phases]]\n", "[[phases]]\nadam_beta2 = 0.9\ngrad_clip = 0.5\n")

    interrupt_at(monkeypatch, epoch=2, step=5, every=5)
    assert train_config(tmp_path, data_dir, "r", text).code == 130
    steps_per_epoch = 8
    assert used == [(0.99, 1.0)] * 2 * steps_per_epoch + [(0.9, 0.5)] * 5
    saved = load_checkpoint(tmp_path / "r/checkpoints/last.pt")
    assert saved["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.9)
    monkeypatch.setattr(console.TrainingDisplay, "on_progress", lambda *_: None)  # no Ctrl-C
    used.clear()
    resumed = run_vae("train", "--resume", tmp_path / "r", "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr
    assert used == [(0.9, 0.5)] * (2 * steps_per_epoch - 5)
    assert math.isfinite(read_metrics(RunFolder(tmp_path / "r"))[-1]["test_loss"])
