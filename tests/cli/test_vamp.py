"""The VampPrior through every command: train (the start panel, pseudo_inputs.png, phases,
IWAE with DReG, resume), eval, `vae runs`, sample (seeded, and the same from an export),
reconstruct, interpolate, latent, the manifold grid, export and `load()`, a population and a
sweep. Synthetic data, no MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_same_training_state,
    interrupt_at,
    png_pixels,
    png_size,
    run_vae,
    train_args,
)

from vae_cli.checkpoint import load_checkpoint

VAMP = (
    "--prior", "vamp", "--pseudo-inputs", 7, "--latent-dim", 6, "--hidden-dim", 48,
    "--binarize", "dynamic", "--limit", 512, "--batch-size", 64, "--quiet",
)  # fmt: skip
TWO_LAYERS = ("--stochastic-layers", 2, "--latent2-dim", 3, "--hidden2-dim", 16)


@pytest.fixture(scope="module")
def vamp_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = run_vae(*train_args(runs, data_dir, *VAMP[:-1], "--epochs", 2, name="vamp"))
    assert result.code == 0, result.stderr
    assert "VampPrior K=7" in result.stdout  # the start panel
    return runs / "vamp"


def test_a_run_keeps_its_pseudo_inputs_and_draws_them(vamp_run: Path) -> None:
    saved = load_checkpoint(vamp_run / "checkpoints/last.pt")
    assert saved["config"].model.prior == "vamp" and saved["config"].model.pseudo_inputs == 7
    pseudo_inputs = saved["model"]["prior.pseudo_inputs"]
    assert pseudo_inputs.shape == (7, 784)
    from vae_cli.training.loop import build_model

    initial = build_model(saved["config"], torch.device("cpu")).prior.pseudo_inputs.detach()
    assert (initial.mean() - 0.05).abs() < 1e-3 and (initial.std() - 0.01).abs() < 1e-3
    assert (pseudo_inputs - initial).abs().max() > 1e-3  # trained
    # Seven 28-pixel tiles in one row of a grid of ten columns, with 2-pixel padding, twice
    # as large; each pseudo-input stretched from black to white (they sit near 0.05).
    assert png_size(vamp_run / "pseudo_inputs.png") == (2 * (2 + 7 * 30), 2 * 32)
    tiles = png_pixels(vamp_run / "pseudo_inputs.png")[4:60, 4:].unfold(1, 56, 60)  # (56, 7, 56)
    assert tiles.amin(dim=(0, 2)).tolist() == [0] * 7
    assert tiles.amax(dim=(0, 2)).tolist() == [255] * 7
    listing = run_vae("runs", "--runs-dir", vamp_run.parent).stdout
    assert "VampPrior" in listing and "K=7" in listing  # a table cell, wrapped


def test_eval_estimates_the_kl_of_the_mixture(vamp_run: Path, data_dir: Path) -> None:
    result = run_vae(
        "eval", "--checkpoint", vamp_run, "--data-dir", data_dir, "--limit", 200,
        "--iw-samples", 50, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["kl_per_dim"]) == 6 and report["kl"] > 0
    assert report["loss"] == pytest.approx(report["recon"] + report["kl"], rel=1e-5)
    assert sum(report["kl_per_layer"]) == pytest.approx(report["kl"], rel=1e-5)
    assert report["iw"]["nll"] < report["loss"]  # the IW bound is the tighter one


def test_sampling_picks_components_from_the_seed_also_from_an_export(
    vamp_run: Path, tmp_path: Path
) -> None:
    export = tmp_path / "m.safetensors"
    assert run_vae("export", "--checkpoint", vamp_run, "--out", export).code == 0
    pictures = {}
    for name, source, seed in [("a", vamp_run, 3), ("b", vamp_run, 3), ("c", export, 3),
                               ("d", vamp_run, 4)]:  # fmt: skip
        pictures[name] = tmp_path / f"{name}.png"
        result = run_vae("sample", "--checkpoint", source, "--seed", seed, "--out", pictures[name])
        assert result.code == 0, result.stderr
    assert pictures["a"].read_bytes() == pictures["b"].read_bytes() == pictures["c"].read_bytes()
    assert pictures["d"].read_bytes() != pictures["a"].read_bytes()
    import vae_cli

    for path in (vamp_run, export):
        model = vae_cli.load(path)
        assert model.prior.pseudo_inputs.shape == (7, 784)
        assert model.log_prior(torch.zeros(2, 6)).shape == (2,)


def test_the_pictures_of_a_vamp_model(vamp_run: Path, tmp_path: Path, data_dir: Path) -> None:
    for command in (
        ("reconstruct", "--mean-only"),
        ("interpolate",),
        ("latent", "--n-inputs", 2, "--samples-per-input", 20),
    ):
        out = tmp_path / f"{command[0]}.png"
        result = run_vae(command[0], "--checkpoint", vamp_run, "--data-dir", data_dir,
                         "--out", out, *command[1:])  # fmt: skip
        assert result.code == 0, (command, result.stderr)
        assert png_size(out)[0] > 0


def test_the_manifold_grid_spans_the_mixture(tmp_path: Path, data_dir: Path) -> None:
    flat = ("--latent-dim", 2, "--epochs", 1)
    run = run_vae(*train_args(tmp_path, data_dir, *VAMP, *flat, name="flat"))
    assert run.code == 0, run.stderr
    out = tmp_path / "grid.png"
    result = run_vae("sample", "--checkpoint", tmp_path / "flat", "--grid", "--n", 25,
                     "--out", out)  # fmt: skip
    assert result.code == 0, result.stderr
    assert png_size(out) == (2 + 5 * 30, 2 + 5 * 30)


def test_a_two_layer_iwae_dreg_vamp_run_resumes_bit_exactly(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across the phase change (ELBO with free bits, then IWAE with DReG), and from a Ctrl-C
    in the middle of phase 2."""
    phases = tmp_path / "phases.toml"
    phases.write_text(
        "[train]\nepochs = 1\nfree_bits = 0.1\n"
        '[[phases]]\nepochs = 1\nobjective = "iwae"\nk = 3\ndreg = true\nfree_bits = 0.0\n'
    )
    flags = (*VAMP, *TWO_LAYERS, "--config", phases)
    straight = run_vae(*train_args(tmp_path, data_dir, *flags, name="straight"))
    assert straight.code == 0, straight.stderr

    interrupt_at(monkeypatch, epoch=1, step=4, every=2)
    interrupted = run_vae(*train_args(tmp_path, data_dir, *flags, name="resumed"))
    assert interrupted.code == 130, interrupted.stderr
    saved = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert saved["phase"] == 1 and saved["mid_epoch"] and saved["position"] == 4
    monkeypatch.undo()
    resumed = run_vae("train", "--resume", tmp_path / "resumed", "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr
    assert_same_training_state(tmp_path / "straight", tmp_path / "resumed")
    metrics = [json.loads(line) for line in (tmp_path / "straight/metrics.jsonl").open()]
    assert [m.get("test_iwae_k") for m in metrics] == [None, 3]


def test_population_members_learn_their_own_pseudo_inputs(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, *VAMP, "--epochs", 1, "--seeds", "0-1",
                                 name="pop"))  # fmt: skip
    assert result.code == 0, result.stderr
    inputs = [
        load_checkpoint(tmp_path / f"pop/seed-{seed}/checkpoints/last.pt")["model"][
            "prior.pseudo_inputs"
        ]
        for seed in (0, 1)
    ]
    assert not torch.equal(inputs[0], inputs[1])
    alone = run_vae(*train_args(tmp_path, data_dir, *VAMP, "--epochs", 1, "--seed", 1,
                                name="alone"))  # fmt: skip
    assert alone.code == 0, alone.stderr
    single = load_checkpoint(tmp_path / "alone/checkpoints/last.pt")["model"]
    torch.testing.assert_close(inputs[1], single["prior.pseudo_inputs"], rtol=1e-4, atol=1e-5)
    assert (tmp_path / "pop/seed-1/pseudo_inputs.png").is_file()


def test_a_sweep_chooses_the_prior(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[data]\nlimit = 256\ndataset = "fashion-mnist"\n[train]\nepochs = 1\nbatch_size = 64\n'
        "[model]\nlatent_dim = 4\nhidden_dim = 32\npseudo_inputs = 5\n"
        '[search]\nprior = { choices = ["normal", "vamp"] }\n'
    )
    result = run_vae(
        "tune", "--config", sweep, "--runs-dir", tmp_path / "runs", "--data-dir", data_dir,
        "--trials", 4, "--seed", 0,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    priors = {
        load_checkpoint(folder / "checkpoints/last.pt")["config"].model.prior
        for folder in (tmp_path / "runs/sweep").glob("trial-*")
    }
    assert priors == {"normal", "vamp"}
