"""Matplotlib figures (headless Agg backend): training curves and the latent-space view.

Takes plain numbers and tensors and a path; knows nothing of training.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from vae_cli.files import write_atomically

CURVES_SIZE = (12, 3.6)  # inches at DPI -> 1200 x 360 pixels
LATENT_SIZE = (14, 6.5)  # -> 1400 x 650 pixels
DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    # No "Software" stamp: the same data gives the same bytes across matplotlib versions.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    _pyplot().close(figure)
    write_atomically(path, buffer.getvalue())
    return path


def save_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Train and test loss, reconstruction and KL per epoch, side by side."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=CURVES_SIZE)
    epochs = [m["epoch"] for m in history]
    for axis, key in zip(axes, ("loss", "recon", "kl"), strict=True):
        axis.plot(epochs, [m[f"train_{key}"] for m in history], "o-", label="train")
        axis.plot(epochs, [m[f"test_{key}"] for m in history], "s-", label="test")
        axis.set_title(f"{key} (nats per image)")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    return _save(figure, path)


def save_latent_figure(view: Any, path: Path) -> Path:
    """Left: sample clouds around mu for a few inputs, each image beside its cloud.
    Right: the test set's mu coloured by digit label. `view` is a latent.LatentView."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=LATENT_SIZE)
    colours = plt.get_cmap("tab10")
    for i in range(len(view.inputs)):
        cloud, centre = view.clouds[i].numpy(), view.input_mu[i].numpy()
        left.scatter(cloud[:, 0], cloud[:, 1], s=4, alpha=0.35, linewidths=0, color=colours(i % 10))
        left.scatter(*centre, marker="x", s=80, color="black", zorder=3)
        sigma = view.input_sigma[i].numpy()
        left.annotate(
            f"σ≈({sigma[0]:.2f}, {sigma[1]:.2f})",
            centre,
            fontsize=7,
            xytext=(4, -12),
            textcoords="offset points",
        )
        thumbnail = OffsetImage(view.inputs[i].reshape(28, 28).numpy(), cmap="gray_r", zoom=1.1)
        left.add_artist(
            AnnotationBbox(
                thumbnail,
                centre,
                xybox=(-30, 30),
                boxcoords="offset points",
                frameon=True,
                arrowprops={"arrowstyle": "-", "color": "gray"},
            )
        )
    left.set_title(f"q(z|x): mu (x) and {view.clouds.shape[1]} samples per input")
    points = right.scatter(
        view.test_mu[:, 0].numpy(),
        view.test_mu[:, 1].numpy(),
        s=1,
        linewidths=0,
        c=view.test_labels.numpy(),
        cmap="tab10",
        vmin=-0.5,
        vmax=9.5,
    )
    figure.colorbar(points, ax=right, ticks=range(10), label="label")
    right.set_title("mu of the test set")
    for axis in (left, right):
        axis.set_xlabel(view.axis_names[0])
        axis.set_ylabel(view.axis_names[1])
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)
