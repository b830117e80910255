"""The `vae` app and its one place for errors: a user error becomes one `Error: …` line and exit
code 2, Ctrl-C 130 and SIGTERM 143 without a traceback; anything else keeps its traceback.

The commands live beside it (train.py, inference.py, runs.py, tune.py), each options, a
docstring and one call into vae_cli.commands; torch is imported inside them, so `vae --help` is
instant.
"""

from __future__ import annotations

import contextlib
import errno
import shlex
import signal
import sys
from typing import Any

import typer

from vae_cli.cli.usage import parameter_message
from vae_cli.errors import Terminated, TrainingFailed, TrainingInterrupted, UserError
from vae_cli.openmp import choose_wait_policy


class App(typer.Typer):
    """A Typer app whose errors go through `main` (one line, exit 2) when run as a script."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sys.exit(main(kwargs.get("args"), prog_name=kwargs.get("prog_name", "vae")))


class InOrderOfUse(typer.core.TyperGroup):
    """`vae --help` lists the commands in the order a user meets them, not alphabetically."""

    ORDER = ("train", "eval", "sample", "reconstruct", "interpolate", "latent", "encode",
             "score", "gradients", "runs", "export", "tune")  # fmt: skip

    def list_commands(self, ctx: Any) -> list[str]:
        known = [name for name in self.ORDER if name in self.commands]
        return known + sorted(set(self.commands) - set(known))


app = App(
    name="vae",
    cls=InOrderOfUse,
    help="Train, evaluate and look at variational autoencoders on MNIST.",
    invoke_without_command=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def show_help_without_command(ctx: typer.Context) -> None:
    """Train, evaluate and look at variational autoencoders on MNIST."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main(argv: list[str] | None = None, prog_name: str = "vae") -> int:
    """Run the CLI and return its exit code; the one place user errors are reported."""
    choose_wait_policy()  # before any command loads torch
    with TerminationHandler() as termination:
        return run_command(argv, prog_name, termination)


class TerminationHandler:
    """SIGTERM (kill, timeout, a job scheduler) stops a command as Ctrl-C does: it raises
    Terminated, a KeyboardInterrupt, and remembers that it came."""

    def __enter__(self) -> TerminationHandler:
        self.received, self.previous = False, None
        with contextlib.suppress(ValueError):  # not the main thread: no signal handling
            self.previous = signal.signal(signal.SIGTERM, self.handle)
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.received = True
        raise Terminated

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def run_command(argv: list[str] | None, prog_name: str, termination: TerminationHandler) -> int:
    command = typer.main.get_command(app)
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        # The command line travels in ctx.obj so a run's manifest can record it.
        result = command.main(
            args=argv, prog_name=prog_name, standalone_mode=False, obj={"argv": argv}
        )
        if result == 128 + signal.SIGINT:  # Typer's answer to a KeyboardInterrupt
            return report_stop(termination.received)
        return result if isinstance(result, int) else 0
    except typer.Exit as stop:
        return stop.exit_code
    except typer.BadParameter as error:  # a flag's value: the same words as a config file's
        return report(parameter_message(error), 2)
    except typer.TyperException as error:  # usage errors: unknown option, missing value, …
        return report(error.format_message(), 2)
    except UserError as error:
        return report(str(error), 2)
    except TrainingFailed as error:
        return report(str(error), 1)
    except TrainingInterrupted as stop:
        stopped = "Terminated" if stop.signum == signal.SIGTERM else "Interrupted"
        commands = "".join(f"\n  vae train --resume {shlex.quote(d)}" for d in stop.run_dirs)
        print(f"{stopped}: saved {stop.saved}. Resume with:{commands}", file=sys.stderr)
        return 128 + stop.signum
    except (typer.Abort, KeyboardInterrupt):
        return report_stop(termination.received)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:  # a path the user typed; anything else is a bug
            raise
        return report(f"{error.filename}: file name too long ({error.strerror})", 2)


def report_stop(terminated: bool) -> int:
    """Ctrl-C (130) or SIGTERM (143) outside training's own save: one line, no traceback."""
    print("Terminated." if terminated else "Interrupted.", file=sys.stderr)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def report(message: str, code: int) -> int:
    print("Error: " + " ".join(message.split()), file=sys.stderr)
    return code
