"""The captured CUDA step: replays match eager steps, runs repeat, Ctrl-C and resume work,
the last short batch, IWAE and bf16 autocast. Needs a CUDA GPU; skipped elsewhere."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_same_training_state,
    interrupt_at,
    make_step,
    metrics_without_timing,
    run_vae,
    train_args,
)

from vae_cli.config.settings import Config
from vae_cli.training.graphs import CapturedStep
from vae_cli.training.step import Step

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the captured step is CUDA-only)"
)
CUDA = torch.device("cuda")
SMALL = ("--limit", 1024, "--batch-size", 64, "--quiet", "--device", "cuda")  # 16 steps/epoch


def cuda_step(config: Config) -> Step | CapturedStep:
    return make_step(config, CUDA)


def weights(step: Step | CapturedStep) -> torch.Tensor:
    return step.stack.flat.detach()


def test_captured_replays_match_eager_steps() -> None:
    config = Config().replace({"binarize": "dynamic", "kl_warmup_epochs": 1, "device": "cuda"})
    eager = cuda_step(config.replace({"cuda_graph": False}))
    captured = cuda_step(config)
    assert isinstance(captured, CapturedStep) and isinstance(eager, Step)
    images = (torch.rand(20 * 128, 784, generator=torch.Generator().manual_seed(0)) * 255).to(
        device=CUDA, dtype=torch.uint8
    )
    for step in range(20):
        batch = images[step * 128 : (step + 1) * 128]
        lr, beta = 1e-3 * (1 - step / 40), min(1.0, step / 10)
        eager(batch[None], [lr], [beta])
        captured(batch[None], [lr], [beta])
    assert 128 in captured.graphs  # the last 20 - 3 steps were replays
    torch.testing.assert_close(weights(captured), weights(eager), rtol=1e-4, atol=1e-5)
    sums = (s.stack.stats.values for s in (captured, eager))
    torch.testing.assert_close(*sums, rtol=1e-4, atol=1e-3)
    assert captured.stack.stats.column("steps").item() == 20


def test_a_replayed_non_finite_step_is_skipped() -> None:
    captured = cuda_step(Config().replace({"device": "cuda"}))
    batch = torch.randint(0, 256, (64, 784), dtype=torch.uint8, device=CUDA)
    for _ in range(5):
        captured(batch[None], [1e-3], [1.0])
    before = weights(captured).clone()
    captured(batch[None], [1e-3], [math.inf])  # beta is read from its device tensor at replay
    assert torch.equal(weights(captured), before)
    assert captured.stack.stats.column("bad_steps").item() == 1


def test_two_runs_with_graphs_give_identical_metrics(tmp_path: Path, data_dir: Path) -> None:
    for name in ("a", "b"):
        result = run_vae(*train_args(tmp_path, data_dir, *SMALL, "--epochs", 3, name=name))
        assert result.code == 0, result.stderr
    assert_same_training_state(tmp_path / "a", tmp_path / "b")
    assert metrics_without_timing(tmp_path / "a") == metrics_without_timing(tmp_path / "b")
    first = json.loads((tmp_path / "a/metrics.jsonl").read_text().splitlines()[0])
    assert first["capture_seconds"] > 0


def test_ctrl_c_and_resume_with_graphs_are_bit_exact(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (*SMALL, "--batch-size", 16, "--epochs", 2)
    straight = run_vae(*train_args(tmp_path, data_dir, *args, name="straight"))
    assert straight.code == 0, straight.stderr

    interrupt_at(monkeypatch, epoch=1, step=25)
    result = run_vae(*train_args(tmp_path, data_dir, *args, name="interrupted"))
    assert result.code == 130, result.stderr
    monkeypatch.undo()
    resumed = run_vae(
        "train", "--resume", tmp_path / "interrupted", "--quiet", "--data-dir", data_dir
    )
    assert resumed.code == 0, resumed.stderr
    assert_same_training_state(tmp_path / "straight", tmp_path / "interrupted")


@pytest.mark.parametrize(
    "extra",
    [(), ("--objective", "iwae", "--k", 5), ("--amp",), ("--binarize", "dynamic")],
    ids=["elbo", "iwae", "amp", "dynamic"],
)
def test_graphs_follow_the_eager_run_including_the_last_short_batch(
    tmp_path: Path, data_dir: Path, extra: tuple
) -> None:
    # 1000 images at batch 128: 7 full batches and one of 104, captured from epoch 4 on.
    args = ("--limit", 1000, "--batch-size", 128, "--epochs", 5, "--quiet", "--device", "cuda")
    for name, graph in (("graph", "--cuda-graph"), ("eager", "--no-cuda-graph")):
        result = run_vae(*train_args(tmp_path, data_dir, *args, *extra, graph, name=name))
        assert result.code == 0, result.stderr
    graph, eager = (metrics_without_timing(tmp_path / n) for n in ("graph", "eager"))
    assert [m["step"] for m in graph] == [8, 16, 24, 32, 40]
    for g, e in zip(graph, eager, strict=True):
        assert g["train_loss"] == pytest.approx(e["train_loss"], rel=1e-3)
        assert g["test_loss"] == pytest.approx(e["test_loss"], rel=1e-3)


def test_a_time_budget_measures_the_training_done_on_the_gpu(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replays run behind the host: the training time (and so the budget) must follow the
    device, within 5 % of the wall time of the epochs' batches, waits included."""
    from vae_cli.data.dataset import load_dataset
    from vae_cli.runs.folder import RunFolder
    from vae_cli.runs.metrics import read_metrics
    from vae_cli.training import loop as train_module

    real, walls = train_module.run_epoch, []

    def timed_epoch(*args: object) -> None:
        started = time.perf_counter()
        real(*args)
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - started)

    monkeypatch.setattr(train_module, "run_epoch", timed_epoch)
    budget = 3.0
    config = Config().replace(
        {"limit": 20000, "batch_size": 128, "device": "cuda", "epochs": 1000,
         "time_budget": budget / 60}
    )  # fmt: skip
    dataset = load_dataset(data_dir, limit=20000)
    train_module.train([train_module.Member(config, RunFolder(tmp_path / "r"))], dataset=dataset)
    metrics = read_metrics(RunFolder(tmp_path / "r"))
    trained = sum(m["seconds"] for m in metrics)
    setup = sum(m.get("capture_seconds", 0.0) for m in metrics)
    assert trained >= budget and trained - metrics[-1]["seconds"] < budget
    assert trained == pytest.approx(sum(walls) - setup, rel=0.05)


