"""`vae latent`: the 2-D view of q(z|x) is faithful to the encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_cli.commands.latent import latent_view
from vae_cli.commands.load import Loaded
from vae_cli.config.settings import ModelConfig
from vae_cli.model.vae import VAE


def test_a_two_dimensional_latent_is_shown_as_is(tmp_path: Path) -> None:
    model = VAE(ModelConfig(latent_dim=2, hidden_dim=8)).eval()
    loaded = Loaded(model, None, {}, tmp_path / "c.pt", torch.device("cpu"))
    x = torch.rand(50, 784)
    view = latent_view(
        loaded, x, torch.zeros(50, dtype=torch.long), n_inputs=2, samples_per_input=10, seed=0
    )
    mu, logvar = model.encode(x)
    torch.testing.assert_close(view.test_mu, mu.detach())
    assert view.axis_names == ("z1", "z2")
    chosen = [int((x == view.inputs[i]).all(1).nonzero()) for i in range(2)]
    torch.testing.assert_close(view.input_sigma, torch.exp(0.5 * logvar[chosen]).detach())


def overlapping(boxes: list) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]


@pytest.mark.parametrize("n_inputs", [6, 20])
def test_no_thumbnail_or_sigma_label_overlaps_another(n_inputs: int) -> None:
    """Every input's mu at one point (the worst case): their pictures still do not overlap."""
    from matplotlib.offsetbox import AnnotationBbox

    from vae_cli.commands.latent import LatentView
    from vae_cli.pictures.plots import latent_figure

    view = LatentView(
        inputs=torch.rand(n_inputs, 784),
        input_mu=torch.zeros(n_inputs, 2) + torch.linspace(0, 1e-3, n_inputs).unsqueeze(1),
        input_sigma=torch.full((n_inputs, 2), 0.123),
        clouds=torch.randn(n_inputs, 5, 2),
        test_mu=torch.randn(50, 2),
        test_labels=torch.arange(50) % 10,
        axis_names=("PC1 of mu", "PC2 of mu"),
        input_labels=torch.arange(n_inputs) % 10,
    )
    figure = latent_figure(view)
    figure.canvas.draw()  # places the boxes
    renderer = figure.canvas.get_renderer()
    left = figure.axes[0]
    cards = [a for a in left.artists if isinstance(a, AnnotationBbox)]
    assert len(cards) == n_inputs
    boxes = [card.patch.get_window_extent(renderer) for card in cards]  # frames, labels inside
    assert overlapping(boxes) == []
    title = next(t for t in left.texts if t.get_text().startswith("q(z|x)"))
    for box in [*boxes, title.get_window_extent(renderer)]:
        assert not box.overlaps(left.get_window_extent(renderer))  # above the plot
        assert box.y1 <= figure.bbox.y1 and box.x0 >= 0
    assert overlapping([*boxes, title.get_window_extent(renderer)]) == []
    assert all("σ1 0.12" in card.offsetbox.get_children()[1].get_text() for card in cards)


def test_the_two_panels_colour_by_label_and_the_labels_read() -> None:
    """An input's cloud and frame take the colour the colour bar gives its digit label; its
    sigma label names both axes in a readable size; the thumbnails are white on black."""
    from matplotlib.colors import to_rgba
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage, TextArea

    from vae_cli.commands.latent import LatentView
    from vae_cli.pictures.plots import latent_figure

    labels = torch.tensor([1, 5, 7])
    view = LatentView(
        inputs=torch.rand(3, 784),
        input_mu=torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]),
        input_sigma=torch.full((3, 2), 0.5),
        clouds=torch.randn(3, 5, 2),
        test_mu=torch.randn(30, 2),
        test_labels=torch.arange(30) % 10,
        axis_names=("PC1 of mu", "PC2 of mu"),
        input_labels=labels,
    )
    figure = latent_figure(view)
    left, right = figure.axes[:2]
    label_colour = right.collections[0].cmap  # the colour bar's mapping of labels
    norm = right.collections[0].norm
    clouds = [c for c in left.collections if len(c.get_offsets()) == 5]
    for cloud, label in zip(clouds, labels.tolist(), strict=True):
        expected = to_rgba(label_colour(norm(label)))
        assert tuple(cloud.get_facecolor()[0][:3]) == pytest.approx(expected[:3])
    cards = [a for a in left.artists if isinstance(a, AnnotationBbox)]
    for card in cards:
        thumbnail, text = card.offsetbox.get_children()
        assert (
            isinstance(thumbnail, OffsetImage) and thumbnail.get_children()[0].cmap.name == "gray"
        )
        assert isinstance(text, TextArea) and text.get_text() == "σ1 0.50\nσ2 0.50"
        assert text._text.get_fontsize() >= 8
    title = next(t for t in left.texts if t.get_text().startswith("q(z|x)"))
    assert "σ1, σ2: its std along PC1 of mu, PC2 of mu" in title.get_text()
