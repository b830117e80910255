"""`vae runs`: the runs in a folder, as a table."""

from __future__ import annotations

from pathlib import Path

from vae_cli.cli.app import app
from vae_cli.cli.options import RunsDir


@app.command(short_help="List the runs: epochs, test loss, model and status.")
def runs(runs_dir: RunsDir = Path("runs")) -> None:
    """List the runs: epochs, best test loss, model and status."""
    from vae_cli.cli.tables import runs_table
    from vae_cli.runs.listing import list_runs

    runs_table(list_runs(runs_dir), str(runs_dir))
