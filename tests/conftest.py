"""Shared fixtures: the data folder, and one tiny trained run reused by many tests."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("VAE_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(autouse=True)
def fixed_global_seed() -> None:
    """Tests that build models with nn defaults get the same weights on every run."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found in {DATA_DIR}; set VAE_DATA_DIR")
    return DATA_DIR


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_vae(*args: object) -> Result:
    """Run the CLI in-process through the same entry point as the `vae` script."""
    from vae_cli.cli import main

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


def make_step(
    config: object,
    device: str | torch.device = "cpu",
    *,
    seeds: tuple[int, ...] | None = None,
    graphs: object = None,
) -> object:
    """A phase's training step over a fresh population: one member with `config`'s seed, or
    one per seed; `graphs` stands in for CUDA graphs."""
    from vae_cli.members import Population
    from vae_cli.step import build_step
    from vae_cli.streams import make_generators
    from vae_cli.train import build_model

    device = torch.device(device)
    configs = [config] if seeds is None else [config.replace({"seed": s}) for s in seeds]
    population = Population([build_model(c, device) for c in configs])
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
    from vae_cli.step import CapturedStep

    real = CapturedStep.__call__

    def call(step: CapturedStep, images: torch.Tensor, *args: object) -> None:
        graphs.batch = images.shape[1]
        real(step, images, *args)

    monkeypatch.setattr(CapturedStep, "__call__", call)


def poison_training_losses(
    monkeypatch: pytest.MonkeyPatch, poison: Callable[[int, object], object]
) -> None:
    """Pass the training step's n-th ELBO (counted from 1) through poison(n, parts); the test
    pass's ELBO, called with plain numbers for beta, is left alone."""
    from vae_cli import model as model_module

    real, calls = model_module.elbo_loss, {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> object:
        parts = real(*args, **kwargs)
        if not torch.is_tensor(kwargs.get("beta")):
            return parts
        calls["n"] += 1
        return poison(calls["n"], parts)

    monkeypatch.setattr(model_module, "elbo_loss", poisoned)


def nan_loss(parts: object) -> object:
    return parts._replace(loss=parts.loss * float("nan"))  # type: ignore[attr-defined]


TINY = ("--limit", 512, "--epochs", 2, "--batch-size", 64, "--quiet")


def train_args(runs: Path, data_dir: Path, *extra: object, name: str = "r") -> tuple:
    """`vae train` arguments for the run `runs/name` (`extra`: the flags under test)."""
    return ("train", "--data-dir", data_dir, "--runs-dir", runs, "--name", name, *extra)


def train_tiny(runs: Path, name: str, data_dir: Path, *extra: object) -> Path:
    """A TINY run (with `extra` flags) that must succeed; returns its folder."""
    result = run_vae(*train_args(runs, data_dir, *TINY, *extra, name=name))
    assert result.code == 0, result.stderr
    return runs / name


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One tiny run (512 images, 2 epochs) shared by the tests that only read it."""
    return train_tiny(tmp_path_factory.mktemp("runs"), "tiny", data_dir)


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
from vae_cli.cli import main
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
