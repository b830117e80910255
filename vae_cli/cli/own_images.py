"""`vae encode` and `vae score`: a trained model applied to your own images (or the test set):
their codes for work downstream, and how unusual each one is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vae_cli.cli.app import app
from vae_cli.cli.options import (
    MAX_IW_SAMPLES,
    Checkpoint,
    DataDir,
    Device,
    Fit,
    Images,
    Invert,
    RunsDir,
    load,
    seed_option,
    with_default,
    write_picture,
    wrote,
)
from vae_cli.errors import UserError

SCORED = 100  # test images scored without --images
SCORE_SAMPLES = 100  # K: ranking images needs less than reporting the dataset's NLL


@app.command(short_help="Each image's posterior, every layer's, as .npy or .csv.")
def encode(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    images: Images = None,
    invert: Invert = "auto",
    fit: Fit = "mnist",
    split: Annotated[
        str, typer.Option(help="Without --images: the test or the train images.")
    ] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            help=with_default("A .npy or .csv file.", "RUN/codes-SPLIT.npy"), show_default=False
        ),
    ] = None,
    device: Device = "auto",
) -> None:
    """Write mu and log sigma² of every stochastic layer for each image, with its file name
    (or its label, for MNIST's images): the representation for a classifier or a plot."""
    from vae_cli.data.images import check_image_options

    if split not in ("test", "train"):
        raise UserError(f"--split: expected one of test, train, got {split!r}")
    if out is not None and out.suffix not in (".npy", ".csv"):
        raise UserError(f"--out {out}: the codes go to a .npy or .csv file")
    check_image_options(images or [], invert, fit)
    loaded = load(checkpoint, runs_dir, device)

    from vae_cli.commands.encode import codes_for, write_codes

    table, said = codes_for(
        loaded, loaded.data_dir(data_dir), images, invert=invert, fit=fit, split=split
    )
    if said:
        print(said)
    name = "codes-images.npy" if images else f"codes-{split}.npy"
    path = out or loaded.run_dir / name
    existed = path.exists()
    wrote(write_codes(table, path), replaced=existed, detail=f" ({len(table):,} images)",
          same_name=False)  # fmt: skip


@app.command(short_help="How unusual each image is: -log p(x) against the test set's.")
def score(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    images: Images = None,
    invert: Invert = "auto",
    fit: Fit = "mnist",
    limit: Annotated[
        int, typer.Option(min=1, help="Without --images: the first N test images.")
    ] = SCORED,
    iw_samples: Annotated[
        int, typer.Option(min=1, max=MAX_IW_SAMPLES, help="Importance samples K per image.")
    ] = SCORE_SAMPLES,
    seed: Annotated[int, seed_option("Seed of the importance samples.")] = 1234,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write the rows to this .csv.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help=with_default("PNG of the most and least typical images.", "RUN/score.png"),
            show_default=False,
        ),
    ] = None,
    device: Device = "auto",
) -> None:
    """Score each image (your --images, or the first test images): its importance-weighted
    -log p(x) in nats and bits/dim, its reconstruction error -log p(x | z = mu), and the
    share of the model's own test images it scores higher than (those scores computed once
    and cached in RUN/scores/). High values flag inputs unlike the training data."""
    from vae_cli.data.images import check_image_options

    if csv is not None and csv.suffix != ".csv":
        raise UserError(f"--csv {csv}: name it *.csv")
    check_image_options(images or [], invert, fit)
    loaded = load(checkpoint, runs_dir, device, announce=not json_output, out=out)

    from vae_cli.cli.console import SampleProgress
    from vae_cli.commands.score import scores_for, write_score_picture, write_scores_csv

    bar = SampleProgress(f"test set's scores, K={iw_samples}")
    report, x = scores_for(
        loaded, loaded.data_dir(data_dir), images, invert=invert, fit=fit, limit=limit,
        samples=iw_samples, seed=seed, progress=bar,
    )  # fmt: skip
    bar.close()
    if csv is not None:
        write_scores_csv(report["images"], csv)
    if json_output:
        import json

        print(json.dumps(report))
        write_score_picture(report["images"], x, out or loaded.run_dir / "score.png")
        return
    from vae_cli.cli.tables import score_table

    score_table(report)
    write_picture(lambda path: write_score_picture(report["images"], x, path),
                  out or loaded.run_dir / "score.png", same_name=False)  # fmt: skip
    if csv is not None:
        wrote(csv)
