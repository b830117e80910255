"""The `vae` command line: Typer options, one library call per command, a short summary.

torch is imported inside the commands so that `vae --help` is instant. User errors become one
`Error: …` line and exit code 2 in `main`, the single place that handles them.
"""

from __future__ import annotations

import contextlib
import errno
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vae_cli.config import MAX_MEMBERS, MAX_SEED, check_value, help_for, show_value
from vae_cli.errors import Terminated, TrainingFailed, TrainingInterrupted, UserError


class App(typer.Typer):
    """A Typer app whose errors go through `main` (one line, exit 2) when run as a script."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sys.exit(main(kwargs.get("args"), prog_name=kwargs.get("prog_name", "vae")))


app = App(
    name="vae",
    help="Train, evaluate and look at variational autoencoders on MNIST.",
    invoke_without_command=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def show_help_without_command(ctx: typer.Context) -> None:
    """Train, evaluate and look at variational autoencoders on MNIST."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main(argv: list[str] | None = None, prog_name: str = "vae") -> int:
    """Run the CLI and return its exit code; the one place user errors are reported."""
    with TerminationHandler() as termination:
        return run_command(argv, prog_name, termination)


class TerminationHandler:
    """SIGTERM (kill, timeout, a job scheduler) stops a command as Ctrl-C does: it raises
    Terminated, a KeyboardInterrupt, and remembers that it came."""

    def __enter__(self) -> TerminationHandler:
        self.received, self.previous = False, None
        with contextlib.suppress(ValueError):  # not the main thread: no signal handling
            self.previous = signal.signal(signal.SIGTERM, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.received = True
        raise Terminated

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def run_command(argv: list[str] | None, prog_name: str, termination: TerminationHandler) -> int:
    command = typer.main.get_command(app)
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        # The command line travels in ctx.obj so a run's manifest can record it.
        result = command.main(
            args=argv, prog_name=prog_name, standalone_mode=False, obj={"argv": argv}
        )
        if result == 128 + signal.SIGINT:  # Typer's answer to a KeyboardInterrupt
            return report_stop(termination.received)
        return result if isinstance(result, int) else 0
    except typer.Exit as stop:
        return stop.exit_code
    except typer.BadParameter as error:  # a flag's value: the same words as a config file's
        return report(parameter_message(error), 2)
    except typer.TyperException as error:  # usage errors: unknown option, missing value, …
        return report(error.format_message(), 2)
    except UserError as error:
        return report(str(error), 2)
    except TrainingFailed as error:
        return report(str(error), 1)
    except TrainingInterrupted as stop:
        stopped = "Terminated" if stop.signum == signal.SIGTERM else "Interrupted"
        commands = "".join(f"\n  vae train --resume {shlex.quote(d)}" for d in stop.run_dirs)
        print(f"{stopped}: saved {stop.saved}. Resume with:{commands}", file=sys.stderr)
        return 128 + stop.signum
    except (typer.Abort, KeyboardInterrupt):
        return report_stop(termination.received)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:  # a path the user typed; anything else is a bug
            raise
        return report(f"{error.filename}: file name too long ({error.strerror})", 2)


# Typer's checks of a flag's value (its type, min and max) -> the words config.check_value uses
# for the same mistake in a TOML file or a training flag: "expected an integer >= 1, got 0".
BOUND_WORDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
}


def parameter_message(error: typer.BadParameter) -> str:
    """`--flag: expected …, got …` for a bad flag value, whichever check found it."""
    param = getattr(error, "param", None)
    flag = max(param.opts, key=len) if param is not None and param.opts else "value"
    cause = error.__cause__
    details = cause.errors() if hasattr(cause, "errors") else []  # pydantic's, under typer
    if details:
        kind, given = details[0].get("type"), details[0].get("input")
        if kind in TYPE_WORDS:
            return f"{flag}: expected {TYPE_WORDS[kind]}, got {show_value(given)}"
        if kind in BOUND_WORDS:
            words, key = BOUND_WORDS[kind]
            limit = (details[0].get("ctx") or {}).get(key)
            number = "an integer" if isinstance(limit, int) else "a number"
            return f"{flag}: expected {number} {words} {show_value(limit)}, got {as_typed(given)}"
    return f"{flag}: {error.message}"


def as_typed(value: object) -> str:
    """A number the user typed (typer hands over its text) as written: 0, 200, nan."""
    if isinstance(value, str):
        return value.strip()
    return show_value(value)


