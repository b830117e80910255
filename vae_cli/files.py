"""Crash-safe writes: a file is either its old content or its new one, never a mix.

Disk problems (full, read-only, no permission) become one-line user errors naming the file;
the readers of a run's JSON files tolerate what a crash or a hand edit leaves behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vae_cli.errors import UserError


def make_folder(path: Path, what: str) -> None:
    """mkdir -p; a folder that cannot be made (a file in the way, no permission) is a user
    error naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{path}: cannot create {what} ({error.strerror or error})") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, flush + fsync, then os.replace (atomic on POSIX)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before os.replace
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
        try:
            # NamedTemporaryFile is private (0600); give the file the mode a plain open() would.
            os.chmod(
                handle.name, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
            )
            with handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
    except OSError as error:
        raise UserError(
            f"{path}: could not write ({error.strerror or error}); "
            "any previous version of the file is unchanged"
        ) from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def append_line(path: Path, line: str) -> None:
    """Append one line and flush it to disk, so a crash loses at most the line being written."""
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise UserError(f"{path}: could not append ({error.strerror or error})") from None


class OrderedWriter:
    """Runs file writes one after another on a background thread, in the order submitted.

    Training goes on while a checkpoint is serialised and fsynced. The first error of a write
    is raised in the training thread at the next `submit` or at `drain`, and nothing submitted
    after a failed write runs, so files are never written out of order.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae-writer")
        self.error: BaseException | None = None

    def submit(self, write: Callable[..., object], *args: object) -> None:
        self.raise_error()
        self.executor.submit(self._run, write, *args)

    def _run(self, write: Callable[..., object], *args: object) -> None:
        if self.error is None:
            try:
                write(*args)
            except BaseException as error:  # handed to the training thread
                self.error = error

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def drain(self) -> None:
        """Wait for every write submitted so far; raise the first error among them."""
        self.executor.submit(lambda: None).result()
        self.raise_error()

    def close(self) -> None:
        """Wait for the writes still queued and stop the thread (errors are `drain`'s)."""
        self.executor.shutdown(wait=True)


def read_lines(path: Path) -> list[str]:
    """The file's lines (undecodable bytes replaced), or none when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text`, or None when it holds none."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
