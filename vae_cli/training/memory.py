"""How much memory one training step needs, checked before a run starts.

Without it an absurd --batch-size, --k or --hidden-dim ends in the kernel's OOM killer (kill -9,
no message, the run left "running") instead of one `Error:` line.
"""

from __future__ import annotations

import os

import torch

from vae_cli.config.settings import Config
from vae_cli.config.values import show_value
from vae_cli.errors import UserError
from vae_cli.model.layers import IMAGE_PIXELS
from vae_cli.model.vae import VAE

FLOAT_BYTES = 4
# The conv layers' outputs (32 x 14 x 14 and 64 x 7 x 7), before and after the nonlinearity.
CONV_FEATURES = 2 * (32 * 14 * 14 + 64 * 7 * 7)
# Image-sized tensors per decoded sample: logits, probabilities, the loss's elementwise terms.
LOSS_TEMPORARIES = 6


def largest_k(config: Config) -> int:
    """Samples per image of the most demanding phase (1 for the ELBO)."""
    phases = [config.phase(index).train for index in range(len(config.phases) + 1)]
    return max(train.k if train.objective == "iwae" else 1 for train in phases)


def step_bytes(config: Config, n_train: int) -> int:
    """A low estimate of one step's peak: weights, gradients and Adam's two moments, plus
    the activations autograd keeps for backward and their gradients."""
    with torch.device("meta"):  # counts the parameters without allocating them
        parameters = sum(p.numel() for p in VAE(config.model).parameters())
    (latent, hidden), *above = config.model.layer_sizes()
    gates = 2 if config.model.block == "gated" else 1  # a gated layer keeps two products
    batch = min(config.train.batch_size, n_train)
    per_image = IMAGE_PIXELS + 4 * gates * hidden + 4 * latent  # q(z1|x): x, hidden, mu, logvar
    per_sample = latent + 4 * gates * hidden + LOSS_TEMPORARIES * IMAGE_PIXELS  # decoder, loss
    if config.model.arch == "conv":
        per_image, per_sample = per_image + CONV_FEATURES, per_sample + CONV_FEATURES
    for size, width in above:  # q and p of each layer above: two hidden layers each
        per_sample += 2 * (4 * gates * width + 2 * size)
    activations = 2 * (batch * per_image + batch * largest_k(config) * per_sample)
    if config.model.prior == "vamp":  # K pseudo-inputs through the encoder, and the mixture's
        k, top = config.model.pseudo_inputs, config.model.latent_dims[-1]  # (k, B, K, D) terms
        activations += 2 * (k * per_image + 3 * batch * largest_k(config) * k * top)
    return FLOAT_BYTES * (4 * parameters + activations)


def device_memory_bytes(device: torch.device) -> int:
    """All the memory of the GPU, or the machine's RAM (also what MPS shares)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_step_fits(
    config: Config,
    device: torch.device,
    n_train: int,
    *,
    members: int = 1,
    members_flag: str = "--seeds",
) -> None:
    """Refuse a run (or `members` stacked runs: a population's --seeds, a sweep's --parallel
    trials) whose training step cannot fit in the device's memory at all."""
    need = members * step_bytes(config, n_train)
    have = device_memory_bytes(device)
    if need <= have:
        return
    k = largest_k(config)
    samples = f" x k {k}" if k > 1 else ""
    stacked = f" x {members} members" if members > 1 else ""
    culprits = "--batch-size, --k or --hidden-dims" if k > 1 else "--batch-size or --hidden-dims"
    if members > 1:
        culprits += f" or the number of {members_flag}"
    raise UserError(
        f"one training step needs at least {need / 2**30:,.0f} GiB (batch "
        f"{min(config.train.batch_size, n_train)}{samples}, hidden "
        f"{show_value(config.model.hidden_dims)}"
        f"{stacked}), more than the {have / 2**30:,.0f} GiB of {device.type} memory here; "
        f"lower {culprits}"
    )
