"""What the commands share, declared once: the options (checkpoint, runs dir, data dir, device,
out, seeds), loading the model a command reads (cheap checks first), and the lines that say
which run was used and what was written."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vae_cli.config.settings import FIELDS, MAX_SEED
from vae_cli.config.values import bound, check_value, flag_help, show_value
from vae_cli.errors import UserError

if TYPE_CHECKING:  # both load torch: imported where a command runs, not at start-up
    from vae_cli.commands.load import Loaded
    from vae_cli.data.images import UserImages


def with_default(help_text: str, default: str) -> str:
    """An option's help with its default written as typer writes one ("[default: runs]"),
    for a default that is a description ("a timestamp"), which typer would parenthesise; the
    bracket escaped, so that rich does not read it as markup."""
    return f"{help_text} \\[default: {default}]"


def config_option(name: str, **kwargs: Any) -> Any:
    """A train option from the config field of the same name, in the style of every other
    option's help: its text and choices, "[default: …]", and an inclusive range as typer
    shows it ("[1<=x<=4096]", checked by typer in the same words as a TOML key); a strict
    bound, which typer cannot check, in the same brackets."""
    field_ = FIELDS[name][1]
    meta, numeric = field_.metadata, field_.type.replace(" | None", "") in ("int", "float")
    help_text, bounds = flag_help(name), {}
    if numeric:
        bounds = {"min": meta["minimum"], "max": meta["maximum"]}
        bounds = {key: value for key, value in bounds.items() if value is not None}
        strict = [f"x{op}{bound(meta[key])}" for key, op in (("above", ">"), ("below", "<"))
                  if meta[key] is not None]  # fmt: skip
        if strict:
            help_text += f" \\[{', '.join(strict)}]"
    elif field_.type.startswith("tuple") and meta["maximum"] is not None:
        help_text += f" \\[{bound(meta['minimum'])}<=each<={bound(meta['maximum'])}]"
    if not meta["alias"]:
        help_text = with_default(help_text, show_value(field_.default).strip("'"))
    return typer.Option(help=help_text, show_default=False, **bounds, **kwargs)


# A per-layer list is typed as "64,32,16" and parsed with the other checks (config.values).
FLAG_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple[int, ...]": str}
PANELS = {"model": "Model settings", "data": "Data settings", "train": "Training settings"}


def setting_parameters() -> list[inspect.Parameter]:
    """One keyword option per setting, in the settings' order: its type, help, default and
    bounds all from its field (the checks happen once, in config.values)."""
    parameters = []
    for name, (section, field_) in FIELDS.items():
        kind = FLAG_TYPES[field_.type.replace(" | None", "")]
        option = config_option(
            name, rich_help_panel=PANELS[section], hidden=field_.metadata["hidden"]
        )
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return parameters


class SettingFlags:
    """A command whose options include one flag per setting, made from the settings' fields
    whenever Typer reads the command's signature: a new `setting(...)` is a new flag, in
    `--help` too, with nothing else written. The command receives the settings' flags as one
    dict, `settings` (None: not given)."""

    def __init__(self, command: Callable[..., Any]) -> None:
        self.command = command
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(self, attribute, getattr(command, attribute))

    @property
    def __signature__(self) -> inspect.Signature:
        own = inspect.signature(self.command, eval_str=True)
        kept = [p for p in own.parameters.values() if p.name != "settings"]
        return own.replace(parameters=[*kept, *setting_parameters()])

    @property
    def __annotations__(self) -> dict[str, Any]:  # what typing.get_type_hints reads
        return {p.name: p.annotation for p in self.__signature__.parameters.values()}

    def __call__(self, **options: Any) -> Any:
        settings = {name: options.pop(name, None) for name in FIELDS}
        return self.command(**options, settings=settings)


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
        help=with_default(
            "A .pt or .safetensors file, or a run folder (its best.pt).",
            "the latest run in --runs-dir",
        ),
        show_default=False,
    ),
]
RunsDir = Annotated[Path, typer.Option(help="Folder that holds the runs.")]
DataDir = Annotated[
    Path | None,
    typer.Option(
        help=with_default("Folder holding MNIST/raw/.", "$VAE_DATA_DIR, else ./data"),
        show_default=False,
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
# A user's own images, the same for every command that reads images (data/images.py).
Images = Annotated[
    list[Path] | None,
    typer.Option(
        "--images",
        help="Your images instead of the test set: image files (PNG, JPEG, ...), folders of "
        "them, .npy arrays (N, 28, 28) or (N, 784), IDX files; give it once per path.",
        show_default=False,
    ),
]
Invert = Annotated[
    str,
    typer.Option(
        help="Your images: white ink on black as MNIST's (auto: when the border is "
        "light). One of: auto, yes, no."
    ),
]
Fit = Annotated[
    str,
    typer.Option(
        help="Your images: mnist = the ink's box into 20x20, centred by mass in "
        "28x28, as MNIST was made; resize = squeezed whole. One of: mnist, resize."
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(help=with_default("PNG to write.", "inside the run folder"), show_default=False),
]


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
    from vae_cli.commands.outputs import check_output_name
    from vae_cli.runs.locate import resolve_checkpoint

    if (problem := check_value("device", device)) is not None:  # as `vae train` says it
        raise UserError(f"--device: {problem}")
    if out is not None:
        check_output_name(out, suffix)
    path = resolve_checkpoint(checkpoint, runs_dir)

    from vae_cli.commands.load import load_model, note_latest_run, note_population_member
    from vae_cli.runs.population import is_population

    loaded = load_model(path, device)
    if checkpoint is None:
        note_latest_run(loaded, runs_dir)
    elif checkpoint.is_dir() and is_population(checkpoint):
        note_population_member(loaded, checkpoint)
    if announce and loaded.picked is not None:
        print(loaded.picked["line"])
    return loaded


def your_images(
    loaded: Loaded, paths: list[Path] | None, *, invert: str, fit: str, say: bool = True
) -> UserImages | None:
    """The user's --images as the model reads them (None without any), and the line that says
    what was done to them."""
    if not paths:
        return None
    from vae_cli.commands.images import user_pixels

    read = user_pixels(loaded, paths, invert=invert, fit=fit)
    if say:
        from vae_cli.cli.console import stdout

        stdout().print(read.said, soft_wrap=False)
    return read


def command_line(ctx: typer.Context) -> str:
    """The command as typed, for a run's manifest (main passes argv in ctx.obj)."""
    return " ".join(["vae", *(ctx.obj or {}).get("argv", sys.argv[1:])])


def wrote(path: Path, replaced: bool = False, detail: str = "", *, same_name: bool = True) -> None:
    """`same_name`: the picture's name says its options, so a replaced one had the same."""
    again = ""
    if replaced:
        again = (
            " (replaced the earlier one made with the same options)"
            if same_name
            else (" (replaced the earlier one)")
        )
    print(f"wrote {path}{detail}{again}")


def write_picture(write: Callable[[Path], Path], path: Path, *, same_name: bool = True) -> Path:
    """Run a picture writer and say what it wrote, and whether it replaced a file."""
    existed = path.exists()
    written = write(path)
    wrote(written, replaced=existed, same_name=same_name)
    return written
