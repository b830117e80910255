"""The repository holds source, not outputs: no run folders, checkpoints or datasets in git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
from conftest import REPO

RUN_FILES = {"metrics.jsonl", "status.json", "study.db"}
DATA_SUFFIXES = {".pt", ".pth", ".safetensors", ".db"}


def test_no_run_outputs_or_data_are_tracked() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    paths = [PurePosixPath(path) for path in tracked]
    assert [p for p in paths if p.name in RUN_FILES or p.suffix in DATA_SUFFIXES] == []
    assert [p for p in paths if p.name.endswith("-ubyte")] == []
    # Pictures live in docs/ only (those the README shows); runs/ holds just its .gitkeep.
    assert [p for p in paths if p.suffix == ".png" and p.parts[0] != "docs"] == []
    assert [p for p in paths if p.parts[0] == "runs"] == [PurePosixPath("runs/.gitkeep")]
