"""Checkpoint files through the real CLI, on the synthetic dataset: what a trained run's
best.pt holds and how a bad one is refused."""

from __future__ import annotations

from pathlib import Path

from conftest import run_vae


def test_bad_checkpoints_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "zero.pt").write_bytes(b"")
    result = run_vae("eval", "--checkpoint", tmp_path / "zero.pt")
    assert result.code == 2
    assert result.stderr == f"Error: {tmp_path / 'zero.pt'}: empty file, not a checkpoint\n"
