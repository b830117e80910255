"""The tables a command ends with: a run's best epoch, a population's members, an evaluation,
the runs in a folder, a sweep's best trials."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from vae_cli.cli.console import stdout
from vae_cli.config.search import format_param
from vae_cli.config.values import count
from vae_cli.runs.best import DESCRIPTIONS, LAST, TEST, VALIDATION, best_epoch, describe_choice

if TYPE_CHECKING:  # commands/ loads torch; the table only reads the result's fields
    from vae_cli.commands.train import TrainResult

# How a best.pt was chosen, marked beside its test loss (chosen on validation: no mark).
CHOICE_MARKS = {VALIDATION: "", LAST: "†", TEST: "*", None: ""}


def training_summary(trained: TrainResult, *, tables: bool = True) -> None:
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
                f"test loss of best.pt over {count(spread['members'], 'member')}: "
                f"{spread['mean']:.3f}{std} (mean ± standard deviation)"
            )
    else:
        best = best_epoch(trained.states[0].history)
        if best is not None:
            console.print(best_epoch_table(best))
    for path in trained.written():
        console.print(f"wrote {path}")


def population_table(summary: dict[str, Any]) -> Table:
    table = Table(title="members (best.pt of each)")
    for column in ("member", "status", "epoch", "chosen on", "val loss", "test loss"):
        table.add_column(column, justify="left" if column in ("member", "status") else "right")
    for row in summary["members"]:
        test, held_out = row["best_test_loss"], row.get("best_val_loss")
        table.add_row(
            row["run"],
            row["status"],
            str(row["best_epoch"] or "-"),
            row.get("chosen_on") or "-",
            f"{held_out:.3f}" if held_out is not None else "-",
            f"{test:.3f}" if test is not None else "-",
        )
    return table


def best_epoch_table(best: dict[str, Any]) -> Table:
    """The epoch best.pt holds, how it was chosen, and its validation and test bounds."""
    columns = {"epoch": str(best["epoch"])}
    if "val_loss" in best:
        columns["val loss"] = f"{best['val_loss']:.3f}"
    if "val_iwae" in best:
        columns[f"val iwae-{best['test_iwae_k']}"] = f"{best['val_iwae']:.3f}"
    columns |= {
        "test loss": f"{best['test_loss']:.3f}",
        "recon": f"{best['test_recon']:.3f}",
        "kl": f"{best['test_kl']:.3f}",
    }
    if "test_iwae" in best:
        columns[f"test iwae-{best['test_iwae_k']}"] = f"{best['test_iwae']:.3f}"
    columns |= {"active units": str(best["active_units"]), "binarize": best["binarize"]}
    table = Table(title=f"best.pt: {describe_choice(best)}")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*columns.values())
    return table


def evaluation_table(result: dict[str, Any]) -> None:
    mode = result["binarize"]
    if mode != result["trained_binarize"]:
        mode += f", trained on {result['trained_binarize']}"
    where = {"test": "test set", "validation": "validation split"}.get(
        result["split"], "your images"
    )
    table = Table(title=f"{where}, nats per image (binarize={mode})")
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
        f"{result['step']}; {result['chosen']}), {result['images']:,} "
        + (
            "of your images"
            if result["dataset"] == "your images"
            else f"{result['split']} images of {result['dataset']}"
        )
    )
    console.print(table)
    if "caveat" in result:
        console.print(f"Note: {result['caveat']}", soft_wrap=False)  # wrapped between words


def runs_table(summaries: list[Any], runs_dir: str) -> None:
    console = stdout()
    if not summaries:
        console.print(f"no runs in {runs_dir}/ yet; start one with `vae train`")
        return
    # Fits 80 columns: no vertical rules, and only the model's words wrap (a name, a date or
    # a status cut in the middle reads as another one).
    table = Table(
        title=f"runs in {runs_dir}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for column in ("name", "when", "epochs", "test", "pixels, model", "status"):
        wraps = column == "pixels, model"
        table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis",
                         justify="right" if column == "test" else "left")  # fmt: skip
    for s in summaries:
        loss = (
            f"{s.best_test_loss:.2f}{CHOICE_MARKS[s.chosen_on]}"
            if s.best_test_loss is not None
            else "-"
        )
        table.add_row(s.name, s.when, s.epochs, loss, f"{s.binarize}, {s.model}", s.status)
    console.print(table)
    notes = [
        "when: the time a run started today, else its day; test: -ELBO (or the IWAE bound "
        "trained) of best.pt on the test set, nats per image"
    ]
    marks = {s.chosen_on for s in summaries if s.best_test_loss is not None}
    notes += [f"{CHOICE_MARKS[b]} best.pt is {DESCRIPTIONS[b]}" for b in (LAST, TEST) if b in marks]
    if any(s.status == "died" for s in summaries):
        notes.append(
            "died: the run says it is training, but no trainer holds its folder (killed, or "
            "its machine went down); `vae train --resume RUN` continues it from its last.pt"
        )
    for note in notes:  # wrapped at the terminal's width, between words
        console.print(note, soft_wrap=False)


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


def gradients_summary(report: dict[str, Any]) -> list[str]:
    """The lesson in two sentences: what the trick does, and what these numbers show."""
    estimators = report["estimators"]
    score = estimators["score"]["variance_vs_reparam"]
    baseline = estimators["score_baseline"]["variance_vs_reparam"]
    stl = estimators["stl"]["variance_vs_reparam"]
    return [
        "Writing z = mu + sigma * eps moves the randomness into eps, so the ELBO's gradient "
        "flows through z to mu and log sigma² (reparam, what training uses); drawn outside "
        "the graph (naive), z passes no gradient at all.",
        f"Here the score function, which needs no path through z, is {score:,.0f}x as noisy "
        f"({baseline:,.0f}x with a baseline): as many times the draws for the same precision; "
        f"stl ({stl:.2g}x) drops a term of mean zero, unbiased too and quieter as q nears the "
        "posterior.",
    ]


def gradients_table(report: dict[str, Any]) -> None:
    """Per estimator: the mean over dimensions of |E g| and of the per-draw std, for mu and
    log sigma², the total variance against reparam's, and the time per draw; then the
    encoder SNR per k."""
    layer = report["layer"]
    table = Table(
        title=f"d ELBO / d (mu, log sigma²) of {layer}, test image {report['index']}, "
        f"{report['samples']:,} draws (KL {report['kl']})"
    )
    # Two-line headings keep the table within 80 columns.
    table.add_column("estimator", no_wrap=True)
    for column in ("|E g|\nmu", "std\nmu", "|E g|\nlogvar", "std\nlogvar", "variance\n/reparam",
                   "µs per\ndraw"):  # fmt: skip
        table.add_column(column, justify="right", no_wrap=True)
    estimators = report["estimators"]
    for name, row in estimators.items():
        means = [sum(abs(v) for v in row[key]) / len(row[key])
                 for key in ("mean_mu", "std_mu", "mean_logvar", "std_logvar")]  # fmt: skip
        table.add_row(
            name, *(f"{v:.4g}" for v in means), f"{row['variance_vs_reparam']:,.4g}x",
            f"{1e6 * row['seconds_per_sample']:.1f}",
        )  # fmt: skip
    naive = max(abs(v) for v in report["naive"]["grad_mu"] + report["naive"]["grad_logvar"])
    table.add_row("naive*", f"{naive:.4g}", "0", f"{naive:.4g}", "0", "–", "–")
    console = stdout()
    console.print(table)
    console.print("* naive: the data term's gradient through a z drawn outside the graph")
    for sentence in gradients_summary(report):
        console.print(sentence, soft_wrap=False)  # wrapped between words
    if "encoder_snr_per_k" in report:
        snr = Table(title=f"encoder gradient SNR of the IWAE bound ({report['snr_draws']} draws)")
        for column in ("k", "IWAE", "DReG"):
            snr.add_column(column, justify="right")
        for k, values in report["encoder_snr_per_k"].items():
            snr.add_row(k, f"{values['iwae']:.4f}", f"{values['dreg']:.4f}")
        console.print(snr)


def score_table(report: dict[str, Any]) -> None:
    """One row per image: -log p(x), bits/dim, reconstruction error, and against the test set."""
    console = stdout()
    if report["read"]:
        console.print(report["read"], soft_wrap=False)
    reference = report["test_set"]
    how = "cached" if reference["cached"] else "computed, cached"
    console.print(
        f"test set: {reference['images']:,} images, median -log p(x) "
        f"{reference['median_nll']:.2f} nats ({how} in {reference['cache']})"
    )
    table = Table(title=f"-log p(x), K={report['samples']} (nats per image)")
    for column in ("image", "-log p(x)", "bits/dim", "recon", "higher than"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for row in report["images"]:
        table.add_row(
            Path(row["image"]).name if "/" in row["image"] else row["image"],
            f"{row['nll']:.2f}",
            f"{row['bits_per_dim']:.4f}",
            f"{row['recon']:.2f}",
            f"{row['higher_than_test']:.1f} % of test",
        )
    console.print(table)
    if not report["likelihood"]:
        console.print(
            "continuous pixels: these are cross-entropies, not -log p(x); compare them with "
            "each other only",
            soft_wrap=False,
        )
