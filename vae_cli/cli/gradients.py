"""`vae gradients`: how noisy each estimator of the ELBO's gradient is, on a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vae_cli.cli.app import app
from vae_cli.cli.options import Checkpoint, DataDir, Device, Out, RunsDir, load, seed_option
from vae_cli.cli.options import write_picture as write_and_say
from vae_cli.errors import UserError

GRADIENTS_HELP = (
    "The ELBO's gradient with respect to one test image's posterior mu and log sigma², "
    "estimated --samples times by each estimator: reparam (the pathwise gradient through "
    "z = mu + sigma * eps, what training uses), score (the score function f(z) * d log q, "
    "the KL's gradient taken exactly where it is analytic: the normal prior, one layer), "
    "score_baseline (the same less a leave-one-out mean of f), stl (sticking the landing: "
    "the pathwise gradient with q's score term left out) and naive (z drawn outside the "
    "graph: exactly zero). A two-layer model is measured at its bottom layer z1; a "
    "VampPrior's log p(z) is its learned mixture. With --k, also the IWAE bound's gradient "
    "with respect to the encoder's weights, plain and DReG, as a signal-to-noise ratio "
    "|E g| / std g per weight, averaged. Writes RUN/gradients.png unless --out."
)


def parse_ks(text: str) -> list[int]:
    """`--k 1,8,64` -> [1, 8, 64]: sizes from 1 to 10,000, each once, in increasing order."""
    try:
        ks = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--k: expected sizes like 8 or 1,8,64, got {text!r}") from None
    if any(not 1 <= k <= 10_000 for k in ks):
        raise UserError(f"--k: expected sizes from 1 to 10000, got {text}")
    return sorted(set(ks))


@app.command(help=GRADIENTS_HELP, short_help="How noisy each estimator of the ELBO's gradient is.")
def gradients(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    index: Annotated[int, typer.Option(min=0, help="The test image.")] = 0,
    samples: Annotated[
        int, typer.Option(min=2, max=1_000_000, help="Draws per estimator (std needs two).")
    ] = 2000,
    k: Annotated[
        str | None,
        typer.Option(help="IWAE sample counts for the encoder SNR, e.g. 8 or 1,8,64."),
    ] = None,
    seed: Annotated[int, seed_option("Draws the noise.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    out: Out = None,
    device: Device = "auto",
) -> None:
    """How noisy each gradient estimator is, on a trained model."""
    ks = parse_ks(k) if k is not None else []
    loaded = load(checkpoint, runs_dir, device, announce=not json_output, out=out)

    from vae_cli.cli.console import SampleProgress
    from vae_cli.commands.gradients import measure_gradients
    from vae_cli.pictures.plots import save_gradients_figure

    bar = SampleProgress("encoder gradients", unit="gradient")
    report = measure_gradients(
        loaded,
        loaded.data_dir(data_dir),
        index=index,
        samples=samples,
        ks=ks,
        seed=seed,
        progress=bar,
        stage=(lambda line: None) if json_output else bar.write,
    )
    bar.close()
    path = out or loaded.run_dir / "gradients.png"
    if json_output:
        import json

        save_gradients_figure(report, path)
        print(json.dumps(report))
        return
    from vae_cli.cli.tables import gradients_table

    gradients_table(report)
    write_and_say(lambda target: save_gradients_figure(report, target), path, same_name=False)
