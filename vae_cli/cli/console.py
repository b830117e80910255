"""Terminal presentation: the start panel, progress bars, summary tables.

The CLI layer's helper: imports rich and tqdm, holds no logic the library needs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.panel import Panel

from vae_cli.training.callbacks import Callbacks
from vae_cli.training.events import (
    EpochEnded,
    PhaseStarted,
    RunStarted,
    StepProgress,
    TrainingWarning,
)

if TYPE_CHECKING:
    from vae_cli.data.dataset import Dataset

KEY_WIDTH = 12  # the start lines' keys ("device", "best.pt", ...) are padded to this width


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)  # paths are never broken across lines


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


class TrainingDisplay(Callbacks):
    """tqdm bars on a terminal, one plain line per epoch otherwise; `quiet`: the epoch lines
    only (no start panel or bars). A sweep's trial passes `label` ("trial 3") and no panel:
    its bars and lines are named by it."""

    def __init__(
        self,
        *,
        run_dir: str,
        epochs: int | None,
        binarize: str,
        quiet: bool,
        label: str = "",
        panel: bool = True,
    ) -> None:
        self.run_dir, self.epochs, self.binarize, self.label = run_dir, epochs, binarize, label
        self.panel = panel and not quiet
        self.quiet = quiet
        self.bars = not quiet and sys.stdout.isatty()
        self.epoch_bar = self.batch_bar = None
        self.members = 1
        self.terminal = QuietControlKeys() if self.bars else None

    def on_start(self, event: RunStarted) -> None:
        self.members = len(event.members)
        if self.panel:
            stdout().print(start_panel(start_lines(event, self)))
        elif self.quiet:  # one line, so that a log says what the epoch lines are of
            resumed = " ".join(line.split(maxsplit=1)[1] for line in resumed_lines(event))
            print(f"training {self.run_dir}" + (f", {resumed}" if resumed else ""), flush=True)
        if self.bars:
            from tqdm import tqdm

            lead = f"{self.label} " if self.label else ""
            if self.terminal is not None:
                self.terminal.__enter__()
            self.epoch_bar = tqdm(
                total=self.epochs,
                initial=event.resumed_epoch,
                desc=f"{lead}epochs",
                leave=False,
                dynamic_ncols=True,
            )
            # Counted in images, so the rate tqdm shows is images/s.
            self.batch_bar = tqdm(
                total=event.train_images,
                desc=f"{lead}batches",
                unit="img",
                unit_scale=True,
                leave=False,
                dynamic_ncols=True,
            )

    def on_phase(self, event: PhaseStarted) -> None:
        self.write(f"{self.lead()}phase {event.number} of {event.of}: {event.plan}")

    def lead(self) -> str:
        return f"{self.label}  " if self.label else ""

    def write(self, line: str) -> None:
        """A line above the bars (or plain, without them)."""
        if self.epoch_bar is not None:
            self.epoch_bar.write(line)
        else:
            print(line, flush=True)

    def on_progress(self, event: StepProgress) -> None:
        if self.batch_bar is None:
            return
        self.batch_bar.n = int(event.images)
        self.batch_bar.set_postfix(
            loss=f"{event.loss:.2f}",
            recon=f"{event.recon:.2f}",
            kl=f"{event.kl:.2f}",
            refresh=False,
        )
        self.batch_bar.refresh()

    def on_epoch(self, event: EpochEnded) -> None:
        metrics = event.metrics
        # A run in phases has no fixed epoch count: it names the phase instead.
        total = f"/{self.epochs}" if self.epochs else f" phase {metrics.phase}"
        member = f"{event.label}  " if event.label else ""
        held_out = f"val {metrics.val_loss:.2f}  " if metrics.val_loss is not None else ""
        line = (
            f"{self.lead()}epoch {metrics.epoch:>3}{total}  {member}train "
            f"{metrics.train_loss:.2f}  {held_out}test {metrics.test_loss:.2f} (recon "
            f"{metrics.test_recon:.2f}, kl {metrics.test_kl:.2f})  "
        )
        if metrics.test_iwae is not None:
            held_out = f"val {metrics.val_iwae:.2f} " if metrics.val_iwae is not None else ""
            line += f"iwae-{metrics.test_iwae_k} {held_out}test {metrics.test_iwae:.2f}  "
        per_member = " per member" if self.members > 1 else ""
        line += f"[{metrics.binarize}]  {metrics.images_per_s:,.0f} img/s{per_member}"
        if self.epoch_bar is not None and metrics.epoch > self.epoch_bar.n:
            self.epoch_bar.update(metrics.epoch - self.epoch_bar.n)  # once per epoch,
            self.batch_bar.reset()  # however many members the stack trains
        self.write(line)

    def on_warning(self, event: TrainingWarning) -> None:
        who = f"{self.label}: " if self.label else ""
        print(f"Warning: {who}{event.message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self.batch_bar, self.epoch_bar):
            if bar is not None:
                bar.close()
        self.epoch_bar = self.batch_bar = None
        if self.terminal is not None:
            self.terminal.__exit__()


def start_lines(info: RunStarted, display: TrainingDisplay) -> list[str]:
    """The start panel: where it runs, the model, the data, the folder and the plan."""
    from vae_cli.config.settings import describe_model
    from vae_cli.device import device_description
    from vae_cli.model.vae import count_parameters

    dataset, model, members = info.dataset, info.model, info.members
    per_member = " per member" if len(members) > 1 else ""
    lines = [
        f"device      {device_description(info.device)}",
        f"model       {describe_model(model.config)}, {count_parameters(model):,} parameters"
        + per_member,
        f"data        {data_words(info, dataset)}, binarize={display.binarize}",
        f"batch       {info.batch_size:,} images, {info.steps_per_epoch:,} steps per epoch",
        f"best.pt     {choice_words(info)}",
        f"run folder  {display.run_dir}",
    ]
    if len(members) > 1:
        lines.append(f"members     {len(members)}: {', '.join(members)}")
    plan = info.plan
    if len(plan) == 1:
        lines.append(f"plan        {plan[0]}")
    for number, phase in enumerate(plan if len(plan) > 1 else [], start=1):
        lead = "plan        " if number == 1 else " " * 12
        lines.append(f"{lead}phase {number}: {phase}")
    return lines + resumed_lines(info)


def start_panel(lines: list[str]) -> Panel:
    """The start lines as two columns, their 12-character keys and the values: a value too long
    for the terminal wraps under its own column (a path folds) instead of being cut off at the
    panel's edge."""
    from rich.table import Table

    grid = Table.grid()
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for line in lines:
        grid.add_row(line[:KEY_WIDTH], line[KEY_WIDTH:])
    return Panel(grid, title="vae train", expand=False)