def report_stop(terminated: bool) -> int:
    """Ctrl-C (130) or SIGTERM (143) outside training's own save: one line, no traceback."""
    print("Terminated." if terminated else "Interrupted.", file=sys.stderr)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def report(message: str, code: int) -> int:
    print("Error: " + " ".join(message.split()), file=sys.stderr)
    return code


def config_option(name: str, **kwargs: Any) -> Any:
    """A train option whose help text comes from the config field of the same name."""
    return typer.Option(help=help_for(name), show_default=False, **kwargs)


def seed_option(help: str) -> Any:
    """A seed: 32 bits, as everywhere in vae-cli."""
    return typer.Option(min=0, max=MAX_SEED, help=help)


MAX_IW_SAMPLES = 100_000  # K = 1000 already takes minutes on the whole test set
# Defaults of the picture commands (a default file name leaves out the options at these).
SAMPLES, RECONSTRUCTED, STEPS, LATENT_INPUTS, LATENT_SAMPLES = 64, 32, 10, 6, 200

# Options shared by the commands that read a checkpoint.
Checkpoint = Annotated[
    Path | None,
    typer.Option(
        help="A .pt or .safetensors file, or a run folder (its best.pt); default: the latest "
        "run in --runs-dir."
    ),
]
RunsDir = Annotated[Path, typer.Option(help="Folder that holds the runs.")]
DataDir = Annotated[
    Path | None,
    typer.Option(help="Folder holding MNIST/raw/ (default: $VAE_DATA_DIR, else ./data)."),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Out = Annotated[Path | None, typer.Option(help="PNG to write (default: inside the run folder).")]


def load(
    checkpoint: Path | None,
    runs_dir: Path,
    device: str,
    *,
    announce: bool = True,
    out: Path | None = None,
    suffix: str = ".png",
) -> Any:
    """The model to use; without --checkpoint, the latest run's, and a line saying which.
    The cheap checks (device name, --out, the checkpoint's path) come before torch loads."""
    from vae_cli.outputs import check_output_name
    from vae_cli.runs import resolve_checkpoint

    if device not in ("auto", "cpu", "cuda", "mps"):
        raise UserError(f"--device {device}: expected auto, cpu, cuda or mps")
    if out is not None:
        check_output_name(out, suffix)
    path = resolve_checkpoint(checkpoint, runs_dir)

    from vae_cli.inference import load_model, note_latest_run, note_population_member
    from vae_cli.population import is_population

    loaded = load_model(path, device)
    if checkpoint is None:
        note_latest_run(loaded, runs_dir)
    elif checkpoint.is_dir() and is_population(checkpoint):
        note_population_member(loaded, checkpoint)
    if announce and loaded.picked is not None:
        print(loaded.picked["line"])
    return loaded


def command_line(ctx: typer.Context) -> str:
    """The command as typed, for a run's manifest (main passes argv in ctx.obj)."""
    return " ".join(["vae", *(ctx.obj or {}).get("argv", sys.argv[1:])])


def wrote(path: Path, replaced: bool = False, detail: str = "") -> None:
    again = " (replaced the earlier one made with the same options)" if replaced else ""
    print(f"wrote {path}{detail}{again}")


def write_picture(write: Any, path: Path) -> Path:
    """Run a picture writer and say what it wrote, and whether it replaced a file."""
    existed = path.exists()
    written = write(path)
    wrote(written, replaced=existed)
    return written


# train's options that are not config fields.
RUN_OPTIONS = ("ctx", "config_file", "data_dir", "runs_dir", "name", "resume", "overwrite", "quiet")


@app.command()
def train(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="TOML file of settings; flags override it.")
    ] = None,
    arch: Annotated[str | None, config_option("arch")] = None,
    latent_dim: Annotated[int | None, config_option("latent_dim")] = None,
    hidden_dim: Annotated[int | None, config_option("hidden_dim")] = None,
    activation: Annotated[str | None, config_option("activation")] = None,
    stochastic_layers: Annotated[int | None, config_option("stochastic_layers")] = None,
    latent2_dim: Annotated[int | None, config_option("latent2_dim")] = None,
    hidden2_dim: Annotated[int | None, config_option("hidden2_dim")] = None,
    max_logvar: Annotated[float | None, config_option("max_logvar")] = None,
    min_std: Annotated[float | None, config_option("min_std")] = None,
    dataset: Annotated[str | None, config_option("dataset")] = None,
    binarize: Annotated[str | None, config_option("binarize")] = None,
    limit: Annotated[int | None, config_option("limit")] = None,
    epochs: Annotated[int | None, config_option("epochs")] = None,
    batch_size: Annotated[int | None, config_option("batch_size")] = None,
    lr: Annotated[float | None, config_option("lr")] = None,
    adam_beta2: Annotated[float | None, config_option("adam_beta2")] = None,
    lr_schedule: Annotated[str | None, config_option("lr_schedule")] = None,
    final_lr: Annotated[float | None, config_option("final_lr")] = None,
    time_budget: Annotated[float | None, config_option("time_budget")] = None,
    seed: Annotated[int | None, config_option("seed")] = None,
    seeds: Annotated[str | None, config_option("seeds")] = None,
    grad_clip: Annotated[float | None, config_option("grad_clip")] = None,
    max_bad_steps: Annotated[int | None, config_option("max_bad_steps")] = None,
    beta: Annotated[float | None, config_option("beta")] = None,
    kl_warmup_epochs: Annotated[int | None, config_option("kl_warmup_epochs")] = None,
    free_bits: Annotated[float | None, config_option("free_bits")] = None,
    objective: Annotated[str | None, config_option("objective")] = None,
    k: Annotated[int | None, config_option("k")] = None,
    dreg: Annotated[bool | None, config_option("dreg")] = None,
    device: Annotated[str | None, config_option("device")] = None,
    amp: Annotated[bool | None, config_option("amp")] = None,
    compile: Annotated[bool | None, config_option("compile")] = None,
    cuda_graph: Annotated[bool | None, config_option("cuda_graph")] = None,
    tensorboard: Annotated[bool | None, config_option("tensorboard")] = None,
    data_dir: DataDir = None,
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[
        str | None, typer.Option(help="Run folder name (default: a timestamp).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this folder (or from this checkpoint).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing run of that --name.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            help="Only one line per epoch and the files written: no start panel, progress "
            "bars or summary table (warnings and errors still show)."
        ),
    ] = False,
) -> None:
    """Train a VAE (or one per seed with --seeds, stacked); writes config, checkpoints,
    metrics and pictures to runs/NAME/ (runs/NAME/seed-S/ per member)."""
    flags = {key: value for key, value in locals().items() if key not in RUN_OPTIONS}
    from vae_cli import console
    from vae_cli.session import start_training

    trained = start_training(
        flags,
        config_file=config_file,
        data_dir=data_dir,
        runs_dir=runs_dir,
        name=name,
        resume=resume,
        overwrite=overwrite,
        command=command_line(ctx),
        display=lambda **kw: console.TrainingDisplay(quiet=quiet, **kw),
    )
    console.training_summary(trained, tables=not quiet)


