"""A phase's step captured in a CUDA graph once per batch size and replayed: the same step code
(step.py), launched as one graph. On the CPU, tests stand in for CUDA graphs with a recording
`Graphs`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from vae_cli.config.settings import Config
from vae_cli.training.clock import TrainingClock
from vae_cli.training.stack import Stack
from vae_cli.training.step import Step

CAPTURE_WARMUP_STEPS = 3  # eager steps per batch size before its graph is captured


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
    """A Step captured once per batch size and replayed.

    Each batch is copied into the graph's static input; lrs and KL weights are device tensors
    the step reads. A batch size's first CAPTURE_WARMUP_STEPS steps run eagerly (real steps,
    timed as training); its capture is timed apart as `capture_seconds`.
    """

    def __init__(self, step: Step, graphs: Graphs) -> None:
        self.step, self.graphs_backend = step, graphs
        self.graphs: dict[int, tuple[object, torch.Tensor]] = {}
        self.eager_steps: dict[int, int] = {}

    @property
    def stack(self) -> Stack:
        return self.step.stack

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
    stack: Stack,
    settings: list[Config],
    generators: list[dict[str, torch.Generator]],
    clock: TrainingClock | None = None,
    graphs: Graphs | None = None,
) -> Step | CapturedStep:
    """The step of a phase: eager, or captured in CUDA graphs on CUDA when cuda_graph is on
    (`graphs` replaces the CUDA backend, e.g. with a recording stand-in in tests)."""
    step = Step(stack, settings, generators, clock)
    if graphs is not None:
        return CapturedStep(step, graphs)
    if settings[0].train.cuda_graph and step.device.type == "cuda":
        return CapturedStep(step, CudaGraphs(step.device))
    return step
