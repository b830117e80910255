"""The `vae` command line: Typer options, one call into commands/ per command, rich output.

Importing the package registers every command on `app` (the console script's entry point).
"""

from vae_cli.cli import gradients, inference, runs, train, tune  # noqa: F401  (register commands)
from vae_cli.cli.app import app

__all__ = ["app"]
