"""The config through the real CLI, on the synthetic dataset: a flag beats the file, which
beats the default, and bad values are one line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import TINY, add_dummy, run_vae, train_args, train_tiny

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


def test_a_new_setting_is_a_flag_with_nothing_else_added(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`setting(...)` in a section is all it takes: the flag, its help and bounds, and the
    value in the run's config.toml come from the field."""
    add_dummy(monkeypatch)
    shown = run_vae("train", "--help")
    assert shown.code == 0
    # Its row: the flag, its type and bound, the help (wrapped beside the bound), its default.
    row = " ".join(re.sub("[│╭╮╰╯─]", " ", shown.stdout).split())
    assert "--dummy <float range> A setting for [x>=0] this test. [default: 1]" in row
    refused = run_vae(*train_args(tmp_path, data_dir, *TINY, "--dummy", -1))
    assert refused.code == 2 and refused.stderr.startswith("Error: --dummy")
    assert not (tmp_path / "r").exists()
    run = train_tiny(tmp_path, "r", data_dir, "--dummy", 2.5)
    assert tomllib.loads((run / "config.toml").read_text())["train"]["dummy"] == 2.5
