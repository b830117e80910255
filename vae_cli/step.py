"""One optimisation step of a population, built for speed and from one phase's settings.

All weights and gradients live in one (members, P) buffer: the gradient norm, the clip and the
fused Adam update run once per member row instead of once per tensor; the statistics stay on the
device; and on CUDA the whole step is captured once per batch size in a CUDA graph and replayed.
A VAE on MNIST is small enough that kernel launches and host syncs cost as much as the matrix
products, so the step launches few kernels and never waits for the device.

A step is built from the settings of the phase it runs (`TrainStep(population, settings, …)`);
a phase change or a resume builds a new one over the same population, never edits one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from vae_cli.adam import MemberAdam
from vae_cli.clock import TrainingClock
from vae_cli.config import Config
from vae_cli.data import to_float
from vae_cli.members import Population
from vae_cli.model import LossParts

CAPTURE_WARMUP_STEPS = 3  # eager steps per batch size before its graph is captured


class TrainStep:
    """Callable doing the batch's pixels, forward, backward, per-member clipping, the
    non-finite guard, the Adam update and the running statistics, with no host read.

    Learning rates and KL weights live in (members,) device tensors written before each step,
    so the same code can be replayed from a CUDA graph (`CapturedStep`).
    """

    def __init__(
        self,
        population: Population,
        settings: list[Config],
        generators: list[dict[str, torch.Generator]],
        clock: TrainingClock | None = None,
    ) -> None:
        self.population, self.settings = population, settings
        self.clock = clock or TrainingClock()
        self.model = population.model
        train = [config.train for config in settings]
        self.shared = settings[0]  # objective, k, pixels, amp, compile: the same for all
        device = population.flat.device
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
            population.flat.detach(),
            population.flat_grad,
            population.adam,
            lr=self.lr,
            beta2=self.beta2,
        )
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
            x = stack([torch.bernoulli(x[m], generator=g) for m, g in enumerate(self.binarize)])
        return x

    def autocast(self) -> torch.autocast:
        # No weight cache: a captured graph must not depend on a cache's lifetime.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False
        )

    def noise_like(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Each member's standard-normal draws from its own stream, stacked: (M, *shape)."""
        dtype = torch.bfloat16 if self.amp else torch.float32
        return stack(
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
        population = self.population
        # Backward hands each parameter its gradient without a copy when .grad is None; one
        # cat then fills the flat gradient (instead of zeroing it and adding into views).
        for parameter in population.parameters:
            parameter.grad = None
        x = self.pixels(images)
        parts = self.loss(x)
        parts.loss.sum().backward()  # member m's loss reaches member m's weights only
        members = population.size
        torch.cat(
            [p.grad.reshape(members, -1) for p in population.parameters],
            dim=1,
            out=population.flat_grad,
        )
        grad_norm = clip_per_member(population.flat_grad, self.max_norm)
        finite = torch.isfinite(grad_norm) & torch.isfinite(parts.loss)
        # After --max-bad-steps in a row every later update of that member is skipped too, so
        # its weights stay those of the step that hit the limit until the host reads it.
        skip = ((~finite) | population.stats.halted() | (population.frozen > 0)).float()
        self.adam.step(skip)
        self.accumulate(parts, grad_norm, finite, x.shape[1])

    def accumulate(
        self, parts: LossParts, grad_norm: torch.Tensor, finite: torch.Tensor, batch: int
    ) -> None:
        """Add this step to the running sums (a few kernels, no sync)."""
        recon, kl = parts.recon.detach().sum(-1), parts.kl.detach().sum(-1)  # (M,)
        reported = (
            recon + kl if self.shared.train.objective == "elbo" else parts.loss.detach() * batch
        )
        self.population.stats.add_step(
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


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
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


class Graphs(Protocol):
    """What capturing needs from the device: CUDA graphs on a GPU, a recording stand-in in
    the CPU tests."""

    def new_graph(self, generators: list[torch.Generator]) -> object: ...

    def warm_up(self, work: Callable[[], None]) -> None: ...

    def capture(self, graph: object, work: Callable[[], None]) -> None: ...

    def replay(self, graph: object) -> None: ...

    def synchronize(self) -> None: ...


class CudaGraphs:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def new_graph(self, generators: list[torch.Generator]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        # Each replay draws fresh numbers from the same streams an eager step would.
        for generator in generators:
            graph.register_generator_state(generator)
        return graph

    def warm_up(self, work: Callable[[], None]) -> None:
        """Eager steps on the capture stream, as CUDA graph capture requires."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            work()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, graph: object, work: Callable[[], None]) -> None:
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, stream=self.stream):  # type: ignore[arg-type]
            work()

    def replay(self, graph: object) -> None:
        graph.replay()  # type: ignore[attr-defined]

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class CapturedStep:
    """A TrainStep captured once per batch size and replayed.

    Each batch is copied into the graph's static input; lrs and KL weights are device tensors
    the step reads. A batch size's first CAPTURE_WARMUP_STEPS steps run eagerly (real steps,
    timed as training); its capture is timed apart as `capture_seconds`.
    """

    def __init__(self, step: TrainStep, graphs: Graphs) -> None:
        self.step, self.graphs_backend = step, graphs
        self.graphs: dict[int, tuple[object, torch.Tensor]] = {}
        self.eager_steps: dict[int, int] = {}

    @property
    def population(self) -> Population:
        return self.step.population

    def __call__(self, images: torch.Tensor, lrs: list[float], betas: list[float]) -> None:
        batch = images.shape[1]
        if batch in self.graphs:
            self.step.set_schedule(lrs, betas)
            graph, static_images = self.graphs[batch]
            static_images.copy_(images)
            self.graphs_backend.replay(graph)
            return
        if self.eager_steps.get(batch, 0) < CAPTURE_WARMUP_STEPS:
            self.eager_steps[batch] = self.eager_steps.get(batch, 0) + 1
            self.graphs_backend.warm_up(lambda: self.step(images, lrs, betas))
            return
        self.step.set_schedule(lrs, betas)
        with self.step.clock.setup_time("capture_seconds", self.graphs_backend.synchronize):
            self.capture(images)
        self.graphs_backend.replay(self.graphs[batch][0])  # capturing records, does not run

    def capture(self, images: torch.Tensor) -> None:
        static_images = images.clone()
        generators = [*self.step.noise, *self.step.binarize]
        graph = self.graphs_backend.new_graph(generators)
        self.graphs_backend.capture(graph, lambda: self.step.run(static_images))
        self.graphs[images.shape[1]] = (graph, static_images)


def build_step(
    population: Population,
    settings: list[Config],
    generators: list[dict[str, torch.Generator]],
    clock: TrainingClock | None = None,
    graphs: Graphs | None = None,
) -> TrainStep | CapturedStep:
    """The step of a phase: eager, or captured in CUDA graphs on CUDA when cuda_graph is on
    (`graphs` replaces the CUDA backend, e.g. with a recording stand-in in tests)."""
    step = TrainStep(population, settings, generators, clock)
    if graphs is not None:
        return CapturedStep(step, graphs)
    if settings[0].train.cuda_graph and step.device.type == "cuda":
        return CapturedStep(step, CudaGraphs(step.device))
    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
