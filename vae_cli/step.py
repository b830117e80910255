"""One optimisation step, built for speed: all parameters and gradients in one flat buffer,
fused Adam, clipping with one norm, statistics that stay on the device, and on CUDA the whole
step captured once in a CUDA graph and replayed for every batch.

A VAE on MNIST is small enough that per-tensor kernels, kernel launches and host syncs cost as
much as the matrix products, so the step launches few kernels and never waits for the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from vae_cli.adam import FlatAdam
from vae_cli.config import Config
from vae_cli.data import to_float
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
    "halted",
)
PER_STEP = 8  # the first 8 slots are added per step; the streak and the halt carry over epochs
CAPTURE_WARMUP_STEPS = 3  # eager steps per batch size before its graph is captured


def flatten_parameters(model: nn.Module) -> tuple[nn.Parameter, torch.Tensor]:
    """Re-home every parameter as a view into one flat buffer, with one flat gradient.

    Norms, clipping and Adam then run as one kernel each instead of one per tensor.
    """
    parameters = list(model.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in parameters]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in parameters:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        offset += n
    return flat, flat.grad


class TrainStep:
    """Callable doing the batch's pixels, forward, backward, clipping, the non-finite guard,
    the Adam update and the running statistics, with no host read anywhere inside.

    The learning rate and the KL weight live in device tensors written before each step, so
    the same code can be replayed from a CUDA graph (`CapturedStep`) without baking them in.
    """

    def __init__(self, model: VAE, config: Config, generators: dict[str, torch.Generator]) -> None:
        self.model, self.config = model, config
        self.noise, self.binarize = generators["noise"], generators.get("binarize")
        self.parameters = list(model.parameters())
        self.flat, self.flat_grad = flatten_parameters(model)
        device = self.flat.device
        # Fused Adam reads a CUDA lr tensor as float32; on the CPU a float64 tensor keeps the
        # update bit-identical to a Python float lr.
        lr_dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.lr = torch.tensor(config.train.lr, dtype=lr_dtype, device=device)
        self.beta = torch.tensor(config.train.beta, dtype=torch.float32, device=device)
        self.lr_value, self.beta_value = config.train.lr, config.train.beta
        # Fused Adam: one kernel, and it skips the update on the device when told to.
        self.optimizer = FlatAdam(
            self.flat.view(1, -1),
            self.flat_grad.view(1, -1),
            lr=self.lr.view(1),
            beta2=[config.train.adam_beta2],
        )
        self.stats = torch.zeros(len(STATS), dtype=torch.float64, device=device)
        self.bad_step = torch.zeros(PER_STEP, dtype=torch.float64, device=device)
        self.bad_step[STATS.index("bad_steps")] = 1.0  # what a skipped step adds
        self.max_norm = config.train.grad_clip or math.inf
        self.max_bad_steps = config.train.max_bad_steps
        self.compile_seconds: float | None = None
        # --compile: the ELBO's whole forward (and so its backward) is one compiled graph; IWAE,
        # whose samples are drawn inside, compiles its decoder.
        self.elbo: Callable[[torch.Tensor, torch.Tensor], LossParts] = (
            torch.compile(self.elbo_for_noise) if config.train.compile else self.elbo_for_noise
        )
        self.decode: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(model.decode) if config.train.compile else model.decode
        )
        self.amp = config.train.amp and device.type == "cuda"

    def apply_phase(self, config: Config) -> None:
        """A new training phase's settings: objective, k, free bits, clipping, Adam's beta2."""
        self.config = config
        self.max_norm = config.train.grad_clip or math.inf
        self.optimizer.beta2 = [config.train.adam_beta2]

    def set_schedule(self, lr: float, beta: float) -> None:
        """Write this step's lr and KL weight into their device tensors (only on change)."""
        if lr != self.lr_value:
            self.lr.fill_(lr)
            self.lr_value = lr
        if beta != self.beta_value:
            self.beta.fill_(beta)
            self.beta_value = beta

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 rows -> floats in [0, 1], then a fresh Bernoulli draw for dynamic binarization."""
        x = images if images.is_floating_point() else to_float(images)  # (B, 784)
        if self.config.data.binarize == "dynamic":
            x = torch.bernoulli(x, generator=self.binarize)
        return x

    def autocast(self) -> torch.autocast:
        # No weight cache: a captured graph must not depend on a cache's lifetime.
        return torch.autocast(
            self.flat.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False
        )

    def loss(self, x: torch.Tensor) -> LossParts:
        train = self.config.train
        if train.objective == "iwae":
            with self.autocast():
                mu, logvar = self.model.encode(x)  # (B, D) each
                return iwae_loss(x, mu, logvar, self.decode, train.k, self.noise)
        # The noise is drawn outside the ELBO, which torch.compile may trace (generators don't),
        # in the dtype the encoder's output has under autocast.
        eps = torch.randn(
            (len(x), self.model.config.latent_dim),
            generator=self.noise,
            device=x.device,
            dtype=torch.bfloat16 if self.amp else torch.float32,
        )
        return self.elbo(x, eps)

    def elbo_for_noise(self, x: torch.Tensor, eps: torch.Tensor) -> LossParts:
        """The negative ELBO of a batch with the noise eps of the reparameterization."""
        with self.autocast():
            mu, logvar = self.model.encode(x)  # (B, D) each
            z = mu + torch.exp(0.5 * logvar) * eps  # logvar is already clamped by encode
            return elbo_loss(
                x,
                self.model.decode(z).float(),
                mu.float(),
                logvar.float(),
                beta=self.beta,
                free_bits=self.config.train.free_bits,
            )

    def __call__(self, images: torch.Tensor, lr: float, beta: float) -> None:
        self.set_schedule(lr, beta)
        if self.config.train.compile and self.compile_seconds is None:
            # The first compiled step pays for compilation: time it apart from training.
            started = time.perf_counter()
            self.step(images)
            synchronize(images.device)
            self.compile_seconds = time.perf_counter() - started
        else:
            self.step(images)

    def step(self, images: torch.Tensor) -> None:
        """The step itself: device work only, so it can be captured in a CUDA graph."""
        # Backward hands each parameter its gradient without a copy when .grad is None; one
        # cat then fills the flat gradient (instead of zeroing it and adding into 14 views).
        for parameter in self.parameters:
            parameter.grad = None
        x = self.pixels(images)
        parts = self.loss(x)
        parts.loss.backward()
        torch.cat([p.grad.view(-1) for p in self.parameters], out=self.flat_grad)
        # One flat tensor: a single norm and a single scaling kernel.
        grad_norm = torch.nn.utils.clip_grad_norm_([self.flat], self.max_norm)
        finite = torch.isfinite(grad_norm) & torch.isfinite(parts.loss)
        # After --max-bad-steps in a row every later update is skipped too, so the weights stay
        # those of the step that hit the limit until the host reads the streak and stops.
        self.optimizer.step(((~finite) | (self.stats[-1] > 0)).float().view(1))
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
        step = torch.stack(
            [
                recon.new_full((), float(batch)),  # a fill kernel, not a host-to-device copy
                recon.new_ones(()),
                reported.float(),
                recon.float(),
                kl.float(),
                (grad_norm > self.max_norm).float(),
                grad_norm.detach().float(),
                recon.new_zeros(()),
            ]
        ).double()
        good = finite.double()
        self.stats[:PER_STEP] += torch.where(finite, step, self.bad_step)
        streak = (self.stats[PER_STEP] + 1) * (1 - good)  # consecutive bad steps
        self.stats[PER_STEP:] = torch.stack(
            [streak, torch.maximum(self.stats[-1], (streak >= self.max_bad_steps).double())]
        )

    def reset_epoch_sums(self) -> None:
        """Zero the per-epoch sums; the bad-step streak and the halt span epochs."""
        self.stats[:PER_STEP].zero_()


class CapturedStep:
    """`TrainStep.step` captured once per batch size in a CUDA graph and replayed.

    Each batch is copied into the graph's static input; lr and beta are device tensors the
    step reads; the noise and binarization generators are registered with every graph, so each
    replay draws fresh numbers from the same streams an eager step would. A batch size's first
    CAPTURE_WARMUP_STEPS steps run eagerly (real steps) before its capture.
    """

    def __init__(self, train_step: TrainStep) -> None:
        self.train_step = train_step
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.eager_steps: dict[int, int] = {}
        self.stream = torch.cuda.Stream(train_step.flat.device)
        self.capture_seconds = 0.0  # warm-up and capture, left out of images/s

    def __getattr__(self, name: str) -> object:  # stats, optimizer, flat, …: the wrapped step's
        return getattr(self.train_step, name)

    def __call__(self, images: torch.Tensor, lr: float, beta: float) -> None:
        self.train_step.set_schedule(lr, beta)
        batch = len(images)
        if batch in self.graphs:
            graph, static_images = self.graphs[batch]
            static_images.copy_(images)
            graph.replay()
            return
        started = time.perf_counter()
        if self.eager_steps.get(batch, 0) < CAPTURE_WARMUP_STEPS:
            self.eager_steps[batch] = self.eager_steps.get(batch, 0) + 1
            self.on_side_stream(lambda: self.train_step(images, lr, beta))
        else:
            self.capture(images)
            self.graphs[batch][0].replay()  # capturing records the step without running it
        synchronize(images.device)
        self.capture_seconds += time.perf_counter() - started

    def apply_phase(self, config: Config) -> None:
        """New settings change what the step does: capture it again."""
        self.train_step.apply_phase(config)
        self.graphs.clear()
        self.eager_steps.clear()

    def on_side_stream(self, work: Callable[[], None]) -> None:
        """Warm-up on the capture stream, as CUDA graph capture requires."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            work()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, images: torch.Tensor) -> None:
        step = self.train_step
        static_images = images.clone()
        graph = torch.cuda.CUDAGraph()
        for generator in (step.noise, step.binarize):
            if generator is not None:
                graph.register_generator_state(generator)
        torch.cuda.synchronize(images.device)
        with torch.cuda.graph(graph, stream=self.stream):
            step.step(static_images)
        self.graphs[len(images)] = (graph, static_images)


def build_step(
    model: VAE, config: Config, generators: dict[str, torch.Generator]
) -> TrainStep | CapturedStep:
    """The eager step, wrapped in a CUDA graph on CUDA when config.train.cuda_graph is on."""
    train_step = TrainStep(model, config, generators)
    if config.train.cuda_graph and train_step.flat.device.type == "cuda":
        return CapturedStep(train_step)
    return train_step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        "halted": values["halted"],
        "clipped_fraction": values["clipped"] / steps,
        "mean_grad_norm": values["grad_norm"] / steps,
    }
