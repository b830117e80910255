"""The validation split: best.pt, a sweep's trial values and its pruning are chosen on held-out
training images, never on the test set. Shown with real IDX files cut from MNIST and then
edited: test pixels changed change no choice, validation pixels changed do."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from conftest import metrics_without_timing, run_vae, write_idx

from vae_cli.checkpoint import load_checkpoint
from vae_cli.data.dataset import load_dataset
from vae_cli.data.split import split_digest, validation_indices

TRAIN, TEST, VALIDATION = 600, 200, 100
TINY = ("--hidden-dim", 32, "--latent-dim", 4, "--batch-size", 50, "--device", "cpu", "--quiet")
SWEEP = """
[model]
hidden_dim = 32
latent_dim = 4
[data]
dataset = "fashion-mnist"
validation = 100
[train]
epochs = 3
batch_size = 50
device = "cpu"
[search]
lr = { low = 1e-4, high = 2e-2, log = true }
"""


@pytest.fixture(scope="module")
def mnist_cut(data_dir: Path) -> tuple[torch.Tensor, ...]:
    """The first TRAIN training and TEST test images of MNIST, with their labels."""
    dataset = load_dataset(data_dir, "mnist", TRAIN)
    return (
        dataset.train_images,
        dataset.train_labels,
        dataset.test_images[:TEST],
        dataset.test_labels[:TEST],
    )


def write_dataset(root: Path, train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor,
                  test_labels: torch.Tensor) -> Path:  # fmt: skip
    """IDX files in torchvision's FashionMNIST layout (no MD5 list, so edited pixels load)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, images, classes in (("train", train, labels), ("t10k", test, test_labels)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images.reshape(-1, 28, 28), 0x803)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", classes, 0x801)
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, mnist_cut: tuple) -> dict[str, Path]:
    """The same images three times: as cut; with every test image made white; with every
    validation image made white (a digit model scores white pages worse the longer it trains,
    so a choice made on them goes to the first epoch)."""
    train, labels, test, test_labels = mnist_cut
    held_out = validation_indices(TRAIN, VALIDATION)
    white_validation = train.clone()
    white_validation[held_out] = 255
    variants = {
        "as cut": (train, test),
        "test changed": (train, torch.full_like(test, 255)),
        "validation changed": (white_validation, test),
    }
    root = tmp_path_factory.mktemp("datasets")
    return {
        name: write_dataset(root / folder(name), images, labels, tests, test_labels)
        for name, (images, tests) in variants.items()
    }


