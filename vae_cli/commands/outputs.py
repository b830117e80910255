"""Where a command's output file goes: checks of a name the user gave, made before any model is
loaded, and default names that carry the options that change the picture. No torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_cli.errors import UserError


def check_output_name(path: Path, suffix: str = ".png") -> Path:
    """--out must name a file of its kind (a PNG picture, a .safetensors export)."""
    kind = "a PNG picture" if suffix == ".png" else f"a {suffix.lstrip('.')} file"
    if path.suffix.lower() != suffix:
        raise UserError(f"--out {path}: the output is {kind}, name it *{suffix}")
    if path.is_dir():
        raise UserError(f"--out {path}: is a folder; give a file name ending in {suffix}")
    return path


def make_output_folder(path: Path) -> None:
    """The folder of an output file, created when missing; a failure is one Error line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"--out {path}: cannot create folder {path.parent} ({error.strerror or error})"
        ) from None
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: {path.parent} is not a folder")


def picture_name(stem: str, *options: tuple[str, Any, Any]) -> str:
    """A default file name: the stem, then each option that is not at its default, e.g.
    picture_name("reconstruct_mean", ("n", 16, 32)) -> "reconstruct_mean_n16.png", so that
    pictures made with other options never replace each other."""
    parts = [stem] + [f"{name}{value:g}" if isinstance(value, float) else f"{name}{value}"
                      for name, value, default in options if value != default]  # fmt: skip
    return "_".join(parts) + ".png"