def data_words(info: RunStarted, dataset: Dataset) -> str:
    """ "50,000 train / 10,000 validation / 10,000 test" images."""
    held_out = info.validation_images
    split = f" / {held_out:,} validation" if held_out else ""
    return f"{info.train_images:,} train{split} / {len(dataset.test_images):,} test"


def choice_words(info: RunStarted) -> str:
    """What chooses best.pt: the validation split, or nothing (the last epoch)."""
    if info.validation_images:
        return "the epoch with the best validation bound (the test set only reports)"
    return "the last epoch (no validation split: --validation N to choose on one)"


class QuietControlKeys:
    """While bars are drawn on a terminal, Ctrl-C is not echoed as "^C" into the bar (the
    terminal's ECHOCTL flag, restored afterwards): the bars clear and the resume line reads
    cleanly."""

    def __init__(self) -> None:
        self.saved: list[Any] | None = None

    def __enter__(self) -> QuietControlKeys:
        import termios

        try:
            self.saved = termios.tcgetattr(sys.stdin)
            quiet = termios.tcgetattr(sys.stdin)
            quiet[3] &= ~termios.ECHOCTL
            termios.tcsetattr(sys.stdin, termios.TCSANOW, quiet)
        except (termios.error, OSError, ValueError, AttributeError):  # stdin is no terminal
            self.saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        import termios

        if self.saved is not None:
            with contextlib.suppress(termios.error, OSError, ValueError):
                termios.tcsetattr(sys.stdin, termios.TCSANOW, self.saved)
            self.saved = None


class SampleProgress:
    """A tqdm bar over a long evaluation (the IW estimate's decoded samples), shown on a
    terminal only; called as progress(done, total)."""

    def __init__(self, description: str, unit: str = "sample") -> None:
        self.description, self.unit, self.bar = description, unit, None
        self.shown = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.shown:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=self.description, unit=self.unit, unit_scale=True, leave=False
            )
        self.bar.n = done
        self.bar.refresh()

    def write(self, line: str) -> None:
        """A line for each stage: above the bar on a terminal, plain otherwise."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def resumed_lines(info: RunStarted) -> list[str]:
    """Where a resumed run picks up, in words."""
    epoch, position = info.resumed_epoch, info.resumed_position
    phase = f" (phase {info.phase})" if len(info.plan) > 1 else ""
    if position:
        steps = info.steps_per_epoch
        return [f"resumed     in epoch {epoch + 1}{phase}, at batch {position + 1} of {steps}"]
    if epoch:
        return [f"resumed     after epoch {epoch}{phase}"]
    return []
