"""Populations: `vae train --seeds` trains one member per seed in one stacked step. Every member
is a real run (its numbers are those of a single run with its seed, to float rounding) in an
ordinary run folder; faults stay with the member they hit."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_same_training_state,
    dataset_name,
    interrupt_at,
    make_step,
    metrics_without_timing,
    poison_training_losses,
    run_vae,
    train_args,
)

from vae_cli.checkpoint import load_checkpoint
from vae_cli.cli import console
from vae_cli.config.settings import MAX_MEMBERS, Config
from vae_cli.data.dataset import load_dataset
from vae_cli.model.bounds import LossParts
from vae_cli.training import memory
from vae_cli.training.events import EpochEnded

SMALL = ("--limit", 512, "--batch-size", 64, "--epochs", 2, "--quiet")  # 8 steps per epoch
# A member and the single run with its seed differ by rounding only (batched products split
# their sums differently): measured 1.4e-7 (gradients) and 3e-8 (losses after an epoch).
TOLERANCE = 1e-5


def train_population(runs: Path, data_dir: Path, seeds: str, *extra: object, name: str = "pop"):
    return run_vae(*train_args(runs, data_dir, *SMALL, "--seeds", seeds, *extra, name=name))


def assert_resumes_as_straight(runs: Path, data_dir: Path, name: str, seeds: Iterable[int]) -> None:
    """`vae train --resume RUNS/name` finishes with every member bit-identical to RUNS/straight,
    the same population trained without a stop."""
    resumed = run_vae("train", "--resume", runs / name, "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr
    for seed in seeds:
        member = f"seed-{seed}"
        assert_same_training_state(runs / "straight" / member, runs / name / member)


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("", "expected seeds like 0-7 or 0,3,5"),
        ("1,1", "seed 1 is given twice"),
        ("0-3,2", "seed 2 is given twice"),
        ("-1", "expected seeds like 0-7 or 0,3,5"),
        ("4294967296", "seeds are at most 4294967295"),
        (f"0-{MAX_MEMBERS}", f"at most {MAX_MEMBERS} members"),
        ("3-1", "runs backwards"),
    ],
)
def test_bad_seeds_are_one_error_and_create_nothing(
    seeds: str, message: str, tmp_path: Path, data_dir: Path
) -> None:
    result = train_population(tmp_path, data_dir, seeds)
    assert result.code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: --seeds")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = run_vae(
        *train_args(runs, data_dir, *SMALL[:-1], "--seeds", "0,3,5", "--validation", 64, name="pop")
    )
    assert result.code == 0, result.stderr
    assert "test loss of best.pt over 3 members:" in result.stdout  # not --quiet: the summary
    assert "parameters per member" in result.stdout and "img/s per member" in result.stdout
    return runs / "pop"


def test_each_member_is_an_ordinary_run_folder(population: Path) -> None:
    record = json.loads((population / "population.json").read_text())
    assert record["members"] == ["seed-0", "seed-3", "seed-5"] and record["seeds"] == [0, 3, 5]
    losses, rows = [], record["summary"]["members"]
    for seed in (0, 3, 5):
        member = population / f"seed-{seed}"
        assert "seed = " + str(seed) in (member / "config.toml").read_text()
        assert json.loads((member / "status.json").read_text())["status"] == "finished"
        assert load_checkpoint(member / "checkpoints/last.pt")["config"].train.seed == seed
        metrics = metrics_without_timing(member)
        assert [m["epoch"] for m in metrics] == [1, 2]
        chosen = min(metrics, key=lambda m: m["val_loss"])  # chosen on validation: test reports
        losses.append(chosen["test_loss"])
        row = next(r for r in rows if r["run"] == f"seed-{seed}")
        assert (row["best_epoch"], row["chosen_on"]) == (chosen["epoch"], "validation")
        assert row["best_val_loss"] == chosen["val_loss"]
    summary = record["summary"]["best_test_loss"]
    assert summary["members"] == 3
    assert summary["mean"] == pytest.approx(statistics.fmean(losses), rel=1e-12)
    assert summary["std"] == pytest.approx(statistics.stdev(losses), rel=1e-12)
    assert len(set(losses)) == 3  # three different seeds, three different runs
    # One wall time per epoch, read once every member is tested, longer than its steps.
    for epoch in (0, 1):
        lines = [
            json.loads((population / f"seed-{seed}/metrics.jsonl").read_text().splitlines()[epoch])
            for seed in (0, 3, 5)
        ]
        assert len({line["epoch_seconds"] for line in lines}) == 1
        assert lines[0]["epoch_seconds"] > max(line["seconds"] for line in lines)


def test_every_command_reads_a_member_and_a_population_names_the_member_it_used(
    population: Path, tmp_path: Path, data_dir: Path
) -> None:
    member = population / "seed-3"
    for command in (
        ("eval", "--checkpoint", member, "--limit", 100, "--json"),
        ("sample", "--checkpoint", member, "--out", tmp_path / "s.png"),
        ("reconstruct", "--checkpoint", member, "--out", tmp_path / "r.png"),
        ("interpolate", "--checkpoint", member, "--out", tmp_path / "i.png"),
        ("latent", "--checkpoint", member, "--out", tmp_path / "l.png", "--n-inputs", 2),
        ("export", "--checkpoint", member, "--out", tmp_path / "m.safetensors"),
    ):
        reads_data = command[0] not in ("sample", "export")
        result = run_vae(*command, *(("--data-dir", data_dir) if reads_data else ()))
        assert result.code == 0, (command, result.stderr)
    listed = run_vae("runs", "--runs-dir", population.parent)
    assert all(f"pop/seed-{seed}" in listed.stdout for seed in (0, 3, 5))
    record = json.loads((population / "population.json").read_text())["summary"]["members"]
    best = min(record, key=lambda row: row["best_val_loss"])["run"]
    sampled = run_vae("sample", "--checkpoint", population, "--out", tmp_path / "p.png")
    assert sampled.code == 0, sampled.stderr
    assert sampled.stdout.splitlines()[0].startswith(
        f"using {population / best}: the best of the 3 members of {population}"
    )


def test_the_latest_run_being_a_population_answers_by_its_best_member(
    population: Path, tmp_path: Path
) -> None:
    import os
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(population, runs / "pop")
    record = json.loads((population / "population.json").read_text())["summary"]["members"]
    ranked = sorted(record, key=lambda row: row["best_val_loss"])
    best, worst = ranked[0]["run"], ranked[-1]["run"]
    newest = runs / "pop" / worst / "checkpoints"
    os.utime(newest, (newest.stat().st_atime, newest.stat().st_mtime + 3600))
    result = run_vae("sample", "--runs-dir", runs)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"using {runs / 'pop' / best} (the best by validation loss")
    assert (runs / "pop" / best / "sample_seed42.png").is_file()
    assert not (runs / "pop" / worst / "sample_seed42.png").exists()


def test_a_member_is_the_single_run_with_its_seed(
    population: Path, tmp_path: Path, data_dir: Path
) -> None:
    single = run_vae(
        *train_args(tmp_path, data_dir, *SMALL, "--seed", 3, "--validation", 64, name="single")
    )
    assert single.code == 0, single.stderr
    member, alone = (
        metrics_without_timing(p) for p in (population / "seed-3", tmp_path / "single")
    )
    for a, b in zip(member, alone, strict=True):
        for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_kl", "lr"):
            assert a[key] == pytest.approx(b[key], rel=TOLERANCE), key


def test_first_step_gradients_match_the_single_runs(data_dir: Path) -> None:
    config = Config().replace({"binarize": "dynamic"})
    batch = load_dataset(data_dir, dataset_name(data_dir), limit=128).train_images
    stacked = make_step(config, seeds=(0, 1, 2, 3))
    single = make_step(config.replace({"seed": 2}))
    for step in (stacked, single):
        step.run(batch.expand(step.stack.size, -1, -1))
    gradients = [
        s.stack.single_layout(s.stack.flat_grad[m]) for s, m in ((stacked, 2), (single, 0))
    ]
    scale = gradients[1].abs().max()
    assert (gradients[0] - gradients[1]).abs().max() <= TOLERANCE * scale
    assert not torch.equal(stacked.stack.flat_grad[1], stacked.stack.flat_grad[2])


def test_a_diverging_member_is_frozen_and_failed_while_the_others_train_on(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def member_one_goes_nan_in_epoch_two(step: int, parts: LossParts) -> LossParts:
        if step <= 8:  # from the first step of epoch 2 on, member 1 only
            return parts
        return parts._replace(loss=parts.loss * torch.tensor([1.0, float("nan"), 1.0]))

    poison_training_losses(monkeypatch, member_one_goes_nan_in_epoch_two)
    result = train_population(tmp_path, data_dir, "0-2", "--max-bad-steps", 3, "--device", "cpu")
    assert result.code == 0, result.stderr
    assert "seed-1 failed: 3 non-finite steps in a row" in result.stderr
    status = {s: json.loads((tmp_path / f"pop/seed-{s}/status.json").read_text())["status"]
              for s in range(3)}  # fmt: skip
    assert status == {0: "finished", 1: "failed", 2: "finished"}
    failed = load_checkpoint(tmp_path / "pop/seed-1/checkpoints/last.pt")
    assert failed["epoch"] == 1 and all(torch.isfinite(t).all() for t in failed["model"].values())
    assert [m["epoch"] for m in metrics_without_timing(tmp_path / "pop/seed-1")] == [1]
    assert [m["epoch"] for m in metrics_without_timing(tmp_path / "pop/seed-2")] == [1, 2]
    summary = json.loads((tmp_path / "pop/population.json").read_text())["summary"]
    assert [row["status"] for row in summary["members"]] == ["finished", "failed", "finished"]


def test_ctrl_c_saves_every_member_and_the_population_resumes_bit_exactly(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train_population(tmp_path, data_dir, "0-2", name="straight").code == 0

    interrupt_at(monkeypatch, epoch=1, step=5, every=5)
    stopped = train_population(tmp_path, data_dir, "0-2", name="stopped")
    assert stopped.code == 130
    assert stopped.stderr.strip().splitlines()[-2:] == [
        "Interrupted: saved 3 runs. Resume with:",
        f"  vae train --resume {tmp_path / 'stopped'}",
    ]
    for seed in range(3):
        saved = load_checkpoint(tmp_path / f"stopped/seed-{seed}/checkpoints/last.pt")
        assert saved["mid_epoch"] and (saved["epoch"], saved["position"]) == (1, 5)
    monkeypatch.undo()
    assert_resumes_as_straight(tmp_path, data_dir, "stopped", range(3))


def test_the_memory_check_counts_every_member(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config().replace({"limit": 512, "batch_size": 64})
    one = memory.step_bytes(config, 512)
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 3 * one)
    assert train_population(tmp_path, data_dir, "0-2").code == 0  # three fit
    refused = train_population(tmp_path, data_dir, "0-3", name="four")
    assert refused.code == 2 and "x 4 members" in refused.stderr and "--seeds" in refused.stderr
    assert not (tmp_path / "four").exists()


def test_a_resume_cannot_change_the_members(population: Path, data_dir: Path) -> None:
    result = run_vae("train", "--resume", population, "--seeds", "0-9", "--data-dir", data_dir)
    assert result.code == 2 and "--seeds: a resume continues the members" in result.stderr


def test_a_kill_between_two_members_saves_leaves_one_step_and_resumes_bit_exactly(
    tmp_path: Path, data_dir: Path, start_blocking_write: Callable[..., subprocess.Popen]
) -> None:
    three = ("--epochs", 3)
    assert train_population(tmp_path, data_dir, "0-1", *three, name="straight").code == 0
    marker = tmp_path / "inside-the-write"
    # Writes of epoch 2: seed-0's checkpoint (the 3rd), then seed-1's (the 4th): stop in it.
    args = train_args(tmp_path, data_dir, *SMALL, *three, "--seeds", "0-1", name="killed")
    process = start_blocking_write("last.pt.pending", 4, marker, *args)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()  # kill -9 between the two members' writes of one epoch
    process.communicate()
    epochs = [load_checkpoint(tmp_path / f"killed/seed-{s}/checkpoints/last.pt")["epoch"]
              for s in (0, 1)]  # fmt: skip
    assert epochs == [1, 1]  # the epoch is saved for all members or for none
    assert_resumes_as_straight(tmp_path, data_dir, "killed", (0, 1))
    assert not list((tmp_path / "killed").glob("*/checkpoints/*.pending"))


def test_a_second_ctrl_c_in_the_epoch_bookkeeping_saves_one_step_and_says_how_to_resume(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train_population(tmp_path, data_dir, "0-2", name="straight").code == 0
    real = console.TrainingDisplay.on_epoch

    def ctrl_c_twice(self: console.TrainingDisplay, event: EpochEnded) -> None:
        real(self, event)
        if event.metrics.epoch == 2 and event.label == "seed-0":
            signal.raise_signal(signal.SIGINT)  # asks to stop after the step
            signal.raise_signal(signal.SIGINT)  # stops now, before seed-1 is saved

    monkeypatch.setattr(console.TrainingDisplay, "on_epoch", ctrl_c_twice)
    stopped = train_population(tmp_path, data_dir, "0-2", name="stopped")
    assert stopped.code == 130
    assert stopped.stderr.strip().splitlines()[-1] == f"  vae train --resume {tmp_path / 'stopped'}"
    assert "Traceback" not in stopped.stderr
    epochs = {load_checkpoint(tmp_path / f"stopped/seed-{s}/checkpoints/last.pt")["epoch"]
              for s in range(3)}  # fmt: skip
    assert epochs == {1}
    monkeypatch.undo()
    assert_resumes_as_straight(tmp_path, data_dir, "stopped", range(3))


def test_a_population_of_one_resumes_as_a_population(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at(monkeypatch, epoch=1, step=5, every=5)
    stopped = train_population(tmp_path, data_dir, "3", name="one")
    assert stopped.code == 130
    assert stopped.stderr.strip().splitlines()[-1] == f"  vae train --resume {tmp_path / 'one'}"
    monkeypatch.undo()
    resumed = run_vae("train", "--resume", tmp_path / "one", "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr
    (row,) = json.loads((tmp_path / "one/population.json").read_text())["summary"]["members"]
    best = min(metrics_without_timing(tmp_path / "one/seed-3"), key=lambda m: m["test_loss"])
    assert (row["status"], row["best_epoch"]) == ("finished", best["epoch"])


def test_a_member_resumed_alone_updates_its_population(
    population: Path, tmp_path: Path, data_dir: Path
) -> None:
    import shutil

    copy = tmp_path / "pop"
    shutil.copytree(population, copy)
    result = run_vae("train", "--resume", copy / "seed-3", "--epochs", 3, "--data-dir", data_dir)
    assert result.code == 0, result.stderr
    rows = json.loads((copy / "population.json").read_text())["summary"]["members"]
    best = min(metrics_without_timing(copy / "seed-3"), key=lambda m: m["test_loss"])
    assert next(r for r in rows if r["run"] == "seed-3")["best_epoch"] == best["epoch"]
    together = run_vae("train", "--resume", copy, "--epochs", 3, "--data-dir", data_dir)
    assert together.code == 2
    assert f"{copy / 'seed-3'} was saved at epoch 3" in together.stderr
    assert "resume each member to the same epoch first" in together.stderr


def test_a_failed_member_gets_the_pictures_of_its_last_epoch(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def member_one_goes_nan_in_epoch_two(step: int, parts: LossParts) -> LossParts:
        if step <= 8:
            return parts
        return parts._replace(loss=parts.loss * torch.tensor([1.0, float("nan")]))

    poison_training_losses(monkeypatch, member_one_goes_nan_in_epoch_two)
    result = train_population(tmp_path, data_dir, "0-1", "--max-bad-steps", 3, "--epochs", 3)
    assert result.code == 0, result.stderr
    failed = tmp_path / "pop/seed-1"
    assert json.loads((failed / "status.json").read_text())["status"] == "failed"
    assert (failed / "curves.png").is_file()
    # Drawn from epoch 1's weights (what last.pt holds), as an uninterrupted draw would be.
    assert sorted(p.name for p in (failed / "samples").iterdir()) == ["epoch_001.png"]
    assert (failed / "reconstructions/epoch_001.png").is_file()
    survivor = tmp_path / "pop/seed-0"
    assert (survivor / "samples/epoch_003.png").is_file() and (survivor / "curves.png").is_file()


def test_settling_finishes_a_commit_a_kill_cut_short_and_drops_an_uncommitted_one(
    tmp_path: Path,
) -> None:
    from vae_cli.runs.population import COMMIT_FILE, commit_checkpoints, settle_checkpoints

    def member(name: str, last: bytes, pending: bytes | None) -> Path:
        folder = tmp_path / name / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(last)
        if pending is not None:
            (folder / "last.pt.pending").write_bytes(pending)
        return folder

    a, b = member("seed-0", b"epoch 1", None), member("seed-1", b"epoch 1", b"epoch 2")
    (a / "last.pt").write_bytes(b"epoch 2")  # seed-0 was renamed before the kill
    renames = [["seed-0/checkpoints/last.pt.pending", "seed-0/checkpoints/last.pt"],
               ["seed-1/checkpoints/last.pt.pending", "seed-1/checkpoints/last.pt"]]  # fmt: skip
    (tmp_path / COMMIT_FILE).write_text(json.dumps({"renames": renames}))
    settle_checkpoints(tmp_path)
    assert [(f / "last.pt").read_bytes() for f in (a, b)] == [b"epoch 2", b"epoch 2"]
    assert not (tmp_path / COMMIT_FILE).exists() and not list(tmp_path.glob("*/*/*.pending"))
    (a / "last.pt.pending").write_bytes(b"epoch 3")  # written, never committed
    settle_checkpoints(tmp_path)
    assert (a / "last.pt").read_bytes() == b"epoch 2" and not (a / "last.pt.pending").exists()
    (a / "last.pt.pending").write_bytes(b"epoch 3")
    (b / "last.pt.pending").write_bytes(b"epoch 3")
    commit_checkpoints(tmp_path, [a / "last.pt.pending", b / "last.pt.pending"])
    assert [(f / "last.pt").read_bytes() for f in (a, b)] == [b"epoch 3", b"epoch 3"]


def test_a_config_files_run_table_trains_a_population(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "pop.toml"
    config.write_text('[run]\nseeds = "4,6"\n[data]\nlimit = 256\n[train]\nepochs = 1\n')
    result = run_vae(*train_args(tmp_path, data_dir, "--config", config, "--quiet", name="p"))
    assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "p/population.json").read_text())
    assert record["members"] == ["seed-4", "seed-6"] and record["seeds"] == [4, 6]
    member = (tmp_path / "p/seed-6/config.toml").read_text()
    assert "seed = 6" in member and "[run]" not in member and "seeds" not in member


@pytest.mark.parametrize("in_file", [False, True], ids=["flag", "config file"])
def test_a_seed_beside_seeds_is_refused_not_ignored(
    tmp_path: Path, data_dir: Path, in_file: bool
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[train]\nseed = 0\n" if in_file else "[train]\nepochs = 1\n")
    seed = () if in_file else ("--seed", 3)
    result = train_population(tmp_path / "runs", data_dir, "0-1", "--config", config, *seed)
    where = f"{config}: [train] seed" if in_file else "--seed"
    assert result.code == 2
    assert result.stderr.strip() == (
        f"Error: {where} and --seeds 0-1: a population's members take their seeds from "
        "--seeds; drop one of them"
    )
    assert not (tmp_path / "runs").exists()
