"""Terminal presentation: the start panel, progress bars, summary tables.

The CLI layer's helper: imports rich and tqdm, holds no logic the library needs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from vae_cli.callbacks import Callbacks
from vae_cli.config import count
from vae_cli.search import format_param
from vae_cli.selection import best_epoch


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
        self.bars = not quiet and sys.stdout.isatty()
        self.epoch_bar = self.batch_bar = None
        self.members = 1
        self.terminal = QuietControlKeys() if self.bars else None

    def on_start(self, info: dict[str, Any]) -> None:
        self.members = len(info["members"])
        if self.panel:
            stdout().print(
                Panel("\n".join(start_lines(info, self)), title="vae train", expand=False)
            )
        if self.bars:
            from tqdm import tqdm

            lead = f"{self.label} " if self.label else ""
            if self.terminal is not None:
                self.terminal.__enter__()
            self.epoch_bar = tqdm(
                total=self.epochs,
                initial=info["resumed_epoch"],
                desc=f"{lead}epochs",
                leave=False,
                dynamic_ncols=True,
            )
            # Counted in images, so the rate tqdm shows is images/s.
            self.batch_bar = tqdm(
                total=len(info["dataset"].train_images),
                desc=f"{lead}batches",
                unit="img",
                unit_scale=True,
                leave=False,
                dynamic_ncols=True,
            )

    def on_phase(self, phase: dict[str, Any]) -> None:
        self.write(f"{self.lead()}phase {phase['number']} of {phase['of']}: {phase['plan']}")

    def lead(self) -> str:
        return f"{self.label}  " if self.label else ""

    def write(self, line: str) -> None:
        """A line above the bars (or plain, without them)."""
        if self.epoch_bar is not None:
            self.epoch_bar.write(line)
        else:
            print(line, flush=True)

    def on_progress(self, epoch: int, step: int, steps: int, stats: dict[str, float]) -> None:
        if self.batch_bar is None:
            return
        self.batch_bar.n = int(stats["images"])
        self.batch_bar.set_postfix(
            loss=f"{stats['loss']:.2f}",
            recon=f"{stats['recon']:.2f}",
            kl=f"{stats['kl']:.2f}",
            refresh=False,
        )
        self.batch_bar.refresh()

    def on_epoch(self, metrics: dict[str, Any]) -> None:
        # A run in phases has no fixed epoch count: it names the phase instead.
        total = f"/{self.epochs}" if self.epochs else f" phase {metrics['phase']}"
        member = f"{metrics['member']}  " if metrics.get("member") else ""
        line = (
            f"{self.lead()}epoch {metrics['epoch']:>3}{total}  {member}train "
            f"{metrics['train_loss']:.2f}  test {metrics['test_loss']:.2f} (recon "
            f"{metrics['test_recon']:.2f}, kl {metrics['test_kl']:.2f})  "
        )
        if "test_iwae" in metrics:
            line += f"iwae-{metrics['test_iwae_k']} {metrics['test_iwae']:.2f}  "
        per_member = " per member" if self.members > 1 else ""
        line += f"[{metrics['binarize']}]  {metrics['images_per_s']:,.0f} img/s{per_member}"
        if self.epoch_bar is not None:
            self.epoch_bar.update(1)
            self.batch_bar.reset()
        self.write(line)

    def on_warning(self, message: str) -> None:
        who = f"{self.label}: " if self.label else ""
        print(f"Warning: {who}{message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self.batch_bar, self.epoch_bar):
            if bar is not None:
                bar.close()
        self.epoch_bar = self.batch_bar = None
        if self.terminal is not None:
            self.terminal.__exit__()


def start_lines(info: dict[str, Any], display: TrainingDisplay) -> list[str]:
    """The start panel: where it runs, the model, the data, the folder and the plan."""
    from vae_cli.device import device_description
    from vae_cli.model import count_parameters

    dataset, model, members = info["dataset"], info["model"], info["members"]
    per_member = " per member" if len(members) > 1 else ""
    sizes = model.latent_dims
    latent = (
        f"z {sizes[0]}"
        if len(sizes) == 1
        else ", ".join(f"z{layer} {size}" for layer, size in enumerate(sizes, 1))
    )
    lines = [
        f"device      {device_description(info['device'])}",
        f"model       {model.config.arch}, {latent}, {count_parameters(model):,} parameters"
        + per_member,
        f"data        {len(dataset.train_images):,} train / {len(dataset.test_images):,} "
        f"test images, binarize={display.binarize}",
        f"run folder  {display.run_dir}",
    ]
    if len(members) > 1:
        lines.append(f"members     {len(members)}: {', '.join(members)}")
    plan = info["plan"]
    if len(plan) == 1:
        lines.append(f"plan        {plan[0]}")
    for number, phase in enumerate(plan if len(plan) > 1 else [], start=1):
        lead = "plan        " if number == 1 else " " * 12
        lines.append(f"{lead}phase {number}: {phase}")
    return lines + resumed_lines(info)


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

    def __init__(self, description: str) -> None:
        self.description, self.bar = description, None
        self.shown = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.shown:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=self.description, unit="sample", unit_scale=True, leave=False
            )
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def resumed_lines(info: dict[str, Any]) -> list[str]:
    """Where a resumed run picks up, in words."""
    epoch, position = info["resumed_epoch"], info["resumed_position"]
    phase = f" (phase {info['phase']})" if len(info["plan"]) > 1 else ""
    if position:
        steps = info["steps_per_epoch"]
        return [f"resumed     in epoch {epoch + 1}{phase}, at batch {position + 1} of {steps}"]
    if epoch:
        return [f"resumed     after epoch {epoch}{phase}"]
    return []


def training_summary(trained: Any, *, tables: bool = True) -> None:
    """The best epoch of one run, or a population's members and their spread (`tables`),
    then the files written."""
    console = stdout()
    if not tables:
        pass
    elif trained.population is not None:
        console.print(population_table(trained.population))
        spread = trained.population["best_test_loss"]
        if spread["mean"] is not None:
            std = f" ± {spread['std']:.3f}" if spread["std"] is not None else ""
            console.print(
                f"best test loss over {count(spread['members'], 'member')}: "
                f"{spread['mean']:.3f}{std} (mean ± standard deviation)"
            )
    else:
        best = best_epoch(trained.states[0].history)
        if best is not None:
            console.print(best_epoch_table(best))
    for path in trained.written():
        console.print(f"wrote {path}")


def population_table(summary: dict[str, Any]) -> Table:
    table = Table(title="members")
    for column in ("member", "status", "best epoch", "best test loss"):
        table.add_column(column, justify="left" if column in ("member", "status") else "right")
    for row in summary["members"]:
        loss = row["best_test_loss"]
        table.add_row(
            row["run"],
            row["status"],
            str(row["best_epoch"] or "-"),
            f"{loss:.3f}" if loss is not None else "-",
        )
    return table


def best_epoch_table(best: dict[str, Any]) -> Table:
    """The epoch best.pt holds; IWAE runs also show the test bound that chose it."""
    columns = {
        "epoch": str(best["epoch"]),
        "test loss": f"{best['test_loss']:.3f}",
        "recon": f"{best['test_recon']:.3f}",
        "kl": f"{best['test_kl']:.3f}",
    }
    if "test_iwae" in best:
        columns[f"test iwae-{best['test_iwae_k']}"] = f"{best['test_iwae']:.3f}"
    columns |= {"active units": str(best["active_units"]), "binarize": best["binarize"]}
    table = Table(title="best epoch")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*columns.values())
    return table


def evaluation_table(result: dict[str, Any]) -> None:
    mode = result["binarize"]
    if mode != result["trained_binarize"]:
        mode += f", trained on {result['trained_binarize']}"
    table = Table(title=f"test set, nats per image (binarize={mode})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("-ELBO (loss)", f"{result['loss']:.3f}")
    table.add_row("reconstruction", f"{result['recon']:.3f}")
    table.add_row("KL", f"{result['kl']:.3f}")
    layers = result.get("kl_per_layer") or []
    if len(layers) > 1:  # a hierarchy: each layer's share, bottom (z1) first
        table.add_row("KL of z1, z2", ", ".join(f"{kl:.3f}" for kl in layers))
        units = result["active_units_per_layer"]
        table.add_row("active units z1, z2", ", ".join(str(u) for u in units))
    table.add_row("active units", f"{result['active_units']} / {len(result['kl_per_dim'])}")
    top = ", ".join(f"{v:.2f}" for v in result["kl_per_dim"][:8])
    table.add_row("KL per dim (top 8)", top)
    if "iw" in result:
        iw = result["iw"]
        table.add_row(f"IW NLL (K={iw['samples']})", f"{iw['nll']:.3f} ± {iw['stderr']:.3f}")
        table.add_row("bits/dim", f"{iw['bits_per_dim']:.4f}")
    console = stdout()
    console.print(
        f"checkpoint {result['checkpoint']} (epoch {result['epoch']}, step "
        f"{result['step']}), {result['images']:,} test images of {result['dataset']}"
    )
    console.print(table)
    if "caveat" in result:
        console.print(f"Note: {result['caveat']}")


def runs_table(summaries: list[Any], runs_dir: str) -> None:
    console = stdout()
    if not summaries:
        console.print(f"no runs in {runs_dir}/ yet; start one with `vae train`")
        return
    table = Table(title=f"runs in {runs_dir}")
    for column in ("name", "date", "epochs", "best test loss", "latent", "arch", "status"):
        table.add_column(column)
    for s in summaries:
        loss = f"{s.best_test_loss:.2f} ({s.binarize})" if s.best_test_loss is not None else "-"
        table.add_row(s.name, s.date, s.epochs, loss, s.latent, s.arch, s.status)
    console.print(table)
    if any(s.status == "died" for s in summaries):
        console.print(
            "died: the run says it is training, but no trainer holds its folder (killed, or "
            "its machine went down); `vae train --resume RUN` continues it from its last.pt"
        )


def tune_summary(summary: dict[str, Any]) -> None:
    """The study's best trials, its counts, and how to reproduce the best run."""
    console = stdout()
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary["counts"].items()))
    console.print(f"study {summary['study']} in {summary['storage']}: {counts or 'no trials'}")
    rows = summary["rows"]
    if not rows:
        console.print("no completed trials yet")
        return
    names = sorted({name for row in rows for name in row["params"]})
    table = Table(title="best trials")
    for column in ("trial", *names, "value", "epochs", "state"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for row in rows:
        params = [format_param(row["params"].get(name)) for name in names]
        table.add_row(
            str(row["number"]), *params, f"{row['value']:.3f}", str(row["epochs"]), row["state"]
        )
    console.print(table)
    host = f" (on {summary['best_host']})" if summary["best_host"] else ""
    console.print(f"best run     {summary['best_run']}{host}")
    console.print(f"reproduce    {summary['reproduce']}")
    for plot in summary["plots"]:
        console.print(f"wrote {plot}")
