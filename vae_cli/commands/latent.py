"""`vae latent`: q(z|x) in 2-D (the latent itself, or the PCA of the test set's mu) for a few
test images, and the test set's mu."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vae_cli.commands.load import Loaded, save_picture, test_images
from vae_cli.data.images import UserImages
from vae_cli.model.reparameterize import posterior_samples
from vae_cli.pictures import plots


@dataclass
class LatentView:
    inputs: torch.Tensor  # (n, 784) pixels of the chosen test images
    input_mu: torch.Tensor  # (n, 2) their mu in the 2-D view
    input_sigma: torch.Tensor  # (n, 2) their posterior std along the view's axes
    clouds: torch.Tensor  # (n, S, 2) samples z ~ q(z|x) in the view
    test_mu: torch.Tensor  # (M, 2) mu of every test image in the view
    test_labels: torch.Tensor  # (M,)
    axis_names: tuple[str, str]
    input_labels: torch.Tensor  # (n,) the chosen images' digit labels: their clouds' colour
    layer: str = "z"  # the latent shown: z, or z1 (the bottom layer) of a two-layer model


@torch.no_grad()
def latent_view(
    loaded: Loaded,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_inputs: int,
    samples_per_input: int,
    seed: int,
    inputs: torch.Tensor | None = None,
) -> LatentView:
    """Project mu and posterior samples to 2-D: the latent itself when D = 2, else the PCA of
    the test set's mu. The images shown: `n_inputs` test images the seed picks, or `inputs`
    (a user's, whose label is unknown: shown as 10, the neutral colour)."""
    mu_parts, logvar_parts = zip(
        *(loaded.model.encode(x[i : i + 1000]) for i in range(0, len(x), 1000)), strict=True
    )
    mu, logvar = torch.cat(mu_parts).cpu(), torch.cat(logvar_parts).cpu()
    layer = loaded.model.layer_names()[0]
    if mu.shape[1] == 2:
        dimensions = ("z1", "z2") if layer == "z" else ("z1[0]", "z1[1]")
        centre, basis, names = torch.zeros(2), torch.eye(2), dimensions
    else:
        centre = mu.mean(0)
        basis = torch.linalg.svd(mu - centre, full_matrices=False).Vh[:2].T  # (D, 2)
        names = ("PC1 of mu", "PC2 of mu") if layer == "z" else ("PC1 of mu1", "PC2 of mu1")
    generator = torch.Generator().manual_seed(seed)
    if inputs is None:
        chosen = torch.randperm(len(x), generator=generator)[:n_inputs]
        shown, shown_labels = x[chosen], labels[chosen]
        input_mu, input_logvar = mu[chosen], logvar[chosen]
    else:
        shown, shown_labels = inputs, torch.full((len(inputs),), 10)
        input_mu, input_logvar = (t.cpu() for t in loaded.model.encode(inputs))
    z = posterior_samples(input_mu, input_logvar, samples_per_input, generator)
    z = z.transpose(0, 1)  # (n, S, D)
    sigma = torch.exp(0.5 * input_logvar)
    return LatentView(
        inputs=shown.cpu(),
        input_mu=(input_mu - centre) @ basis,
        input_sigma=(sigma.pow(2) @ basis.pow(2)).sqrt(),
        clouds=(z - centre) @ basis,
        test_mu=(mu - centre) @ basis,
        test_labels=labels,
        input_labels=shown_labels,
        axis_names=names,
        layer=layer,
    )


def write_latent_figure(
    loaded: Loaded,
    data_dir: Path,
    out: Path,
    *,
    n_inputs: int,
    samples_per_input: int,
    seed: int,
    images: UserImages | None = None,
) -> Path:
    x, labels = test_images(loaded, data_dir, None)
    inputs = None if images is None else images.pixels[:20]
    view = latent_view(
        loaded, x, labels, n_inputs=n_inputs, samples_per_input=samples_per_input, seed=seed,
        inputs=inputs,
    )  # fmt: skip
    return save_picture(lambda: plots.save_latent_figure(view, out), out)
