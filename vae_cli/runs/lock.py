"""One trainer per run folder: an OS-level lock (flock) on RUN/trainer.lock, held while training.

The kernel drops a flock when its holder's process ends, however it ends (kill -9 included), so
a crashed trainer never leaves a stale lock; the file keeps the holder's pid and command for the
message the next trainer gets. Plain files, no torch.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from vae_cli.errors import UserError

LOCK_FILE = "trainer.lock"
# A reader that probes the lock (`vae runs`) holds it for a few microseconds; a trainer that
# finds it taken retries this long before it names the holder.
ACQUIRE_PATIENCE_SECONDS = 0.5


class RunLock:
    """The lock of one run folder, taken once by the trainer and held until `release` (or the
    process's end)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handle: Any = None  # the open lock file while held

    @property
    def path(self) -> Path:
        return self.root / LOCK_FILE

    def acquire(self, command: str) -> None:
        """Take the lock or raise a UserError naming the process that holds it."""
        try:
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as error:
            raise UserError(f"{self.path}: cannot open ({error.strerror or error})") from None
        deadline = time.monotonic() + ACQUIRE_PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                holder = read_holder(self.path)
                handle.close()
                raise UserError(busy_message(self.root, holder)) from None
        record = {"pid": os.getpid(), "command": command, "since": time.strftime("%H:%M:%S")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def busy_message(root: Path, holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "?")
    command = holder.get("command")
    since = f", since {holder['since']}" if holder.get("since") else ""
    what = f" ({command}{since})" if command else since
    return (
        f"{root} is being trained by process {pid}{what}; one trainer at a time: wait for it "
        f"to end, or stop it (kill {pid}) and resume the run"
    )


def read_holder(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def trainer_alive(root: Path) -> bool:
    """Whether a process holds the folder's lock now (a probe with a shared, non-blocking
    lock: it fails only while a trainer holds the exclusive one)."""
    try:
        handle = (root / LOCK_FILE).open("r", encoding="utf-8")
    except OSError:  # no lock file: no trainer has ever held it
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def check_not_training(root: Path) -> None:
    """Refuse to touch a folder while a trainer holds it (e.g. before --overwrite deletes it)."""
    if trainer_alive(root):
        raise UserError(busy_message(root, read_holder(root / LOCK_FILE)))


class RunLocks:
    """The locks of every folder one `vae train` invocation trains (a population's own folder
    and each member's), taken together: all or none."""

    def __init__(self, roots: list[Path]) -> None:
        self.locks = [RunLock(root) for root in roots]

    def acquire(self, command: str) -> None:
        taken = []
        try:
            for lock in self.locks:
                lock.acquire(command)
                taken.append(lock)
        except BaseException:
            for lock in taken:
                lock.release()
            raise

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
