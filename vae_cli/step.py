"""One optimisation step, built for speed: all parameters and gradients in one flat buffer,
fused Adam, clipping with one norm, and statistics that stay on the device.

A VAE on MNIST is small enough that per-tensor kernels and host syncs cost as much as the
matrix products, so the step launches few kernels and never waits for the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from vae_cli.config import Config
from vae_cli.model import VAE, LossParts, elbo_loss, iwae_loss

# Slots of the on-device running sums, read by the host once per progress interval.
STATS = (
    "images",
    "steps",
    "loss",
    "recon",
    "kl",
    "clipped",
    "grad_norm",
    "bad_steps",
    "bad_streak",
)


def flatten_parameters(model: nn.Module) -> tuple[nn.Parameter, torch.Tensor]:
    """Re-home every parameter (and gradient) as a view into one flat buffer.

    Norms, clipping, zeroing and Adam then run as one kernel each instead of one per
    tensor. Backward still fills each parameter's .grad in place, i.e. the flat gradient.
    """
    parameters = list(model.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in parameters]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in parameters:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    return flat, flat.grad


class TrainStep:
    """Callable doing forward, backward, clipping, the non-finite guard and the Adam update."""

    def __init__(self, model: VAE, config: Config, noise: torch.Generator) -> None:
        self.model, self.config, self.noise = model, config, noise
        self.flat, self.flat_grad = flatten_parameters(model)
        # Fused Adam: one kernel, and it skips the update on the device when found_inf is set.
        self.optimizer = torch.optim.Adam(
            [self.flat], lr=config.train.lr, fused=True, betas=(0.9, config.train.adam_beta2)
        )
        device = self.flat.device
        self.stats = torch.zeros(len(STATS), dtype=torch.float64, device=device)
        self.bad_step = torch.zeros(len(STATS) - 1, dtype=torch.float64, device=device)
        self.bad_step[STATS.index("bad_steps")] = 1.0  # what a skipped step adds
        self.max_norm = config.train.grad_clip or math.inf
        self.compile_seconds: float | None = None
        self.decode: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(model.decode) if config.train.compile else model.decode
        )
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=config.train.amp and device.type == "cuda"
        )

    def loss(self, x: torch.Tensor, beta: float) -> LossParts:
        train = self.config.train
        with self.autocast:
            mu, logvar = self.model.encode(x)  # (B, D) each
            if train.objective == "iwae":
                return iwae_loss(x, mu, logvar, self.decode, train.k, self.noise)
            eps = torch.randn(mu.shape, generator=self.noise, device=x.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps  # logvar is already clamped by encode
            return elbo_loss(
                x,
                self.decode(z).float(),
                mu.float(),
                logvar.float(),
                beta=beta,
                free_bits=train.free_bits,
            )

    def __call__(self, x: torch.Tensor, lr: float, beta: float) -> None:
        if self.config.train.compile and self.compile_seconds is None:
            # The first compiled step pays for compilation: time it apart from training.
            started = time.perf_counter()
            self.step(x, lr, beta)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            self.compile_seconds = time.perf_counter() - started
        else:
            self.step(x, lr, beta)

    def step(self, x: torch.Tensor, lr: float, beta: float) -> None:
        self.flat_grad.zero_()
        parts = self.loss(x, beta)
        parts.loss.backward()
        # One flat tensor: a single norm and a single scaling kernel.
        grad_norm = torch.nn.utils.clip_grad_norm_([self.flat], self.max_norm)
        finite = torch.isfinite(grad_norm) & torch.isfinite(parts.loss)
        self.optimizer.found_inf = (~finite).float()
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.step()
        self.accumulate(parts, grad_norm, finite, len(x))

    def accumulate(
        self, parts: LossParts, grad_norm: torch.Tensor, finite: torch.Tensor, batch: int
    ) -> None:
        """Add this step to the running sums (a few kernels, no sync); a non-finite step
        only counts as bad."""
        recon, kl = parts.recon.detach().sum(), parts.kl.detach().sum()
        reported = (
            recon + kl if self.config.train.objective == "elbo" else parts.loss.detach() * batch
        )
        good = finite.double()
        step = torch.stack(
            [
                good.new_tensor(float(batch)),
                good.new_ones(()),
                reported.double(),
                recon.double(),
                kl.double(),
                (grad_norm > self.max_norm).double(),
                grad_norm.detach().double(),
                good.new_zeros(()),
            ]
        )
        self.stats[:8] += torch.where(finite, step, self.bad_step)
        self.stats[8] = (self.stats[8] + 1) * (1 - good)  # consecutive bad steps


def summarize(stats: list[float]) -> dict[str, float]:
    """Per-image and per-step means from the running sums (slots named in STATS)."""
    values = dict(zip(STATS, stats, strict=True))
    images, steps = max(values["images"], 1.0), max(values["steps"], 1.0)
    return {
        "images": values["images"],
        "loss": values["loss"] / images,
        "recon": values["recon"] / images,
        "kl": values["kl"] / images,
        "bad_steps": values["bad_steps"],
        "bad_streak": values["bad_streak"],
        "clipped_fraction": values["clipped"] / steps,
        "mean_grad_norm": values["grad_norm"] / steps,
    }
