"""What produced a run (its config.toml's [manifest]: command, versions, device, commit, the
data folder and its MD5s), and finding the data a run was trained on from it."""

from __future__ import annotations

import os
import platform
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from vae_cli import __version__
from vae_cli.errors import UserError


def git_commit() -> str:
    """The commit of the vae-cli source tree, when it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def build_manifest(
    command: str, device_name: str, data_dir: Path, md5: dict[str, str], torch_version: str
) -> dict[str, Any]:
    """What produced a run, for its config.toml's [manifest] (torch's version passed in:
    runs/ never imports torch)."""
    return {
        "command": command,
        "vae_cli_version": __version__,
        "torch_version": str(torch_version),
        "python_version": platform.python_version(),
        "device": device_name,
        "git_commit": git_commit(),
        "data_dir": str(data_dir.resolve()),  # read back by eval, reconstruct, …
        "dataset_md5": [f"{name}:{digest}" for name, digest in sorted(md5.items())],
    }


def read_manifest(root: Path) -> dict[str, Any]:
    """The [manifest] table of a run's config.toml; empty when the file is unreadable, not TOML
    or edited into another shape (a run is rebuilt from its checkpoint, not from this file)."""
    try:
        manifest = tomllib.loads((root / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not UTF-8, or not TOML
        return {}
    table = manifest.get("manifest")
    return table if isinstance(table, dict) else {}


def run_data_dir(run_dir: Path, flag: Path | None) -> Path:
    """--data-dir, else $VAE_DATA_DIR, else the folder the run was trained on (its manifest),
    else ./data: every command that reads or resumes a run finds its data as it was trained."""
    from vae_cli.data.folders import resolve_data_dir

    if flag is not None or os.environ.get("VAE_DATA_DIR"):
        return resolve_data_dir(flag)
    recorded = recorded_data_dir(run_dir)
    if recorded is None:
        return resolve_data_dir(None)
    if not recorded.is_dir():
        raise UserError(
            f"{run_dir} was trained on data in {recorded}, which is gone; "
            "pass --data-dir or set VAE_DATA_DIR to the folder that holds MNIST/raw/"
        )
    return recorded


def recorded_data_dir(run_dir: Path) -> Path | None:
    """The data folder in a run's config.toml manifest, if the run has one."""
    recorded = read_manifest(run_dir).get("data_dir")
    return Path(recorded) if isinstance(recorded, str) and recorded else None
