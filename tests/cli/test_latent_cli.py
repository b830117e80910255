"""`vae latent` through the real CLI, on the synthetic dataset."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import dataset_name

from vae_cli.commands.latent import latent_view
from vae_cli.commands.load import load_model
from vae_cli.data.dataset import load_dataset, to_float


def test_sample_clouds_centre_on_mu_in_the_pca_view(trained_run: Path, data_dir: Path) -> None:
    loaded = load_model(trained_run / "checkpoints/best.pt", "cpu")
    dataset = load_dataset(data_dir, dataset_name(data_dir), limit=500)
    view = latent_view(
        loaded,
        to_float(dataset.test_images),
        dataset.test_labels,
        n_inputs=4,
        samples_per_input=2000,
        seed=0,
    )
    assert view.clouds.shape == (4, 2000, 2) and view.test_mu.shape == (500, 2)
    standard_error = view.input_sigma / math.sqrt(2000)
    assert ((view.clouds.mean(1) - view.input_mu).abs() < 4 * standard_error).all()
    assert ((view.clouds.std(1) / view.input_sigma - 1).abs() < 0.1).all()
    assert view.axis_names == ("PC1 of mu", "PC2 of mu")