def test_a_captured_population_trains_as_its_eager_members(tmp_path: Path, data_dir: Path) -> None:
    """Members in CUDA graphs: each member's numbers are those of the same member trained
    eagerly (to the GPU's float rounding), and a member equals the single run with its seed."""
    args = ("--limit", 1024, "--batch-size", 64, "--epochs", 2, "--quiet", "--device", "cuda")
    for name, graph in (("graph", "--cuda-graph"), ("eager", "--no-cuda-graph")):
        result = run_vae(*train_args(tmp_path, data_dir, *args, "--seeds", "0-3", graph, name=name))
        assert result.code == 0, result.stderr
    single = run_vae(*train_args(tmp_path, data_dir, *args, "--seed", 2, name="single"))
    assert single.code == 0, single.stderr
    for seed in range(4):
        graph, eager = (
            metrics_without_timing(tmp_path / n / f"seed-{seed}") for n in ("graph", "eager")
        )
        for g, e in zip(graph, eager, strict=True):
            assert g["test_loss"] == pytest.approx(e["test_loss"], rel=1e-3)
    member = metrics_without_timing(tmp_path / "graph/seed-2")
    for m, s in zip(member, metrics_without_timing(tmp_path / "single"), strict=True):
        assert m["test_loss"] == pytest.approx(s["test_loss"], rel=1e-3)


def test_two_layers_with_dreg_train_in_graphs(tmp_path: Path, data_dir: Path) -> None:
    args = (
        "--limit", 1024, "--batch-size", 64, "--epochs", 2, "--quiet", "--device", "cuda",
        "--stochastic-layers", 2, "--objective", "iwae", "--k", 4, "--dreg",
    )  # fmt: skip
    for name, graph in (("graph", "--cuda-graph"), ("eager", "--no-cuda-graph")):
        result = run_vae(*train_args(tmp_path, data_dir, *args, graph, name=name))
        assert result.code == 0, result.stderr
    for g, e in zip(
        *(metrics_without_timing(tmp_path / n) for n in ("graph", "eager")), strict=True
    ):
        assert g["test_iwae"] == pytest.approx(e["test_iwae"], rel=1e-3)


@pytest.mark.parametrize(
    "objective",
    [("--free-bits", 0.05), ("--objective", "iwae", "--k", 4, "--dreg")],
    ids=["elbo-free-bits", "iwae-dreg"],
)
def test_the_vamp_prior_trains_in_graphs(objective: tuple, tmp_path: Path, data_dir: Path) -> None:
    """The learned prior's step captured: the pseudo-inputs are parameters of the graph, and
    the captured run follows the eager one."""
    args = (
        "--limit", 1024, "--batch-size", 64, "--epochs", 2, "--quiet", "--device", "cuda",
        "--prior", "vamp", "--pseudo-inputs", 20, *objective,
    )  # fmt: skip
    for name, graph in (("graph", "--cuda-graph"), ("eager", "--no-cuda-graph")):
        result = run_vae(*train_args(tmp_path, data_dir, *args, graph, name=name))
        assert result.code == 0, result.stderr
    key = "test_iwae" if "iwae" in objective else "test_loss"
    for g, e in zip(
        *(metrics_without_timing(tmp_path / n) for n in ("graph", "eager")), strict=True
    ):
        assert g[key] == pytest.approx(e[key], rel=1e-3)


def test_gradients_on_the_gpu_match_the_cpu(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, *SMALL, "--epochs", 1, name="r"))
    assert result.code == 0, result.stderr
    reports = {}
    for device in ("cpu", "cuda"):
        done = run_vae(
            "gradients", "--checkpoint", tmp_path / "r", "--samples", 500, "--k", 4, "--json",
            "--device", device, "--data-dir", data_dir,
        )  # fmt: skip
        assert done.code == 0, done.stderr
        reports[device] = json.loads(done.stdout)
    for name in ("reparam", "stl"):
        cpu, gpu = (reports[d]["estimators"][name]["mean_mu"] for d in ("cpu", "cuda"))
        assert gpu == pytest.approx(cpu, rel=1e-3, abs=1e-4)  # the same draws, other kernels
    assert reports["cuda"]["encoder_snr"]["dreg"] == pytest.approx(
        reports["cpu"]["encoder_snr"]["dreg"], rel=1e-2
    )
