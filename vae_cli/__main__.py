"""`python -m vae_cli` runs the same app as the `vae` console script."""

from vae_cli.cli.app import app

app(prog_name="vae")