@app.command("eval")
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
        typer.Option(help="Test pixels: none, static or dynamic (default: as trained)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Test-set loss, reconstruction, KL (nats per image) and posterior-collapse diagnostics."""
    import json

    if binarize is not None and (problem := check_value("binarize", binarize)):
        raise UserError(f"--binarize: {problem}")
    loaded = load(checkpoint, runs_dir, device, announce=not json_output)

    from vae_cli.console import SampleProgress
    from vae_cli.inference import evaluate_checkpoint

    progress = SampleProgress(f"IW NLL, K={iw_samples}")
    try:
        result = evaluate_checkpoint(
            loaded,
            loaded.data_dir(data_dir),
            iw_samples=iw_samples,
            limit=limit,
            binarize=binarize,
            progress=progress,
        )
    finally:
        progress.close()
    if json_output:
        print(json.dumps(result))
    else:
        from vae_cli.console import evaluation_table

        evaluation_table(result)


@app.command()
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

    from vae_cli.inference import write_manifold, write_samples
    from vae_cli.outputs import picture_name

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


@app.command()
def reconstruct(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    n: Annotated[int, typer.Option(min=1, max=1024, help="Number of test images.")] = RECONSTRUCTED,
    mean_only: Annotated[bool, typer.Option(help="Decode z = mu (deterministic).")] = False,
    seed: Annotated[int, seed_option("Seed of z's draw without --mean-only.")] = 0,
    out: Out = None,
    device: Device = "auto",
) -> None:
    """Test images over their reconstructions, as a PNG."""
    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.inference import write_reconstructions
    from vae_cli.outputs import picture_name

    stem = "reconstruct_mean" if mean_only else f"reconstruct_seed{seed}"
    default = loaded.run_dir / picture_name(stem, ("n", n, RECONSTRUCTED))
    data = loaded.data_dir(data_dir)
    write_picture(
        lambda path: write_reconstructions(loaded, data, path, n=n, seed=seed, mean_only=mean_only),
        out or default,
    )


@app.command()
def interpolate(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    from_index: Annotated[int | None, typer.Option(min=0, help="First test image.")] = None,
    to_index: Annotated[int | None, typer.Option(min=0, help="Second test image.")] = None,
    seed: Annotated[int, seed_option("Picks the images when no index given.")] = 0,
    steps: Annotated[int, typer.Option(min=2, max=100, help="Decoded points on the line.")] = STEPS,
    out: Out = None,
    device: Device = "auto",
) -> None:
    """A row of images decoded along the line between the mu of two test images."""
    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.inference import write_interpolation
    from vae_cli.outputs import picture_name

    if from_index is not None and to_index is not None:
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
    )
    wrote(path, replaced=existed, detail=f" (test images {first} -> {second})")


