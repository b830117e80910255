"""Checkpoint files: atomic writes and safe, validated loads.

A checkpoint is one dict of tensors and plain values, always read with `weights_only=True`,
so a file can never run code; the model is rebuilt from the config stored inside.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from vae_cli import __version__
from vae_cli.config.toml import from_dict
from vae_cli.errors import UserError
from vae_cli.files import write_atomically

FORMAT_VERSION = 1
FORMAT_NAME = "vae-cli checkpoint"
REQUIRED_KEYS = ("model", "optimizer", "config", "epoch", "step", "rng")


def serialize_checkpoint(checkpoint: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file: the state plus the format header."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "versions": {"torch": str(torch.__version__), "vae_cli": __version__},
            **checkpoint,
        },
        buffer,
    )
    return buffer.getvalue()


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Serialise and write atomically; a disk error leaves the previous file as it was."""
    write_atomically(path, serialize_checkpoint(checkpoint))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint (or a `vae export` .safetensors file, weights and
    metadata only); every problem is a UserError naming the file."""
    if path.suffix == ".safetensors" and path.is_file():
        return load_exported(path)
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not a checkpoint")
    if not starts_like_torch_save(path):  # e.g. a config.toml given by mistake
        raise UserError(
            f"{path}: not a PyTorch file (neither a torch.save zip archive nor a pickle)"
        )
    try:
        with warnings.catch_warnings():  # e.g. "unexpected pickle protocol": we report it below
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = (
            "it holds objects other than tensors and plain values, refused unread"
            if "weights_only" in str(error) or "Unsupported" in str(error)
            else f"not a PyTorch file ({first_line})"
        )
        raise UserError(f"{path}: {reason}") from None
    except (
        RuntimeError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        OSError,
        UnicodeDecodeError,
        KeyError,
        AttributeError,
        IndexError,
        TypeError,
    ):
        raise UserError(f"{path}: not a readable PyTorch file (truncated or corrupt)") from None
    return validate_checkpoint(path, checkpoint)


def starts_like_torch_save(path: Path) -> bool:
    """A zip archive (torch.save) or a pickle from protocol 2 on (the legacy format)."""
    with path.open("rb") as handle:
        head = handle.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def validate_checkpoint(path: Path, checkpoint: Any) -> dict[str, Any]:
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: not a vae-cli checkpoint (holds a {type(checkpoint).__name__})")
    if checkpoint.get("format") != FORMAT_NAME:
        hint = (
            " (it looks like a bare state_dict from another program)"
            if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
            else ""
        )
        raise UserError(f"{path}: not a vae-cli checkpoint{hint}")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format {version} is newer than this vae-cli "
            f"({__version__}) reads (format {FORMAT_VERSION}); upgrade vae-cli"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise UserError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    checkpoint["config"] = from_dict(checkpoint["config"], f"{path} (stored config)")
    return checkpoint


EXPORT_FORMAT = "vae-cli weights"


def export_safetensors(checkpoint: dict[str, Any], path: Path) -> None:
    """The model's weights as safetensors; what describes them as JSON strings in the
    metadata (safetensors metadata is a str -> str map)."""
    from safetensors.torch import save

    config = checkpoint["config"]
    metadata = {
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "binarize": config.data.binarize,
        "dataset": config.data.dataset,
        "epoch": checkpoint["epoch"],
        "step": checkpoint["step"],
        "best": checkpoint.get("best"),
        "versions": {"torch": str(torch.__version__), "vae_cli": __version__},
    }
    tensors = {
        name: tensor.detach().cpu().contiguous() for name, tensor in checkpoint["model"].items()
    }
    encoded = {key: json.dumps(value) for key, value in metadata.items()}
    write_atomically(path, save(tensors, metadata=encoded))


def load_exported(path: Path) -> dict[str, Any]:
    """A `vae export` file as the parts of a checkpoint that inference reads."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            stored = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserError(f"{path}: not a readable safetensors file ({reason})") from None
    try:
        metadata = {key: json.loads(value) for key, value in stored.items()}
    except (json.JSONDecodeError, TypeError):
        metadata = {}
    if metadata.get("format") != EXPORT_FORMAT:
        raise UserError(
            f"{path}: a safetensors file, but not one `vae export` wrote (no vae-cli metadata)"
        )
    if not isinstance(metadata.get("format_version"), int) or metadata["format_version"] > (
        FORMAT_VERSION
    ):
        raise UserError(
            f"{path}: export format {metadata.get('format_version')} is newer "
            f"than this vae-cli ({__version__}) reads; upgrade vae-cli"
        )
    if not isinstance(metadata.get("config"), dict):
        raise UserError(f"{path}: incomplete vae-cli metadata (missing config)")
    return {
        "model": tensors,
        "config": from_dict(metadata["config"], f"{path} (stored config)"),
        "epoch": metadata.get("epoch"),
        "step": metadata.get("step"),
        "best": metadata.get("best") or {"loss": metadata.get("best_test_loss")},
        "versions": metadata.get("versions"),
        "exported": True,
    }
