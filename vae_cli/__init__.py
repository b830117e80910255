"""vae-cli: train, evaluate and look at variational autoencoders on MNIST from a terminal."""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"


def load(path: str | os.PathLike[str], device: str = "cpu") -> Any:
    """The trained VAE in eval mode, from a run folder (its best.pt), a .pt or a .safetensors.

    It has `.encode(x)` -> (mu, logvar), `.decode(z)` -> Bernoulli logits (B, 784),
    `.config` (the model's settings) and `.run_config` (the whole training config). torch is
    imported here, not by `import vae_cli`.
    """
    from pathlib import Path

    from vae_cli.commands.load import load_model
    from vae_cli.runs.locate import resolve_checkpoint

    loaded = load_model(resolve_checkpoint(Path(path), Path("runs")), device)
    loaded.model.run_config = loaded.config
    return loaded.model
