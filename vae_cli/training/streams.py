"""A member's random streams: one named torch.Generator each, seeded from --seed, saved in every
checkpoint and restored on resume, so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import torch

DEVICE_STREAMS = ("noise", "binarize")  # generators that live on the training device


def make_generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """Separate streams, so that e.g. changing the batch size leaves the weights' init alone."""
    return {
        "data_order": torch.Generator().manual_seed(seed),  # CPU: same order on every device
        "noise": torch.Generator(device=device).manual_seed(seed + 1),
        "binarize": torch.Generator(device=device).manual_seed(seed + 2),
    }


def saved_device_type(checkpoint: dict[str, Any]) -> str:
    """The device type whose generators a checkpoint's noise and binarization states are.

    Older checkpoints do not say: a CPU generator's state is 5,056 bytes, a CUDA one's 16."""
    rng = checkpoint["rng"]
    if "device_type" in rng:
        return rng["device_type"]
    return "cpu" if rng["noise"].numel() == torch.Generator().get_state().numel() else "cuda"


def reseeded_stream(seed: int, name: str, step: int) -> int:
    """A seed for a device stream re-derived at `step` (e.g. a CUDA run resumed on a CPU)."""
    digest = hashlib.sha256(f"{seed}:{name}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream_states(
    generators: dict[str, torch.Generator], epoch_start_order: torch.Tensor, device: torch.device
) -> dict[str, Any]:
    """Every stream's state for a checkpoint; the data order as it was when the epoch's
    permutation was drawn, so a resume redraws the same one."""
    rng: dict[str, Any] = {name: g.get_state() for name, g in generators.items()}
    rng["data_order"] = epoch_start_order
    rng["device_type"] = device.type
    rng["torch"] = torch.get_rng_state()
    rng["python"] = random.getstate()
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_streams(
    checkpoint: dict[str, Any], generators: dict[str, torch.Generator], seed: int
) -> None:
    """Every stream as saved; the device streams are re-derived from the seed and the step
    when the device type changed, since a generator takes only its own type's state."""
    rng = checkpoint["rng"]
    generators["data_order"].set_state(rng["data_order"])
    device = generators["noise"].device
    same_device = saved_device_type(checkpoint) == device.type
    for name in DEVICE_STREAMS:
        if same_device:
            generators[name].set_state(rng[name])
        else:
            generators[name].manual_seed(reseeded_stream(seed, name, checkpoint["step"]))
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])


class RandomStreams:
    """One member's generators: the data order (CPU, the same order on every device), the
    reparameterization noise and the binarization draws (on the device). It keeps the data
    order's state from before this epoch's permutation, so a mid-epoch checkpoint redraws it."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed, self.device = seed, device
        self.generators = make_generators(seed, device)
        self.epoch_start = self.generators["data_order"].get_state()

    def draw_order(self, n: int) -> torch.Tensor:
        """This epoch's permutation of n training images."""
        self.epoch_start = self.generators["data_order"].get_state()
        return torch.randperm(n, generator=self.generators["data_order"])

    def state_dict(self, *, mid_epoch: bool) -> dict[str, Any]:
        """Mid-epoch the data order as it was when the epoch's permutation was drawn; at an
        epoch's end as it is, the start of the next one."""
        order = self.epoch_start if mid_epoch else self.generators["data_order"].get_state()
        return stream_states(self.generators, order, self.device)

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        restore_streams(checkpoint, self.generators, self.seed)
        self.epoch_start = self.generators["data_order"].get_state()
