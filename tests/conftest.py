"""Shared fixtures and helpers for both parts of the suite.

tests/unit/ needs no MNIST: its `data_dir` is a synthetic dataset in Fashion-MNIST's layout,
made once per session (and VAE_DATA_DIR points at it), so it passes wherever VAE_DATA_DIR
points. tests/e2e/ drives the real CLI on the real MNIST files ($VAE_DATA_DIR, else
../shared/data).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("VAE_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
# tests/unit and tests/cli need no MNIST: they read a synthetic dataset made per session.
SYNTHETIC = [Path(__file__).resolve().parent / name for name in ("unit", "cli")]
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 20_000, 10_000  # MNIST's sizes, for --limit up to 20,000
TIMING = {"seconds", "images_per_s", "epoch_seconds", "capture_seconds", "compile_seconds"}


@pytest.fixture(autouse=True)
def fixed_global_seed() -> None:
    """Tests that build models with nn defaults get the same weights on every run."""
    torch.manual_seed(0)


def is_unit(request: pytest.FixtureRequest) -> bool:
    """Whether a test reads the synthetic dataset (tests/unit, tests/cli), not MNIST."""
    path = Path(request.node.path).resolve()
    return any(folder == path or folder in path.parents for folder in SYNTHETIC)


@pytest.fixture(autouse=True)
def unit_data_everywhere(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test finds the synthetic data by $VAE_DATA_DIR too (its own processes as well),
    whatever the variable said."""
    if is_unit(request):
        monkeypatch.setenv("VAE_DATA_DIR", str(request.getfixturevalue("synthetic_data")))


@pytest.fixture(scope="module")  # a module is all unit or all end-to-end
def data_dir(request: pytest.FixtureRequest) -> Path:
    """The synthetic dataset for a unit test, the real MNIST files for an end-to-end one."""
    if is_unit(request):
        return request.getfixturevalue("synthetic_data")
    return request.getfixturevalue("mnist_dir")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found in {MNIST_DIR}; set VAE_DATA_DIR")
    return MNIST_DIR


