"""One optimisation step of a stack, built for speed and from one phase's settings.

All weights and gradients live in one (members, P) buffer: the gradient norm, the clip and the
fused Adam update run once per member row instead of once per tensor; the statistics stay on the
device; and on CUDA the whole step is captured once per batch size in a CUDA graph and replayed.
A VAE on MNIST is small enough that kernel launches and host syncs cost as much as the matrix
products, so the step launches few kernels and never waits for the device.

A step is built from the settings of the phase it runs (`Step(stack, settings, …)`);
a phase change or a resume builds a new one over the same stack, never edits one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vae_cli.config.settings import Config
from vae_cli.data.dataset import to_float
from vae_cli.model.bounds import LossParts
from vae_cli.training.adam import MemberAdam
from vae_cli.training.clock import TrainingClock
from vae_cli.training.stack import Stack


class Step:
    """Callable doing the batch's pixels, forward, backward, per-member clipping, the
    non-finite guard, the Adam update and the running statistics, with no host read.

    Learning rates and KL weights live in (members,) device tensors written before each step,
    so the same code can be replayed from a CUDA graph (`CapturedStep`).
    """

    def __init__(
        self,
        stack: Stack,
        settings: list[Config],
        generators: list[dict[str, torch.Generator]],
        clock: TrainingClock | None = None,
    ) -> None:
        self.stack, self.settings = stack, settings
        self.clock = clock or TrainingClock()
        self.model = stack.model
        train = [config.train for config in settings]
        self.shared = settings[0]  # objective, k, pixels, amp, compile: the same for all
        device = stack.flat.device
        self.device = device
        # Fused Adam reads a CUDA lr tensor as float32; on the CPU a float64 tensor keeps the
        # update bit-identical to a Python float lr.
        lr_dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.lr = torch.tensor([t.lr for t in train], dtype=lr_dtype, device=device)
        self.beta = torch.tensor([t.beta for t in train], device=device)
        self.lr_values = [t.lr for t in train]
        self.beta_values = [t.beta for t in train]
        # Free bits as a tensor only where some member uses them: it costs three kernels.
        free_bits = [t.free_bits for t in train]
        self.free_bits = torch.tensor(free_bits, device=device) if any(free_bits) else 0.0
        self.max_norm = torch.tensor([t.grad_clip or math.inf for t in train], device=device)
        self.max_bad_steps = torch.tensor(
            [float(t.max_bad_steps) for t in train], dtype=torch.float64, device=device
        )
        self.beta2 = [t.adam_beta2 for t in train]
        self.adam = MemberAdam(
            stack.flat.detach(),
            stack.flat_grad,
            stack.adam,
            lr=self.lr,
            beta2=self.beta2,
        )
        self.ema = self.shared.train.ema if stack.average is not None else None
        self.noise = [g["noise"] for g in generators]
        self.binarize = [g["binarize"] for g in generators]
        self.amp = self.shared.train.amp and device.type == "cuda"
        # --compile: the ELBO's whole forward (and so its backward) is one compiled graph. The
        # IWAE bound runs eagerly (DReG's gradient hooks would break the graph), so an IWAE
        # step has no compiling first step to time apart.
        self.compiled = self.shared.train.compile and self.shared.train.objective == "elbo"
        self.compile_done = False
        self.elbo: Callable[[torch.Tensor, list[torch.Tensor]], LossParts] = (
            torch.compile(self.elbo_for_noise) if self.compiled else self.elbo_for_noise
        )

    def set_schedule(self, lrs: list[float], betas: list[float]) -> None:
        """Write this step's learning rates and KL weights into their device tensors (only
        where they changed: on a GPU each write is a kernel)."""
        for values, written, tensor in (
            (lrs, self.lr_values, self.lr),
            (betas, self.beta_values, self.beta),
        ):
            if values == written:
                continue
            if len(set(values)) == 1:
                tensor.fill_(values[0])
            else:
                for member, value in enumerate(values):
                    if value != written[member]:
                        tensor[member].fill_(value)
            written[:] = values

    def __call__(self, images: torch.Tensor, lrs: list[float], betas: list[float]) -> None:
        """One step on images (M, B, 784) uint8: member m trains on images[m]."""
        self.set_schedule(lrs, betas)
        if self.compiled and not self.compile_done:
            # The first compiled step pays for compilation: timed apart, once, not as training.
            with self.clock.setup_time("compile_seconds", self.synchronize, images=images.shape[1]):
                self.run(images)
            self.compile_done = True
        else:
            self.run(images)

    def synchronize(self) -> None:
        synchronize(self.device)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 rows -> floats in [0, 1], then a fresh Bernoulli draw per member from its own
        stream for dynamic binarization."""
        x = images if images.is_floating_point() else to_float(images)  # (M, B, 784)
        if self.shared.data.binarize == "dynamic":
            x = stack_members(
                [torch.bernoulli(x[m], generator=g) for m, g in enumerate(self.binarize)]
            )
        return x

    def autocast(self) -> torch.autocast:
        # No weight cache: a captured graph must not depend on a cache's lifetime.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False
        )

    def noise_like(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Each member's standard-normal draws from its own stream, stacked: (M, *shape)."""
        dtype = torch.bfloat16 if self.amp else torch.float32
        return stack_members(
            [torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.noise]
        )

    def layer_noise(self, *leading: int) -> list[torch.Tensor]:
        """The reparameterization noise of every stochastic layer, (M, *leading, D_l) each."""
        return [self.noise_like((*leading, size)) for size in self.model.latent_dims]

    def loss(self, x: torch.Tensor) -> LossParts:
        train = self.shared.train
        batch = x.shape[1]
        if train.objective == "iwae":
            noise = self.layer_noise(train.k, batch)
            with self.autocast():
                return self.model.iwae(x, noise, dreg=train.dreg)
        # The noise is drawn outside the ELBO, which torch.compile may trace (generators don't).
        return self.elbo(x, self.layer_noise(batch))

    def elbo_for_noise(self, x: torch.Tensor, noise: list[torch.Tensor]) -> LossParts:
        """The negative ELBO of a batch with the noise of the reparameterization."""
        with self.autocast():
            return self.model.elbo(x, noise, beta=self.beta, free_bits=self.free_bits)

    def run(self, images: torch.Tensor) -> None:
        """The step itself: device work only, so it can be captured in a CUDA graph."""
        stack = self.stack
        # Backward hands each parameter its gradient without a copy when .grad is None; one
        # cat then fills the flat gradient (instead of zeroing it and adding into views).
        for parameter in stack.parameters:
            parameter.grad = None
        x = self.pixels(images)
        parts = self.loss(x)
        parts.loss.sum().backward()  # member m's loss reaches member m's weights only
        members = stack.size
        torch.cat(
            [p.grad.reshape(members, -1) for p in stack.parameters],
            dim=1,
            out=stack.flat_grad,
        )
        grad_norm = clip_per_member(stack.flat_grad, self.max_norm)
        finite = torch.isfinite(grad_norm) & torch.isfinite(parts.loss)
        # After --max-bad-steps in a row every later update of that member is skipped too, so
        # its weights stay those of the step that hit the limit until the host reads it.
        skip = ((~finite) | stack.stats.halted() | (stack.frozen > 0)).float()
        self.adam.step(skip)
        if self.ema is not None:
            self.update_average(1.0 - skip)
        self.accumulate(parts, grad_norm, finite, x.shape[1])

    def update_average(self, updated: torch.Tensor) -> None:
        """average = d·average + (1 - d)·weights for the members whose weights were updated,
        d = min(ema, (1 + n) / (10 + n)) after n averaged steps: a short memory at first, so
        the average is not the initial weights for the first thousand steps (TensorFlow's
        ExponentialMovingAverage with num_updates). Device work only, as the step is."""
        stack = self.stack
        count = stack.averaged_steps
        decay = torch.clamp((1 + count) / (10 + count), max=self.ema)
        weight = ((1 - decay) * updated).to(stack.flat.dtype).unsqueeze(1)  # (M, 1)
        stack.average.lerp_(stack.flat.detach(), weight)
        count += updated

    def accumulate(
        self, parts: LossParts, grad_norm: torch.Tensor, finite: torch.Tensor, batch: int
    ) -> None:
        """Add this step to the running sums (a few kernels, no sync)."""
        recon, kl = parts.recon.detach().sum(-1), parts.kl.detach().sum(-1)  # (M,)
        reported = (
            recon + kl if self.shared.train.objective == "elbo" else parts.loss.detach() * batch
        )
        self.stack.stats.add_step(
            {
                "images": torch.full_like(recon, float(batch)),  # a fill, not a host copy
                "steps": torch.ones_like(recon),
                "loss": reported.float(),
                "recon": recon.float(),
                "kl": kl.float(),
                "clipped": (grad_norm > self.max_norm).float(),
                "grad_norm": grad_norm.detach().float(),
                "bad_steps": torch.zeros_like(recon),
            },
            finite,
            self.max_bad_steps,
        )


def stack_members(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The members' tensors on a leading dimension (one member: a view, not a copy)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def clip_per_member(grads: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ for each member row of grads (M, P): torch's takes one norm over all it
    is given. The same formula (scale by max_norm / (norm + 1e-6), at most 1); returns the
    norms before clipping."""
    norms = torch.linalg.vector_norm(grads, dim=1)
    coefficient = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for member, row in enumerate(grads):  # a row times a scalar: 4x a broadcast (M, 1) product
        row.mul_(coefficient[member])
    return norms


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