def train_on(data: Path, runs: Path, name: str, *extra: object) -> Path:
    result = run_vae(
        "train", "--data-dir", data, "--dataset", "fashion-mnist", "--runs-dir", runs,
        "--name", name, "--validation", VALIDATION, "--epochs", 3, *TINY, *extra,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return runs / name


def folder(variant: str) -> str:
    return variant.replace(" ", "-")


def chosen_epoch(run: Path) -> int:
    return load_checkpoint(run / "checkpoints/best.pt")["epoch"]


def test_test_pixels_change_no_choice_and_validation_pixels_do(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    runs = {
        name: train_on(data, tmp_path, name.replace(" ", "-")) for name, data in datasets.items()
    }
    metrics = {name: metrics_without_timing(run) for name, run in runs.items()}
    same, moved = metrics["as cut"], metrics["test changed"]
    assert [m["val_loss"] for m in same] == [m["val_loss"] for m in moved]
    assert all(a["test_loss"] != b["test_loss"] for a, b in zip(same, moved, strict=True))
    assert chosen_epoch(runs["as cut"]) == chosen_epoch(runs["test changed"]) == 3
    # White test pages get worse with training, yet best.pt does not move back to epoch 1 ...
    assert min(moved, key=lambda m: m["test_loss"])["epoch"] == 1
    # ... while white validation pages do move it: the choice follows the validation split.
    assert min(metrics["validation changed"], key=lambda m: m["val_loss"])["epoch"] == 1
    assert chosen_epoch(runs["validation changed"]) == 1
    best = load_checkpoint(runs["as cut"] / "checkpoints/best.pt")["best"]
    assert best == {"loss": same[2]["val_loss"], "epoch": 3, "chosen_on": "validation"}


def sweep(data: Path, runs: Path) -> list[optuna.trial.FrozenTrial]:
    config = runs / "sweep.toml"
    runs.mkdir()
    config.write_text(SWEEP)
    result = run_vae(
        "tune", "--config", config, "--runs-dir", runs, "--data-dir", data, "--trials", 6,
        "--seed", 3,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    storage = f"sqlite:///{runs / 'sweep' / 'study.db'}"
    return optuna.load_study(study_name="sweep", storage=storage).get_trials()


def test_a_sweep_never_sees_the_test_set(datasets: dict[str, Path], tmp_path: Path) -> None:
    studies = {
        name: sweep(data, tmp_path / name.replace(" ", "-")) for name, data in datasets.items()
    }
    outcome = {
        name: [(t.state.name, t.value, dict(t.intermediate_values)) for t in trials]
        for name, trials in studies.items()
    }
    assert outcome["as cut"] == outcome["test changed"]
    assert {state for state, _, _ in outcome["as cut"]} == {"COMPLETE", "PRUNED"}  # it pruned
    assert outcome["validation changed"] != outcome["as cut"]
    for trial in studies["as cut"]:  # each reported value is that epoch's validation bound
        run = Path(trial.user_attrs["run_dir"])
        reported = {m["epoch"]: m["val_loss"] for m in metrics_without_timing(run)}
        assert trial.intermediate_values == reported


def test_a_sweep_without_a_split_gets_one_and_says_so(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.replace("validation = 100\n", "").replace("epochs = 3", "epochs = 1"))
    result = run_vae(
        "tune", "--config", config, "--runs-dir", tmp_path, "--data-dir", datasets["as cut"],
        "--trials", 1,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "sets no [data] validation: trials are chosen and pruned on 100 held-out" in (
        result.stdout.replace("\n", "")
    )
    trial = tmp_path / "sweep" / "trial-0000"
    assert "validation = 100" in (trial / "config.toml").read_text()
    assert "val_loss" in metrics_without_timing(trial)[0]


def test_the_split_is_the_datas_recorded_and_kept_on_resume(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    data = datasets["as cut"]
    one = train_on(data, tmp_path, "seed-0")
    other = train_on(data, tmp_path, "seed-9", "--seed", 9)
    digest = split_digest(validation_indices(TRAIN, VALIDATION))
    for run in (one, other):  # the run's seed does not choose the split
        manifest = (run / "config.toml").read_text()
        assert f'validation_sha256 = "{digest}"' in manifest
        assert "validation_images = 100" in manifest
    halves = train_on(data, tmp_path, "halves", "--epochs", 2)
    resumed = run_vae("train", "--resume", halves, "--epochs", 3, "--data-dir", data, "--quiet")
    assert resumed.code == 0, resumed.stderr
    assert metrics_without_timing(halves) == metrics_without_timing(one)
    # A resume on data whose training set differs would hold out other images: refused.
    shorter = write_dataset(tmp_path / "shorter", *(t[:-1] for t in load_parts(data)))
    refused = run_vae("train", "--resume", halves, "--epochs", 4, "--data-dir", shorter)
    assert refused.code == 2 and "its validation split" in refused.stderr
    assert refused.stderr.count("\n") == 1


def load_parts(data: Path) -> tuple[torch.Tensor, ...]:
    dataset = load_dataset(data, "fashion-mnist")
    return (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--validation", -1), "--validation: expected an integer >= 0, got -1"),
        (("--validation", 600), "--validation 600: expected fewer than the 600 training images"),
        (
            ("--validation", 50, "--limit", 50),
            "--validation 50: expected fewer than the 50 training images --limit 50 holds",
        ),
        (("--batch-size", 601), "--batch-size 601: expected at most the 600 training images"),
        (
            ("--batch-size", 550, "--validation", 100),
            "--batch-size 550: expected at most the 500 training images",
        ),
    ],
)
def test_a_split_or_batch_that_leaves_nothing_to_train_on_is_one_error(
    flags: tuple, message: str, datasets: dict[str, Path], tmp_path: Path
) -> None:
    result = run_vae(
        "train", "--data-dir", datasets["as cut"], "--dataset", "fashion-mnist", "--runs-dir",
        tmp_path, *flags,
    )  # fmt: skip
    assert (
        result.code == 2
        and result.stderr == f"Error: {message}" + result.stderr.split(message, 1)[1]
    )
    assert result.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_a_population_chooses_each_member_on_validation(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    data = datasets["validation changed"]  # every member's best.pt is its first epoch
    result = run_vae(
        "train", "--data-dir", data, "--dataset", "fashion-mnist", "--runs-dir", tmp_path,
        "--name", "pop", "--seeds", "0-2", "--validation", VALIDATION, "--epochs", 3, *TINY,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "pop/population.json").read_text())["summary"]
    for row in record["members"]:
        metrics = metrics_without_timing(tmp_path / "pop" / row["run"])
        assert (row["best_epoch"], row["chosen_on"]) == (1, "validation")
        assert row["best_test_loss"] == metrics[0]["test_loss"]  # the test number at epoch 1
        assert chosen_epoch(tmp_path / "pop" / row["run"]) == 1


def test_an_iwae_phase_chooses_on_its_validation_bound(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "phases.toml"
    config.write_text(
        '[data]\ndataset = "fashion-mnist"\nvalidation = 100\n[train]\nepochs = 2\n'
        '[[phases]]\nepochs = 2\nobjective = "iwae"\nk = 3\nlr = 0.02\n'
    )
    result = run_vae(
        "train", "--config", config, "--data-dir", datasets["validation changed"],
        "--runs-dir", tmp_path, "--name", "r", *TINY,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    run = tmp_path / "r"
    metrics = metrics_without_timing(run)
    first, second = metrics[:2], metrics[2:]
    assert all("val_iwae" not in m for m in first) and all("val_iwae" in m for m in second)
    best = min(second, key=lambda m: m["val_iwae"])
    assert load_checkpoint(run / "checkpoints/best.pt")["best"] == {
        "loss": best["val_iwae"], "epoch": best["epoch"], "chosen_on": "validation",
    }  # fmt: skip
    elbo_best = min(first, key=lambda m: m["val_loss"])["epoch"]
    assert load_checkpoint(run / "checkpoints/best-elbo.pt")["epoch"] == elbo_best


def test_a_run_from_before_the_split_says_it_was_chosen_on_the_test_set(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    from vae_cli.checkpoint import save_checkpoint

    run = train_on(datasets["as cut"], tmp_path / "runs", "old")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:  # what a metrics line held before: no split, no word on the choice
        for key in ("chosen_on", "val_loss", "val_recon", "val_kl"):
            line.pop(key)
    lines[0]["test_loss"] = -1.0  # the old rule's choice: the lowest test loss
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    best = load_checkpoint(run / "checkpoints/best.pt")
    best["best"].pop("chosen_on")
    best["config"] = best["config"].to_dict()
    save_checkpoint(run / "checkpoints/best.pt", best)
    evaluated = run_vae("eval", "--checkpoint", run, "--data-dir", datasets["as cut"], "--json")
    assert evaluated.code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["chosen"] == "chosen on the test set (trained before validation splits)"
    listed = run_vae("runs", "--runs-dir", tmp_path / "runs")
    assert "-1.00*" in listed.stdout
    assert "* best.pt is chosen on the test set (trained before validation splits)" in (
        listed.stdout
    )
