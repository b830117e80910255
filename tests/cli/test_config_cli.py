"""The config through the real CLI, on the synthetic dataset: a flag beats the file, which
beats the default, and bad values are one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import torch
from conftest import run_vae

from vae_cli.checkpoint import load_checkpoint


def test_a_run_config_reproduces_the_run(trained_run: Path, data_dir: Path) -> None:
    again = trained_run.parent / "again"
    result = run_vae(
        "train",
        "--config",
        trained_run / "config.toml",
        "--name",
        "again",
        "--runs-dir",
        trained_run.parent,
        "--data-dir",
        data_dir,
        "--quiet",
    )
    assert result.code == 0, result.stderr
    first, second = (
        load_checkpoint(p / "checkpoints/last.pt")["model"] for p in (trained_run, again)
    )
    assert all(torch.equal(first[k], second[k]) for k in first)
    stored = tomllib.loads((again / "config.toml").read_text())
    assert stored["manifest"]["command"].startswith("vae train --config")
