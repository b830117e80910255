"""Matplotlib figures (headless Agg backend): training curves, the latent-space view and the
gradient estimators' spread.

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
    return _save(curves_figure(history), path)


def curves_figure(history: list[dict[str, Any]]) -> Any:
    """Train and test loss, reconstruction and KL per epoch, side by side."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=CURVES_SIZE)
    epochs = [m["epoch"] for m in history]
    for axis, key in zip(axes, ("loss", "recon", "kl"), strict=True):
        axis.plot(epochs, [m[f"train_{key}"] for m in history], "o-", label="train")
        axis.plot(epochs, [m[f"test_{key}"] for m in history], "s-", label="test")
        axis.set_title(f"{key} (nats per image)")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5 on short runs
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    return figure


def save_latent_figure(view: Any, path: Path) -> Path:
    return _save(latent_figure(view), path)


THUMBNAILS_PER_ROW = 10
STRIP_ROW_HEIGHT = 1.05  # inches: a thumbnail and its two-line sigma label
SIGMA_FONT_SIZE = 8  # points: 11 px at the figure's 100 dpi, readable beside a thumbnail
STRIP_GAP = 0.02  # axes fraction between the plot and the strip


def latent_figure(view: Any) -> Any:
    """Left: sample clouds around mu for a few inputs; each input's image and sigma sit in a
    strip above the plot, in the order of their mu along the x axis, joined to their mu by a
    line, so that no two overlap however close their points are. Right: the test set's mu
    coloured by digit label; each input's cloud and frame take its label's colour too.
    `view` is a commands.latent.LatentView."""
    plt = _pyplot()
    rows = -(-len(view.inputs) // THUMBNAILS_PER_ROW)
    width, height = LATENT_SIZE
    figure, (left, right) = plt.subplots(1, 2, figsize=(width, height + rows * STRIP_ROW_HEIGHT))
    strip = rows * STRIP_ROW_HEIGHT + 0.55  # inches above the axes: the strip and the title
    figure.subplots_adjust(
        left=0.05, right=0.97, bottom=0.6 / figure.get_figheight(), wspace=0.18,
        top=1 - strip / figure.get_figheight(),
    )  # fmt: skip
    axes_inches = (figure.subplotpars.top - figure.subplotpars.bottom) * figure.get_figheight()
    row_height = STRIP_ROW_HEIGHT / axes_inches  # in axes fractions
    draw_posteriors(left, view, rows, row_height)
    left.text(  # above the strip (set_title would place itself over it)
        0.5,
        1 + STRIP_GAP + rows * row_height + 0.01,
        f"q({view.layer}|x): mu (x) and {view.clouds.shape[1]} samples per input"
        + (" (the bottom layer)" if view.layer == "z1" else "")
        + f"; σ1, σ2: its std along {view.axis_names[0]}, {view.axis_names[1]}",
        transform=left.transAxes,
        ha="center",
        va="bottom",
        fontsize="large",
    )
    draw_test_set(figure, right, view)
    for axis in (left, right):
        axis.set_xlabel(view.axis_names[0])
        axis.set_ylabel(view.axis_names[1])
        axis.grid(alpha=0.3)
    return figure


def draw_posteriors(axis: Any, view: Any, rows: int, row_height: float) -> None:
    """Each input's cloud and mu, and its card (image and sigmas) in the strip above."""
    from matplotlib.offsetbox import AnnotationBbox

    # One meaning for colour in both panels: a digit label, as the colour bar shows it.
    colours = _pyplot().get_cmap("tab10")
    n = len(view.inputs)
    order = sorted(range(n), key=lambda i: float(view.input_mu[i, 0]))
    per_row = -(-n // rows)
    for slot, i in enumerate(order):
        label = int(view.input_labels[i])  # 10: a user's image, whose label is unknown
        colour = colours(label) if label < 10 else (0.4, 0.4, 0.4, 1.0)
        cloud, centre = view.clouds[i].numpy(), view.input_mu[i].numpy()
        axis.scatter(cloud[:, 0], cloud[:, 1], s=4, alpha=0.35, linewidths=0, color=colour)
        axis.scatter(*centre, marker="x", s=80, color="black", zorder=3)
        row, column = divmod(slot, per_row)
        axis.add_artist(
            AnnotationBbox(
                input_card(view, i),
                centre,
                xybox=((column + 0.5) / per_row, 1 + STRIP_GAP + (rows - row - 0.5) * row_height),
                xycoords="data",
                boxcoords="axes fraction",
                frameon=True,
                bboxprops={"edgecolor": colour, "linewidth": 1.5},
                arrowprops={"arrowstyle": "-", "color": colour, "alpha": 0.7},
                annotation_clip=False,
            )
        )


def input_card(view: Any, i: int) -> Any:
    """Input i's thumbnail over its two sigmas."""
    from matplotlib.offsetbox import OffsetImage, TextArea, VPacker

    sigma = view.input_sigma[i].numpy()
    return VPacker(
        children=[
            # White on black, as every other picture of digits vae-cli draws.
            OffsetImage(view.inputs[i].reshape(28, 28).numpy(), cmap="gray", zoom=1.1),
            TextArea(
                f"σ1 {sigma[0]:.2f}\nσ2 {sigma[1]:.2f}", textprops={"fontsize": SIGMA_FONT_SIZE}
            ),
        ],
        align="center",
        pad=0,
        sep=2,
    )


def draw_test_set(figure: Any, axis: Any, view: Any) -> None:
    """The test set's mu, coloured by label, with the colour bar."""
    points = axis.scatter(
        view.test_mu[:, 0].numpy(),
        view.test_mu[:, 1].numpy(),
        s=1,
        linewidths=0,
        c=view.test_labels.numpy(),
        cmap="tab10",
        vmin=-0.5,
        vmax=9.5,
    )
    figure.colorbar(points, ax=axis, ticks=range(10), label="label")
    axis.set_title("mu of the test set")


GRADIENTS_SIZE = (14, 4.5)  # -> 1400 x 450 pixels
ESTIMATOR_STYLES = {"reparam": "o-", "score": "s-", "score_baseline": "^-", "stl": "d-"}


def save_gradients_figure(report: dict[str, Any], path: Path) -> Path:
    return _save(gradients_figure(report), path)


def gradients_figure(report: dict[str, Any]) -> Any:
    """Per latent dimension, each estimator's per-draw std of the gradient for mu and for
    log sigma² (log axis; dimensions ordered by reparam's); with --k, the encoder gradient's
    SNR against k for IWAE and DReG."""
    plt = _pyplot()
    per_k = report.get("encoder_snr_per_k")
    figure, axes = plt.subplots(1, 3 if per_k else 2, figsize=GRADIENTS_SIZE)
    estimators = report["estimators"]
    layer = report["layer"]
    for axis, key, name in ((axes[0], "mu", f"mu of {layer}"),
                            (axes[1], "logvar", f"log sigma² of {layer}")):  # fmt: skip
        reference = estimators["reparam"][f"std_{key}"]
        order = sorted(range(len(reference)), key=lambda d: -reference[d])
        for estimator, style in ESTIMATOR_STYLES.items():
            spread = [estimators[estimator][f"std_{key}"][d] for d in order]
            axis.plot(range(1, len(order) + 1), spread, style, markersize=3, label=estimator)
        axis.set_yscale("log")
        axis.set_title(f"gradient spread, d ELBO / d {name}")
        axis.set_xlabel("latent dimension (by reparam's spread)")
        axis.set_ylabel(f"std over {report['samples']:,} draws")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8, loc="best")  # every panel says which line is which
    if per_k:
        ks = [int(k) for k in per_k]
        for estimator, style in (("iwae", "o-"), ("dreg", "s-")):
            axes[2].plot(ks, [per_k[str(k)][estimator] for k in ks], style, label=estimator)
        axes[2].set_xscale("log")
        axes[2].set_xticks(ks, [str(k) for k in ks])
        axes[2].minorticks_off()  # the k given, not 2×10⁰
        axes[2].set_ylim(bottom=0)
        axes[2].set_title("encoder gradient SNR, |E g| / std g")
        axes[2].set_xlabel("k (IWAE samples)")
        axes[2].set_ylabel(f"mean over weights ({report['snr_draws']} draws)")
        axes[2].grid(alpha=0.3, which="both")
        axes[2].legend(["IWAE", "DReG"], fontsize=8)
    figure.suptitle(f"test image {report['index']}: how noisy each gradient estimator is")
    figure.tight_layout()
    return figure
