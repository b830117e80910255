"""Checkpoint files: round trip, atomic writes, and refusal of every kind of bad file."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest
import torch

from vae_cli import files as files_module
from vae_cli.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from vae_cli.config.settings import Config
from vae_cli.errors import UserError
from vae_cli.model.vae import VAE


def sample_checkpoint() -> dict:
    config = Config().replace({"latent_dim": 4, "hidden_dim": 8})
    model = VAE(config.model)
    return {
        "model": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "config": config.to_dict(),
        "epoch": 3,
        "step": 30,
        "position": 0,
        "rng": {"data_order": torch.Generator().get_state()},
        "best": {"loss": 1.5},
    }


def test_round_trip_keeps_tensors_and_values(tmp_path: Path) -> None:
    original = sample_checkpoint()
    save_checkpoint(tmp_path / "c.pt", original)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["epoch"] == 3 and loaded["step"] == 30 and loaded["best"] == {"loss": 1.5}
    assert loaded["config"] == Config().replace({"latent_dim": 4, "hidden_dim": 8})
    for key, tensor in original["model"].items():
        assert torch.equal(loaded["model"][key], tensor)
    assert loaded["versions"]["torch"] == str(torch.__version__)


def test_every_load_is_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path / "c.pt", sample_checkpoint())
    seen = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(tmp_path / "c.pt")
    assert seen == [True]


def expect_refusal(path: Path, fragment: str) -> None:
    with pytest.raises(UserError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ")
    assert fragment in str(error.value)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_files_are_refused(tmp_path: Path, fraction: float) -> None:
    save_checkpoint(tmp_path / "c.pt", sample_checkpoint())
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * fraction)])
    expected = (
        "empty file" if fraction == 0 else "not a readable PyTorch file (truncated or corrupt)"
    )
    expect_refusal(tmp_path / "cut.pt", expected)


def test_random_bytes_and_text_are_refused(tmp_path: Path) -> None:
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    (tmp_path / "notes.pt").write_text("hello, this is not a checkpoint\n")
    expect_refusal(tmp_path / "noise.pt", "not a PyTorch file (neither a torch.save zip")
    expect_refusal(tmp_path / "notes.pt", "not a PyTorch file")
    # A run's config.toml given as the checkpoint is not mistaken for a hostile pickle.
    (tmp_path / "config.toml").write_text("[model]\nlatent_dim = 32\n")
    expect_refusal(tmp_path / "config.toml", "not a PyTorch file (neither a torch.save zip")


class CreatesAFile:
    """Unpickling this would run os.system; a safe loader must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_malicious_pickle_is_refused_unexecuted(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"format": "vae-cli checkpoint", "model": CreatesAFile(marker)}
    if writer == "torch.save":
        torch.save(payload, tmp_path / "evil.pt")
    else:
        (tmp_path / "evil.pt").write_bytes(pickle.dumps(payload))
    expect_refusal(tmp_path / "evil.pt", "refused unread")
    assert not marker.exists()


def test_a_bare_state_dict_is_named_as_such(tmp_path: Path) -> None:
    torch.save(VAE(Config().model).state_dict(), tmp_path / "other.pt")
    expect_refusal(tmp_path / "other.pt", "bare state_dict")


def test_a_newer_format_asks_for_an_upgrade(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", sample_checkpoint())
    newer = torch.load(tmp_path / "c.pt", weights_only=True)
    newer["format_version"] = FORMAT_VERSION + 1
    torch.save(newer, tmp_path / "new.pt")
    expect_refusal(tmp_path / "new.pt", "upgrade vae-cli")


def test_weights_that_do_not_match_the_stored_config(tmp_path: Path) -> None:
    from vae_cli.commands.load import load_model

    broken = sample_checkpoint()
    broken["config"]["model"]["latent_dim"] = 16
    save_checkpoint(tmp_path / "c.pt", broken)
    with pytest.raises(UserError, match="1 layer 16"):
        load_model(tmp_path / "c.pt", "cpu")


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, sample_checkpoint())
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint(path, {**sample_checkpoint(), "epoch": 4})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    # Temporary files are created private (0600); the final file must not stay that way.
    save_checkpoint(tmp_path / "c.pt", sample_checkpoint())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~umask
