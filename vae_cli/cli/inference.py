"""The commands that read a trained model: eval, sample, reconstruct, interpolate, latent and
export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vae_cli.cli.app import app
from vae_cli.cli.options import (
    LATENT_INPUTS,
    LATENT_SAMPLES,
    MAX_IW_SAMPLES,
    RECONSTRUCTED,
    SAMPLES,
    STEPS,
    Checkpoint,
    DataDir,
    Device,
    Fit,
    Images,
    Invert,
    Out,
    RunsDir,
    load,
    seed_option,
    with_default,
    write_picture,
    wrote,
    your_images,
)
from vae_cli.commands.interpolation_ends import require_both_ends_or_neither, require_two_images
from vae_cli.config.values import check_value
from vae_cli.data.images import check_image_options, count_images
from vae_cli.errors import UserError

EVAL_HELP = (
    "Test-set loss, reconstruction, KL (nats per image) and posterior-collapse diagnostics."
    "\n\nWith the normal prior the KL is the closed form. A VampPrior's has none: the KL is "
    "the single-sample estimate log q(z|x) - log p(z), with p(z) the mixture over the "
    "pseudo-inputs, and each dimension's KL is estimated against the mixture's marginal in "
    "that dimension (these do not add up to the KL; the top layer's KL is the joint "
    "estimate). Active units count the dimensions whose mean varies across images "
    "(Cov_x E_q z_d > 0.01), for either prior."
)


@app.command(
    "eval", help=EVAL_HELP, short_help="Test-set -ELBO, KL, active units; --iw-samples: -log p(x)."
)
def evaluate(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    device: Device = "auto",
    iw_samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_IW_SAMPLES,
            help="Also estimate the NLL by importance weighting with K samples per image.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N test images.")] = None,
    binarize: Annotated[
        str | None,
        typer.Option(
            help=with_default("Test pixels: none, static or dynamic.", "as trained"),
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="test, or validation: the training images the run held out (--validation N), "
            "to choose checkpoints and recipes on without looking at the test set."
        ),
    ] = "test",
    images: Images = None,
    invert: Invert = "auto",
    fit: Fit = "mnist",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Test-set loss, reconstruction, KL (nats per image) and posterior-collapse diagnostics."""
    import json

    if binarize is not None and (problem := check_value("binarize", binarize)):
        raise UserError(f"--binarize: {problem}")
    if split not in ("test", "validation"):
        raise UserError(f"--split {split!r}: expected test or validation")
    if images and split != "test":
        raise UserError("--split validation: scores the run's held-out images, not --images")
    check_image_options(images or [], invert, fit)
    loaded = load(checkpoint, runs_dir, device, announce=not json_output)
    read = your_images(loaded, images, invert=invert, fit=fit, say=not json_output)

    from vae_cli.cli.console import SampleProgress
    from vae_cli.commands.evaluate import evaluate_checkpoint

    progress = SampleProgress(f"IW NLL, K={iw_samples}")
    try:
        result = evaluate_checkpoint(
            loaded,
            loaded.data_dir(data_dir),
            iw_samples=iw_samples,
            limit=limit,
            binarize=binarize,
            progress=progress,
            images=read,
            split=split,
        )
    finally:
        progress.close()
    if json_output:
        print(json.dumps(result))
    else:
        from vae_cli.cli.tables import evaluation_table

        evaluation_table(result)


@app.command(short_help="Samples from the prior as a PNG grid.")
def sample(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    n: Annotated[int, typer.Option(min=1, max=4096, help="Number of samples.")] = SAMPLES,
    seed: Annotated[int, seed_option("Seed of the prior draw.")] = 42,
    temperature: Annotated[
        # Past ~100 the decoded pixels are saturated, and inf would make them NaN.
        float, typer.Option(min=0.0, max=100.0, help="Scale of the prior's std (1 = the prior).")
    ] = 1.0,
    grid: Annotated[
        bool, typer.Option(help="2-D models: decode a sqrt(n) x sqrt(n) grid of prior quantiles.")
    ] = False,
    out: Out = None,
    device: Device = "auto",
) -> None:
    """Decode samples from the prior into a PNG grid (same seed, same bytes)."""
    import math

    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.commands.outputs import picture_name
    from vae_cli.commands.pictures import write_manifold, write_samples

    if grid:
        side = max(2, math.isqrt(n))
        default = picture_name("manifold", ("n", n, SAMPLES))
        write_picture(
            lambda path: write_manifold(loaded, path, side=side), out or loaded.run_dir / default
        )
    else:
        default = picture_name(f"sample_seed{seed}", ("n", n, SAMPLES), ("t", temperature, 1.0))
        write_picture(
            lambda path: write_samples(loaded, path, n=n, seed=seed, temperature=temperature),
            out or loaded.run_dir / default,
        )


