"""Evaluation of a trained run through the real CLI, on the synthetic dataset."""

from __future__ import annotations

from pathlib import Path

from conftest import dataset_name

from vae_cli.commands.load import load_model
from vae_cli.data.dataset import load_dataset, to_float
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll


def test_iw_bound_tightens_with_k_on_a_trained_model(trained_run: Path, data_dir: Path) -> None:
    loaded = load_model(trained_run / "checkpoints/best.pt", "cpu")
    x = to_float(load_dataset(data_dir, dataset_name(data_dir), limit=300).test_images)
    negative_elbo = evaluate_elbo(loaded.model, x).loss
    nll = [importance_weighted_nll(loaded.model, x, k).nll for k in (1, 10, 100)]
    assert nll[2] < nll[1] < nll[0]
    assert nll[2] <= negative_elbo  # NLL_IW <= -ELBO