def write_idx(path: Path, array: torch.Tensor, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def synthetic_images(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """28x28 uint8 pictures, a stroke per class: a bar at the class's angle through a point
    near the centre, of varying width and brightness, on faint noise (digit-like enough that
    a VAE learns them, and every class looks different)."""
    n = len(labels)
    coordinates = torch.arange(28, dtype=torch.float32) - 13.5
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    angle = labels.float() * (torch.pi / 10) + 0.15 * torch.randn(n, generator=generator)
    shift = 3 * torch.randn(n, 2, generator=generator)
    width = 1.5 + torch.rand(n, generator=generator)
    along = 9 + 3 * torch.rand(n, generator=generator)
    dx, dy = x - shift[:, :1, None], y - shift[:, 1:, None]
    across = (dx * torch.sin(angle)[:, None, None] - dy * torch.cos(angle)[:, None, None]).abs()
    length = (dx * torch.cos(angle)[:, None, None] + dy * torch.sin(angle)[:, None, None]).abs()
    stroke = (1 - across / width[:, None, None]).clamp(0, 1) * (length < along[:, None, None])
    noise = 0.08 * torch.rand(n, 28, 28, generator=generator)
    brightness = 0.7 + 0.3 * torch.rand(n, 1, 1, generator=generator)
    return ((stroke * brightness + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def synthetic_fashion(root: Path, n_train: int = 256, n_test: int = 128) -> Path:
    """Small IDX files in torchvision's FashionMNIST layout: bright squares per class."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator)
        images = torch.zeros(n, 28, 28)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label : 10 + 2 * label, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x803)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    return root


def make_synthetic_dataset(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """IDX files in torchvision's FashionMNIST layout (not MD5-checked, unlike MNIST)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=generator)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", synthetic_images(labels, generator), 0x803)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), SYNTHETIC_TRAIN, SYNTHETIC_TEST
    )


def dataset_name(data_dir: Path) -> str:
    """The dataset a data folder holds: MNIST, or the unit tests' synthetic Fashion-MNIST."""
    return "mnist" if (data_dir / "MNIST").is_dir() else "fashion-mnist"


def dataset_flags(data_dir: Path) -> tuple[str, ...]:
    return () if dataset_name(data_dir) == "mnist" else ("--dataset", "fashion-mnist")


def metrics_without_timing(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k not in TIMING} for m in lines]


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two runs' last.pt (weights, Adam state, step) and metrics agree bit for bit."""
    from vae_cli.checkpoint import load_checkpoint

    first, second = (load_checkpoint(p / "checkpoints/last.pt") for p in (a, b))
    assert first["step"] == second["step"]
    for key, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][key]), key
    state_a, state_b = first["optimizer"]["state"], second["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for index, slots in state_a.items():
        for key, value in slots.items():
            assert torch.equal(value, state_b[index][key]), key
    assert metrics_without_timing(a) == metrics_without_timing(b)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_vae(*args: object) -> Result:
    """Run the CLI in-process through the same entry point as the `vae` script."""
    from vae_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return Result(code, out.getvalue(), err.getvalue())


def run_vae_process(*args: object, timeout: float = 300, **kwargs: object) -> Result:
    """Run the installed console script in a subprocess (real signals, real exit codes)."""
    done = subprocess.run(
        [sys.executable, "-m", "vae_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def run_in_terminal(
    *args: object, interrupt_after: str | None = None, timeout: float = 300
) -> Result:
    """Run the CLI in a real pseudo-terminal (120 columns), as a user at a terminal does;
    `interrupt_after`: press Ctrl-C once that text has appeared. stdout holds everything the
    terminal showed (stdout and stderr together, with its control codes)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    pid, terminal = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execv(sys.executable, [sys.executable, "-m", "vae_cli", *map(str, args)])
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    shown, pressed, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if interrupt_after and not pressed and interrupt_after.encode() in shown:
                os.write(terminal, b"\x03")
                pressed = True
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"timed out; the terminal showed {shown[-2000:]!r}")
    finally:
        os.close(terminal)
    _, status = os.waitpid(pid, 0)
    return Result(os.waitstatus_to_exitcode(status), shown.decode(errors="replace"), "")


def snapshot(folder: Path) -> dict[str, str]:
    """MD5 of every file below `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; also checks the signature."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def png_pixels(path: Path) -> torch.Tensor:
    """The grey levels of a PNG as an (H, W) uint8 tensor."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("L")))


def png_rgb(path: Path) -> torch.Tensor:
    """The colours of a PNG as an (H, W, 3) uint8 tensor."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB")))


def assert_labelled_rows(path: Path, *, rows: int, grid_width: int, scale: int) -> None:
    """A labelled grid: `rows` rows of tiles `scale` times larger right of a label margin, and
    in the margin beside each row of tiles, light text (the margin is black elsewhere)."""
    from vae_cli.pictures.grids import GRID_PADDING

    picture = png_rgb(path).max(dim=-1).values  # (H, W) brightest channel
    height, width = picture.shape
    step = (28 + GRID_PADDING) * scale
    margin = width - grid_width * scale
    assert margin > 20 and height == (rows * 30 + GRID_PADDING) * scale
    for row in range(rows):
        band = picture[GRID_PADDING * scale + row * step :][: step - GRID_PADDING * scale, :margin]
        assert (band > 150).sum() > 20, f"no label beside row {row}"


def make_step(
    config: object,
    device: str | torch.device = "cpu",
    *,
    seeds: tuple[int, ...] | None = None,
    graphs: object = None,
) -> object:
    """A phase's training step over a fresh population: one member with `config`'s seed, or
    one per seed; `graphs` stands in for CUDA graphs."""
    from vae_cli.training.graphs import build_step
    from vae_cli.training.loop import build_model
    from vae_cli.training.stack import Stack
    from vae_cli.training.streams import make_generators

    device = torch.device(device)
    configs = [config] if seeds is None else [config.replace({"seed": s}) for s in seeds]
    population = Stack([build_model(c, device) for c in configs], average=bool(config.train.ema))
    generators = [make_generators(c.train.seed, device) for c in configs]
    return build_step(population, configs, generators, graphs=graphs)


class RecordedGraphs:
    """CUDA graphs' stand-in on the CPU: a capture records the step without running it, and
    a replay runs the recorded step on whatever its static input holds now. `events` lists
    (what, batch size) in order: "warm-up", "capture", "replay"."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def new_graph(self, generators: list[torch.Generator]) -> dict:
        return {}

    def warm_up(self, work: Callable[[], None]) -> None:
        self.events.append(("warm-up", self.batch))
        work()

    def capture(self, graph: dict, work: Callable[[], None]) -> None:
        self.events.append(("capture", self.batch))
        graph["work"] = work

    def replay(self, graph: dict) -> None:
        self.events.append(("replay", self.batch))
        graph["work"]()

    def synchronize(self) -> None:
        pass

    batch = 0  # set by the step wrapper below, for the events


def record_batch_sizes(graphs: RecordedGraphs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `graphs` note the batch size of each call to a CapturedStep."""
    from vae_cli.training.graphs import CapturedStep

    real = CapturedStep.__call__

    def call(step: CapturedStep, images: torch.Tensor, *args: object) -> None:
        graphs.batch = images.shape[1]
        real(step, images, *args)

    monkeypatch.setattr(CapturedStep, "__call__", call)


class StepSpy:
    """Records the lr tensor the optimiser reads and what the loss receives, step by step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, steps_per_epoch: int) -> None:
        from vae_cli.model.vae import VAE
        from vae_cli.training.step import Step

        self.steps_per_epoch = steps_per_epoch
        self.lr: list[float] = []
        self.beta: list[float] = []
        self.free_bits: list[float] = []
        self.pixels: list[torch.Tensor] = []
        real_step, real_loss = Step.run, VAE.elbo

        def step(train_step: Step, images: torch.Tensor) -> None:
            self.lr.append(float(train_step.lr[0]))
            real_step(train_step, images)

        def elbo(model: VAE, x: torch.Tensor, noise: object, *, beta=1.0, free_bits=0.0):
            if torch.is_tensor(beta):  # the training step's (the test pass passes numbers)
                self.beta.append(float(beta[0]))
                self.free_bits.append(
                    float(free_bits[0]) if torch.is_tensor(free_bits) else free_bits
                )
                self.pixels.append(x.detach().clone())
            return real_loss(model, x, noise, beta=beta, free_bits=free_bits)

        monkeypatch.setattr(Step, "run", step)
        monkeypatch.setattr(VAE, "elbo", elbo)

    def epoch_pixel_sums(self) -> list[float]:
        """The sum of every pixel the step trained on, per epoch (the same images each epoch)."""
        n = self.steps_per_epoch
        per_epoch = [self.pixels[e : e + n] for e in range(0, len(self.pixels), n)]
        return [sum(x.sum().item() for x in batches) for batches in per_epoch]


def add_dummy(monkeypatch: pytest.MonkeyPatch, **rules: Any) -> None:
    """A `dummy` float setting in [train] with the given rules, known everywhere."""
    import dataclasses

    from vae_cli.config import settings
    from vae_cli.config.settings import TrainConfig, setting

    # "float" as a string, as every settings module annotation reads (postponed annotations).
    fields = [("dummy", "float", setting(1.0, "A setting for this test.", minimum=0, **rules))]
    train = dataclasses.make_dataclass("TrainWithDummy", fields, bases=(TrainConfig,))
    monkeypatch.setitem(settings.SECTION_TYPES, "train", train)
    monkeypatch.setitem(settings.FIELDS, "dummy", ("train", dataclasses.fields(train)[-1]))


def interrupt_at(
    monkeypatch: pytest.MonkeyPatch, *, epoch: int, step: int, every: int | None = None
) -> None:
    """Ctrl-C (a real SIGINT) when the display hears that `step` batches of the epoch after
    `epoch` completed ones are done; `every`: how often it hears (the loop's PROGRESS_EVERY)."""
    from vae_cli.cli import console
    from vae_cli.training.events import StepProgress

    def pressed(display: object, event: StepProgress) -> None:
        if (event.epoch, event.step) == (epoch, step):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(console.TrainingDisplay, "on_progress", pressed)
    if every is not None:
        monkeypatch.setattr("vae_cli.training.loop.PROGRESS_EVERY", every)


def poison_training_losses(
    monkeypatch: pytest.MonkeyPatch, poison: Callable[[int, object], object]
) -> None:
    """Pass the training step's n-th ELBO (counted from 1) through poison(n, parts); the test
    pass's ELBO, called with plain numbers for beta, is left alone."""
    from vae_cli.model.vae import VAE

    real, calls = VAE.elbo, {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> object:
        parts = real(*args, **kwargs)
        if not torch.is_tensor(kwargs.get("beta")):
            return parts
        calls["n"] += 1
        return poison(calls["n"], parts)

    monkeypatch.setattr(VAE, "elbo", poisoned)


def one_layer_elbo(
    x: torch.Tensor,
    x_logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    beta: float = 1.0,
    free_bits: float = 0.0,
) -> object:
    """The negative ELBO of one layer under N(0, I), written out: the Bernoulli
    reconstruction plus beta times the analytic KL (Kingma & Welling 2014, App. B)."""
    from vae_cli.model.bounds import elbo_from_parts
    from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_kl
    from vae_cli.model.priors import LayerKL

    recon = -bernoulli_log_likelihood(x_logits, x)
    layers = [LayerKL(gaussian_kl(mu, logvar))]
    return elbo_from_parts(recon, layers, beta=beta, free_bits=free_bits)


def nan_loss(parts: object) -> object:
    return parts._replace(loss=parts.loss * float("nan"))  # type: ignore[attr-defined]


TINY = ("--limit", 512, "--epochs", 2, "--batch-size", 64, "--quiet")


def train_args(runs: Path, data_dir: Path, *extra: object, name: str = "r") -> tuple:
    """`vae train` arguments for the run `runs/name` (`extra`: the flags under test), on the
    dataset that `data_dir` holds."""
    folders = ("--data-dir", data_dir, "--runs-dir", runs, "--name", name)
    return ("train", *folders, *dataset_flags(data_dir), *extra)


def train_tiny(runs: Path, name: str, data_dir: Path, *extra: object) -> Path:
    """A TINY run (with `extra` flags) that must succeed; returns its folder."""
    result = run_vae(*train_args(runs, data_dir, *TINY, *extra, name=name))
    assert result.code == 0, result.stderr
    return runs / name


@pytest.fixture(scope="module")
def trained_run(request: pytest.FixtureRequest) -> Path:
    """One tiny run (512 images, 2 epochs) shared by the tests that only read it: on the
    synthetic data for unit tests, on MNIST for end-to-end ones."""
    return request.getfixturevalue("synthetic_run" if is_unit(request) else "mnist_run")


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"), "tiny", synthetic_data)


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"), "tiny", mnist_dir)


TWO_PHASES = """
[data]
limit = 512
[train]
epochs = 2
batch_size = 64
device = "cpu"

[[phases]]
epochs = 2
objective = "iwae"
k = 2
lr = 5e-4
lr_schedule = "cosine"
final_lr = 1e-4
"""


def train_config(folder: Path, data_dir: Path, name: str, text: str = TWO_PHASES) -> Result:
    """`vae train --config` of a file holding `text`, as the run folder/name."""
    config = folder / f"{name}.toml"
    config.write_text(text)
    args = ("--runs-dir", folder, "--name", name, "--data-dir", data_dir, "--quiet")
    return run_vae("train", "--config", config, *args, *dataset_flags(data_dir))


# The real CLI in a subprocess whose fsync of the temporary file behind `name` (the n-th time
# that file is written) stops right before the atomic rename: it writes the temporary file's
# path to `marker` and sleeps, so a test can signal or kill the process inside that write.
BLOCKING_WRITE = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the test runs in background
real_fsync, seen = os.fsync, 0

def fsync(fd):
    global seen
    path = pathlib.Path(os.readlink(f"/proc/self/fd/{{fd}}"))
    if path.name.startswith(".{name}.") and path.suffix == ".tmp":
        seen += 1
        if seen == {nth}:
            real_fsync(fd)
            pathlib.Path({marker!r}).write_text(str(path))
            time.sleep(600)
    return real_fsync(fd)

os.fsync = fsync
from vae_cli.cli.app import main
sys.exit(main({args!r}))
"""


@pytest.fixture
def start_blocking_write() -> Iterator[Callable[..., subprocess.Popen]]:
    """start(name, nth, marker, *args): `vae ARGS` blocking inside the nth atomic write of the
    file `name`; whatever is still running is killed when the test ends."""
    processes: list[subprocess.Popen] = []

    def start(name: str, nth: int, marker: Path, *args: object) -> subprocess.Popen:
        arguments = list(map(str, args))
        script = BLOCKING_WRITE.format(name=name, nth=nth, marker=str(marker), args=arguments)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()
