"""A two-stochastic-layer model through every command: train (ELBO, IWAE with DReG, phases,
resume), eval, sample, reconstruct, interpolate, latent, export, the Python API, sweeps and
populations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_same_training_state, run_vae, train_args

from vae_cli.checkpoint import load_checkpoint

TWO = (
    "--stochastic-layers", 2, "--latent-dim", 8, "--latent2-dim", 4, "--hidden-dim", 64,
    "--hidden2-dim", 32, "--binarize", "dynamic", "--limit", 512, "--batch-size", 64, "--quiet",
)  # fmt: skip


@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = run_vae(*train_args(runs, data_dir, *TWO[:-1], "--epochs", 2, name="two"))
    assert result.code == 0, result.stderr
    assert "model       2 layers 8-4, chain, " in result.stdout  # the start panel: both layers
    return runs / "two"


def test_eval_reports_each_layers_kl_and_active_units(two_layer_run: Path, data_dir: Path) -> None:
    result = run_vae(
        "eval", "--checkpoint", two_layer_run, "--data-dir", data_dir, "--limit", 200,
        "--iw-samples", 20, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["kl_per_layer"]) == 2 and len(report["kl_per_dim"]) == 12
    assert sum(report["kl_per_layer"]) == pytest.approx(report["kl"], rel=1e-5)
    assert report["iw"]["nll"] <= report["loss"] + 1.0  # the IW bound is the tighter one
    text = run_vae("eval", "--checkpoint", two_layer_run, "--data-dir", data_dir, "--limit", 200)
    assert "KL of z1, z2" in text.stdout and "active units z1, z2" in text.stdout


def test_pictures_of_a_two_layer_model(two_layer_run: Path, tmp_path: Path, data_dir: Path) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    for out in (first, again):
        result = run_vae("sample", "--checkpoint", two_layer_run, "--seed", 4, "--out", out)
        assert result.code == 0, result.stderr
    assert first.read_bytes() == again.read_bytes()  # ancestral sampling, seeded
    other = tmp_path / "c.png"
    assert run_vae("sample", "--checkpoint", two_layer_run, "--seed", 5, "--out", other).code == 0
    assert other.read_bytes() != first.read_bytes()
    means = [tmp_path / f"m{i}.png" for i in range(2)]
    for out in means:
        done = run_vae(
            "reconstruct", "--checkpoint", two_layer_run, "--mean-only", "--out", out,
            "--data-dir", data_dir,
        )  # fmt: skip
        assert done.code == 0, done.stderr
    assert means[0].read_bytes() == means[1].read_bytes()  # means through both layers
    for command in (
        ("reconstruct", "--out", tmp_path / "r.png"),
        ("interpolate", "--out", tmp_path / "i.png"),
        ("latent", "--out", tmp_path / "l.png", "--n-inputs", 2, "--samples-per-input", 20),
    ):
        result = run_vae(command[0], "--checkpoint", two_layer_run, "--data-dir", data_dir,
                         *command[1:])  # fmt: skip
        assert result.code == 0, (command, result.stderr)


def test_the_latent_view_names_the_layer_it_shows(two_layer_run: Path, data_dir: Path) -> None:
    from vae_cli.commands.latent import latent_view
    from vae_cli.commands.load import load_model
    from vae_cli.data.dataset import load_dataset, to_float

    loaded = load_model(two_layer_run / "checkpoints/best.pt", "cpu")
    dataset = load_dataset(data_dir, limit=100)
    view = latent_view(
        loaded, to_float(dataset.test_images), dataset.test_labels,
        n_inputs=2, samples_per_input=10, seed=0,
    )  # fmt: skip
    assert view.layer == "z1" and view.axis_names == ("PC1 of mu1", "PC2 of mu1")


def test_export_and_the_python_api_keep_both_layers(two_layer_run: Path, tmp_path: Path) -> None:
    import vae_cli

    out = tmp_path / "m.safetensors"
    assert run_vae("export", "--checkpoint", two_layer_run, "--out", out).code == 0
    for path in (two_layer_run, out):
        vae = vae_cli.load(path)
        assert vae.latent_dims == [8, 4]
        z2 = torch.randn(3, 4)
        assert vae.generate(z2).shape == (3, 784)
    best = load_checkpoint(two_layer_run / "checkpoints/best.pt")["model"]
    assert any(name.startswith("encoder2.") for name in best)
    samples = [run_vae("sample", "--checkpoint", p, "--seed", 1, "--out", tmp_path / f"{i}.png")
               for i, p in enumerate((two_layer_run, out))]  # fmt: skip
    assert all(s.code == 0 for s in samples)
    assert (tmp_path / "0.png").read_bytes() == (tmp_path / "1.png").read_bytes()


def test_iwae_with_dreg_resumes_bit_exactly(tmp_path: Path, data_dir: Path) -> None:
    iwae = (*TWO, "--objective", "iwae", "--k", 3, "--dreg")
    straight = run_vae(*train_args(tmp_path, data_dir, *iwae, "--epochs", 2, name="straight"))
    assert straight.code == 0, straight.stderr
    first = run_vae(*train_args(tmp_path, data_dir, *iwae, "--epochs", 1, name="resumed"))
    assert first.code == 0, first.stderr
    resumed = run_vae("train", "--resume", tmp_path / "resumed", "--epochs", 2,
                      "--data-dir", data_dir, "--quiet")  # fmt: skip
    assert resumed.code == 0, resumed.stderr
    assert_same_training_state(tmp_path / "straight", tmp_path / "resumed")
    metrics = [json.loads(line) for line in (tmp_path / "straight/metrics.jsonl").open()]
    assert all(m["test_iwae_k"] == 3 for m in metrics)
    saved = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    assert saved["config"].train.dreg and len(saved["config"].model.latent_dims) == 2


def test_a_population_and_a_sweep_of_two_layer_models(tmp_path: Path, data_dir: Path) -> None:
    population = run_vae(*train_args(tmp_path, data_dir, *TWO, "--epochs", 1, "--seeds", "0-1",
                                     name="pop"))  # fmt: skip
    assert population.code == 0, population.stderr
    assert (tmp_path / "pop/seed-1/checkpoints/best.pt").is_file()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[data]\nlimit = 256\n[train]\nepochs = 1\nbatch_size = 64\ndevice = "cpu"\n'
        "[model]\nhidden_dims = [32]\n"
        "[search]\nlatent_dims = { choices = [[4], [4, 2]] }\n"
    )
    result = run_vae(
        "tune", "--config", sweep, "--runs-dir", tmp_path / "runs", "--data-dir", data_dir,
        "--trials", 4, "--parallel", 4, "--seed", 0,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    layers = {
        load_checkpoint(folder / "checkpoints/last.pt")["config"].model.latent_dims
        for folder in (tmp_path / "runs/sweep").glob("trial-*")
    }
    assert layers == {(4,), (4, 2)}
