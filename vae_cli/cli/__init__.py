"""The `vae` command line: Typer options, one call into commands/ per command, rich output.

Importing the package registers every command on `app` (the console script's entry point).
"""

from vae_cli.cli import (  # noqa: F401  (register commands)
    gradients,
    inference,
    own_images,
    runs,
    train,
    tune,
)
from vae_cli.cli.app import app

__all__ = ["app"]