@app.command()
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
    out: Out = None,
    device: Device = "auto",
) -> None:
    """Picture of q(z|x): mu, sigma and samples for a few test images, and the test set's mu."""
    loaded = load(checkpoint, runs_dir, device, out=out)

    from vae_cli.inference import write_latent_figure
    from vae_cli.outputs import picture_name

    default = picture_name(
        "latent",
        ("seed", seed, 0),
        ("n", n_inputs, LATENT_INPUTS),
        ("s", samples_per_input, LATENT_SAMPLES),
    )
    data = loaded.data_dir(data_dir)
    write_picture(
        lambda path: write_latent_figure(
            loaded, data, path, n_inputs=n_inputs, samples_per_input=samples_per_input, seed=seed
        ),
        out or loaded.run_dir / default,
    )


@app.command()
def runs(runs_dir: RunsDir = Path("runs")) -> None:
    """List the runs: epochs, best test loss, model and status."""
    from vae_cli.console import runs_table
    from vae_cli.runs import list_runs

    runs_table(list_runs(runs_dir), str(runs_dir))


@app.command()
def tune(
    ctx: typer.Context,
    config_file: Annotated[
        Path, typer.Option("--config", help="TOML with fixed settings and a [search] table.")
    ],
    study: Annotated[
        str | None, typer.Option(help="Study name (default: the config file's name).")
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials this worker adds.")] = 10,
    storage: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the study (default: RUNS_DIR/STUDY/study.db)."),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    data_dir: DataDir = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Minutes after which no new trial starts; a trial already running finishes "
            "(Ctrl-C stops it at once, saved and resumable)."
        ),
    ] = None,
    pruner: Annotated[
        str, typer.Option(help="median (stop poor trials early) or none.")
    ] = "median",
    seed: Annotated[
        int | None, seed_option("Seed of the sampler (one worker: repeatable).")
    ] = None,
    summary: Annotated[
        bool, typer.Option(help="Only show the study's best trials and plots; no new trials.")
    ] = False,
    parallel: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_MEMBERS,
            help="Trials asked at a time; those that share a shape train in one stacked step.",
        ),
    ] = 1,
) -> None:
    """Search hyperparameters with Optuna; every trial is a run folder in RUNS_DIR/STUDY/."""
    from vae_cli import console
    from vae_cli.tune import start_sweep

    result = start_sweep(
        config_file,
        study=study,
        trials=0 if summary else trials,
        storage=storage,
        runs_dir=runs_dir,
        data_dir=data_dir,
        timeout=timeout,
        pruner=pruner,
        seed=seed,
        command=command_line(ctx),
        parallel=parallel,
        display=lambda label, **kw: console.TrainingDisplay(
            quiet=False, label=label, panel=False, **kw
        ),
    )
    console.tune_summary(result)


@app.command()
def export(
    checkpoint: Checkpoint = None,
    runs_dir: RunsDir = Path("runs"),
    out: Annotated[
        Path | None,
        typer.Option(help="The .safetensors file to write (default: RUN/model.safetensors)."),
    ] = None,
) -> None:
    """Write a model's weights as safetensors, its config and provenance in the metadata."""
    loaded = load(checkpoint, runs_dir, "cpu", out=out, suffix=".safetensors")

    from vae_cli.inference import write_export

    path = out or loaded.run_dir / "model.safetensors"
    existed = path.exists()
    wrote(write_export(loaded, path), replaced=existed)
