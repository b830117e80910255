"""How torch's OpenMP threads wait between parallel regions: chosen once, before torch loads
(libgomp reads its environment when it starts), from what else the machine is running then.

A thread that sleeps as soon as it waits (OMP_WAIT_POLICY=PASSIVE) must be woken for every
parallel kernel: alone on a 2-core VM that costs the recipe's model, with its many small
kernels, half its speed (2,260 against 5,430 images/s spinning, bench_contention.py). A thread
that spins takes a core another process needs, and a parallel region waits for its slowest
thread: beside a second trainer a spinning run keeps a fifth of its speed, a passive one
more than all of it. Neither changes a number: only the thread count does
(commands/stack.py records it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
RUNNABLE_SAMPLES, SAMPLE_SECONDS = 5, 0.01  # 50 ms: a trainer's threads stay runnable
CHOSEN = {"policy": "libgomp's own: vae did not start this process"}


def runnable_tasks() -> int | None:
    """Threads on the machine that are running or ready to run now, this one included (the
    kernel's procs_running), or None where /proc/stat is not there (not Linux)."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1])
    return None


def others_running(count: Callable[[], int | None] = runnable_tasks) -> bool | None:
    """Whether another process keeps a core busy: in most of a few looks 10 ms apart more than
    this thread was runnable. None where that cannot be seen."""
    looks = []
    for sample in range(RUNNABLE_SAMPLES):
        if sample:
            time.sleep(SAMPLE_SECONDS)
        runnable = count()
        if runnable is None:
            return None
        looks.append(runnable > 1)
    return sum(looks) > RUNNABLE_SAMPLES // 2


def choose_wait_policy(
    environ: MutableMapping[str, str] = os.environ,
    busy: Callable[[], bool | None] = others_running,
) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE when another process is running, leave libgomp's brief spin
    (300,000 turns) when the machine is ours; never override the user's own choice. Returns
    what was chosen and keeps it for the run's manifest (`wait_policy`)."""
    CHOSEN["policy"] = policy = decide(environ, busy)
    return policy


def decide(
    environ: MutableMapping[str, str],
    busy: Callable[[], bool | None],
    torch_loaded: bool | None = None,
) -> str:
    """The policy for this process, set in `environ` where vae chooses it; `torch_loaded`:
    whether libgomp has started (by default, whether torch is imported)."""
    chosen = [f"{name}={environ[name]}" for name in USER_VARIABLES if name in environ]
    if chosen:
        return "set by the user: " + " ".join(chosen)
    if torch_loaded is None:
        torch_loaded = "torch" in sys.modules
    if torch_loaded:  # libgomp has read its environment already
        return "libgomp's own: torch was loaded before vae started"
    if busy():
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "passive: another process was running at start"
    return "spin: nothing else was running at start"


def wait_policy() -> str:
    """How this process's OpenMP threads wait, and why (the run manifest's record)."""
    return CHOSEN["policy"]