@app.command(short_help="Test images over their reconstructions.")
def reconstruct(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    n: Annotated[int, typer.Option(min=1, max=1024, help="Number of test images.")] = RECONSTRUCTED,
    mean_only: Annotated[bool, typer.Option(help="Decode z = mu (deterministic).")] = False,
    seed: Annotated[int, seed_option("Seed of z's draw without --mean-only.")] = 0,
    images: Images = None,
    invert: Invert = "auto",
    fit: Fit = "mnist",
    out: Out = None,
    device: Device = "auto",
) -> None:
    """Test images over their reconstructions, as a PNG; with --images, each of your images
    over what the model read of it and its reconstruction."""
    check_image_options(images or [], invert, fit)
    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.commands.outputs import picture_name
    from vae_cli.commands.pictures import write_reconstructions

    read = your_images(loaded, images, invert=invert, fit=fit)
    stem = "reconstruct_images" if read else "reconstruct"
    stem += "_mean" if mean_only else f"_seed{seed}"
    default = loaded.run_dir / picture_name(stem, ("n", n, RECONSTRUCTED))
    data = loaded.data_dir(data_dir)
    write_picture(
        lambda path: write_reconstructions(
            loaded, data, path, n=n, seed=seed, mean_only=mean_only, images=read
        ),
        out or default,
    )


@app.command(short_help="Decode the straight line between two images' codes.")
def interpolate(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    from_index: Annotated[int | None, typer.Option(min=0, help="First test image.")] = None,
    to_index: Annotated[int | None, typer.Option(min=0, help="Second test image.")] = None,
    seed: Annotated[int, seed_option("Picks the images when no index given.")] = 0,
    steps: Annotated[int, typer.Option(min=2, max=100, help="Decoded points on the line.")] = STEPS,
    images: Images = None,
    invert: Invert = "auto",
    fit: Fit = "mnist",
    out: Out = None,
    device: Device = "auto",
) -> None:
    """A row of images decoded along the line between the mu of two test images (or of your
    two --images)."""
    check_image_options(images or [], invert, fit)
    if images:
        count = count_images(images)
        if count is not None:
            require_two_images(count)
    else:
        require_both_ends_or_neither(from_index, to_index)
    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.commands.outputs import picture_name
    from vae_cli.commands.pictures import write_interpolation

    read = your_images(loaded, images, invert=invert, fit=fit)
    if read is not None:
        stem = "interpolate_images"
    elif from_index is not None and to_index is not None:
        stem = f"interpolate_{from_index}-{to_index}"
    else:
        stem = f"interpolate_seed{seed}"
    path = out or loaded.run_dir / picture_name(stem, ("steps", steps, STEPS))
    existed = path.exists()
    path, first, second = write_interpolation(
        loaded,
        loaded.data_dir(data_dir),
        path,
        from_index=from_index,
        to_index=to_index,
        seed=seed,
        steps=steps,
        images=read,
    )
    wrote(path, replaced=existed, detail=f" ({first} -> {second})")


@app.command(short_help="q(z|x) of a few test images, beside the test set's codes.")
def latent(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    n_inputs: Annotated[
        int, typer.Option(min=1, max=20, help="Test images shown.")
    ] = LATENT_INPUTS,
    samples_per_input: Annotated[
        int, typer.Option(min=1, max=10000, help="z samples per image.")
    ] = LATENT_SAMPLES,
    seed: Annotated[int, seed_option("Picks the images and draws z.")] = 0,
    images: Images = None,
    invert: Invert = "auto",
    fit: Fit = "mnist",
    out: Out = None,
    device: Device = "auto",
) -> None:
    """Picture of q(z|x): mu, sigma and samples for a few test images (or your --images), and
    the test set's mu."""
    check_image_options(images or [], invert, fit)
    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.commands.latent import write_latent_figure
    from vae_cli.commands.outputs import picture_name

    read = your_images(loaded, images, invert=invert, fit=fit)
    default = picture_name(
        "latent_images" if read else "latent",
        ("seed", seed, 0),
        ("n", n_inputs, LATENT_INPUTS),
        ("s", samples_per_input, LATENT_SAMPLES),
    )
    data = loaded.data_dir(data_dir)
    write_picture(
        lambda path: write_latent_figure(
            loaded,
            data,
            path,
            n_inputs=n_inputs,
            samples_per_input=samples_per_input,
            seed=seed,
            images=read,
        ),
        out or loaded.run_dir / default,
    )


@app.command(short_help="Write the weights as .safetensors, with their config.")
def export(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    out: Annotated[
        Path | None,
        typer.Option(
            help=with_default("The .safetensors file to write.", "RUN/model.safetensors"),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a model's weights as safetensors, its config and provenance in the metadata."""
    loaded = load(checkpoint, runs_dir, "cpu", out=out, suffix=".safetensors")

    from vae_cli.commands.export import write_export

    path = out or loaded.run_dir / "model.safetensors"
    existed = path.exists()
    wrote(write_export(loaded, path), replaced=existed)
