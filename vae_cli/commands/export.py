"""`vae export`: a model's weights as a .safetensors file."""

from __future__ import annotations

from pathlib import Path

from vae_cli.commands.load import Loaded


def write_export(loaded: Loaded, path: Path) -> Path:
    """The loaded model as a .safetensors file (see checkpoint.export_safetensors)."""
    from vae_cli.checkpoint import export_safetensors
    from vae_cli.commands.outputs import check_output_name

    check_output_name(path, ".safetensors")
    state = {**loaded.checkpoint, "model": loaded.model.state_dict()}
    export_safetensors(state, path)
    return path
