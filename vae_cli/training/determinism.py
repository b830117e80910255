"""Bit-reproducible kernels: strict on the CPU, best effort (warn only) on GPUs.

The one private torch API of start-up: `torch._C._set_deterministic_algorithms` sets the same
switch as the public `torch.use_deterministic_algorithms`, without the latter's import of
torch._inductor (and torch._dynamo), about a second of every training run's start. If a torch
upgrade removes it, the public function takes over; a test fails loudly so the change is seen.
"""

from __future__ import annotations

import os

import torch

PRIVATE_SWITCH = getattr(torch._C, "_set_deterministic_algorithms", None)


def make_deterministic(device: torch.device, *, compiling: bool = False) -> None:
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic matmuls; must be set before its init.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    warn_only = device.type != "cpu"
    if compiling or PRIVATE_SWITCH is None:  # compiling: also sets the compiler's own switch
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        PRIVATE_SWITCH(True, warn_only=warn_only)
