"""[[phases]]: one config trains a whole recipe (e.g. ELBO, then an IWAE fine-tune), and a
Ctrl-C in a later phase resumes where it stopped."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from conftest import (
    TWO_PHASES,
    StepSpy,
    assert_same_training_state,
    dataset_flags,
    interrupt_at,
    metrics_without_timing,
    run_vae,
    train_config,
)

from vae_cli.checkpoint import load_checkpoint

STEPS_PER_EPOCH = 8  # 512 images in batches of 64


def test_one_config_trains_both_phases(tmp_path: Path, data_dir: Path) -> None:
    result = train_config(tmp_path, data_dir, "r")
    assert result.code == 0, result.stderr
    run = tmp_path / "r"
    metrics = metrics_without_timing(run)
    assert [m["phase"] for m in metrics] == [1, 1, 2, 2]
    assert [m.get("test_iwae_k") for m in metrics] == [None, None, 2, 2]
    assert [m["lr"] for m in metrics[:2]] == [1.2e-3, 1.2e-3]  # phase 1: the [train] defaults
    # The step trains each phase's bound: the ELBO's parts add up, IWAE-2 is tighter than them.
    for line in metrics[:2]:
        assert line["train_loss"] == pytest.approx(line["train_recon"] + line["train_kl"])
    for line in metrics[2:]:
        assert line["train_loss"] < line["train_recon"] + line["train_kl"] - 0.05
    # Phase 2's cosine runs over its own 2 epochs, from 5e-4 down towards 1e-4.
    for epoch, line in zip((1, 2), metrics[2:], strict=True):
        progress = (epoch * STEPS_PER_EPOCH - 1) / (2 * STEPS_PER_EPOCH)
        expected = 1e-4 + (5e-4 - 1e-4) * (1 + math.cos(math.pi * progress)) / 2
        assert line["lr"] == pytest.approx(expected, rel=1e-12)
    last = load_checkpoint(run / "checkpoints/last.pt")
    assert last["epoch"] == 4 and last["phase"] == 1 and last["phase_start"]["epoch"] == 2
    assert last["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    # The ELBO phase's best is kept apart; best.pt is picked by the IWAE bound of phase 2.
    assert load_checkpoint(run / "checkpoints/best-elbo.pt")["epoch"] in (1, 2)
    assert load_checkpoint(run / "checkpoints/best.pt")["epoch"] in (3, 4)
    stored = tomllib.loads((run / "config.toml").read_text())
    assert stored["phases"] == [
        {"epochs": 2, "objective": "iwae", "k": 2, "lr": 5e-4, "lr_schedule": "cosine",
         "final_lr": 1e-4}
    ]  # fmt: skip


def test_a_run_config_with_phases_reproduces_the_run(tmp_path: Path, data_dir: Path) -> None:
    assert train_config(tmp_path, data_dir, "r").code == 0
    again = train_config(tmp_path, data_dir, "again", (tmp_path / "r/config.toml").read_text())
    assert again.code == 0, again.stderr
    assert_same_training_state(tmp_path / "r", tmp_path / "again")


def test_ctrl_c_in_phase_two_resumes_bit_exactly(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train_config(tmp_path, data_dir, "straight").code == 0

    interrupt_at(monkeypatch, epoch=2, step=5, every=5)
    interrupted = train_config(tmp_path, data_dir, "interrupted")
    assert interrupted.code == 130, interrupted.stderr
    saved = load_checkpoint(tmp_path / "interrupted/checkpoints/last.pt")
    assert saved["phase"] == 1 and saved["mid_epoch"] and saved["position"] == 5
    monkeypatch.undo()
    resumed = run_vae("train", "--resume", tmp_path / "interrupted", "--data-dir", data_dir)
    assert resumed.code == 0, resumed.stderr
    assert_same_training_state(tmp_path / "straight", tmp_path / "interrupted")
    again = run_vae("train", "--resume", tmp_path / "interrupted", "--data-dir", data_dir)
    assert again.code == 2 and "finished all its phases" in again.stderr


def test_a_resume_keeps_the_phases_as_written(tmp_path: Path, data_dir: Path) -> None:
    text = TWO_PHASES.replace("[[phases]]\nepochs = 2", "[[phases]]\nepochs = 1")
    config = tmp_path / "c.toml"
    config.write_text(text.replace("epochs = 2\nbatch_size", "epochs = 1\nbatch_size"))
    result = run_vae(
        "train", "--config", config, "--runs-dir", tmp_path, "--name", "r",
        "--data-dir", data_dir, "--quiet", *dataset_flags(data_dir),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    changed = run_vae("train", "--resume", tmp_path / "r", "--lr", 1e-2, "--data-dir", data_dir)
    assert changed.code == 2 and "--lr: this run trains in [[phases]]" in changed.stderr


@pytest.mark.parametrize(
    ("phase", "fragment"),
    [
        ("epochs = 1\nlearning_rate = 1e-3", "[[phases]] 2: learning_rate: unknown key"),
        ("epochs = 1\nlrs = 1e-3", "[[phases]] 2: lrs: unknown key (did you mean lr?)"),
        ("epochs = 1\nlatent_dim = 8", "[[phases]] 2: latent_dim cannot change between phases"),
        ('epochs = 1\nbinarize = "dynamic"', "[[phases]] 2: binarize cannot change"),
        ("lr = 1e-4", "[[phases]] 2: give the phase's length: epochs or time_budget"),
        ("epochs = 0", "[[phases]] 2 epochs: expected an integer >= 1"),
        ('epochs = 1\nobjective = "iwae"\nbeta = 0.5', "phase 2: --objective iwae"),
    ],
)
def test_a_bad_phase_table_is_one_error(
    phase: str, fragment: str, tmp_path: Path, data_dir: Path
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"[train]\nepochs = 1\n\n[[phases]]\n{phase}\n")
    result = run_vae(
        "train", "--config", config, "--runs-dir", tmp_path / "runs", "--data-dir", data_dir
    )
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert fragment in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_quality_recipe_is_one_config() -> None:
    from conftest import REPO

    from vae_cli.config.toml import load_config

    config = load_config(REPO / "configs/quality.toml")
    elbo, iwae = config.phase(0).train, config.phase(1).train
    assert (elbo.objective, elbo.time_budget, elbo.lr_schedule) == ("elbo", 65.0, "cosine")
    assert (iwae.objective, iwae.k, iwae.lr, iwae.time_budget) == ("iwae", 10, 1e-4, 38.5)
    assert iwae.adam_beta2 == elbo.adam_beta2 == 0.999 and iwae.grad_clip == 0.0  # carried over


def test_each_phase_warms_up_its_own_kl_weight(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = StepSpy(monkeypatch, steps_per_epoch=STEPS_PER_EPOCH)
    text = TWO_PHASES.replace("epochs = 2\nbatch_size", "epochs = 1\nbatch_size")
    phase_two = text.index("[[phases]]")
    text = text[:phase_two] + "[[phases]]\nepochs = 1\nbeta = 0.5\nkl_warmup_epochs = 1\n"
    assert train_config(tmp_path, data_dir, "r", text).code == 0
    warmup = [0.5 * step / STEPS_PER_EPOCH for step in range(STEPS_PER_EPOCH)]
    assert spy.beta == pytest.approx([1.0] * STEPS_PER_EPOCH + warmup)


def test_a_phase_with_a_time_budget_ends_at_the_first_epoch_past_it(
    tmp_path: Path, data_dir: Path
) -> None:
    text = TWO_PHASES.replace("[[phases]]\nepochs = 2", "[[phases]]\ntime_budget = 0.0001")
    assert train_config(tmp_path, data_dir, "r", text).code == 0
    assert [m["phase"] for m in metrics_without_timing(tmp_path / "r")] == [1, 1, 2]


def test_the_epoch_lines_name_the_phase(tmp_path: Path, data_dir: Path) -> None:
    result = train_config(tmp_path, data_dir, "r")
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert [line.split()[1:4] for line in lines] == [
        ["1", "phase", "1"],
        ["2", "phase", "1"],
        ["3", "phase", "2"],
        ["4", "phase", "2"],
    ]


def test_the_earlier_phase_keeps_its_last_best_even_when_writes_lag(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from vae_cli.training import checkpointer as train_module

    real = train_module.write_checkpoints

    def slow_write(state: dict, targets: list) -> None:  # a slow disk: writes trail training
        time.sleep(0.3)
        real(state, targets)

    monkeypatch.setattr(train_module, "write_checkpoints", slow_write)
    assert train_config(tmp_path, data_dir, "r").code == 0
    metrics = metrics_without_timing(tmp_path / "r")
    best_elbo_epoch = min(metrics[:2], key=lambda m: m["test_loss"])["epoch"]
    kept = load_checkpoint(tmp_path / "r/checkpoints/best-elbo.pt")
    assert kept["epoch"] == best_elbo_epoch and kept["phase"] == 0


def test_the_epoch_budgeted_recipe_reruns_to_the_bit(tmp_path: Path, data_dir: Path) -> None:
    """configs/quality3.toml scaled down (2 ELBO epochs, 1 IWAE/DReG epoch, 512 images) and
    run twice: every number and tensor agrees, as the full recipe's rerun would."""
    from conftest import REPO

    text = (REPO / "configs/quality3.toml").read_text()
    assert "time_budget" not in text  # budgeted in epochs only
    small = text.replace("epochs = 560\n", "epochs = 2\n").replace("epochs = 140\n", "epochs = 1\n")
    assert (
        small.count("\nepochs = ") == 2 and "\nepochs = 2\n" in small and "\nepochs = 1\n" in small
    )
    (tmp_path / "small.toml").write_text(small)
    runs = []
    for name in ("first", "again"):
        args = ("train", "--config", tmp_path / "small.toml", "--limit", 512, "--quiet")
        trained = run_vae(*args, *dataset_flags(data_dir), "--data-dir", data_dir,
                          "--runs-dir", tmp_path, "--name", name)  # fmt: skip
        assert trained.code == 0, trained.stderr
        runs.append(tmp_path / name)
    assert_same_training_state(*runs)
    lines = metrics_without_timing(runs[0])
    assert [(m["epoch"], m["phase"], m.get("test_iwae_k")) for m in lines] == [
        (1, 1, None), (2, 1, None), (3, 2, 5),
    ]  # fmt: skip
    assert all(m["chosen_on"] == "last" for m in lines)  # no split: nothing is chosen
