"""How a `vae train` invocation runs its settings, beside them: --seeds (a population of one
member per seed), from the flag or a config file's [run] table. Not a training setting: each
member's own config has its one seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vae_cli.config.settings import MAX_MEMBERS, MAX_SEED
from vae_cli.errors import UserError

SEEDS_HELP = (
    "Train one member per seed in one process (e.g. 0-7 or 0,3,5; at most "
    f"{MAX_MEMBERS} members); each is an ordinary run folder RUN/seed-S/."
)


@dataclass(frozen=True)
class RunOptions:
    seeds: tuple[int, ...] | None = None  # None: one run, with [train] seed
    seeds_text: str | None = None  # as given, for messages ("0-7")


def parse_seeds(text: str, where: str = "--seeds") -> list[int]:
    """ "0-7", "0,3,5" or both ("0-3,8"); every seed once, 32 bits, at most MAX_MEMBERS of
    them. A UserError says what is wrong, naming `where`."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise UserError(
                f"{where} {text!r}: expected seeds like 0-7 or 0,3,5 (non-negative integers)"
            )
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UserError(f"{where} {text!r}: the range {part.strip()} runs backwards")
        if high > MAX_SEED:
            raise UserError(f"{where} {text!r}: seeds are at most {MAX_SEED} (32 bits)")
        if len(seeds) + high - low + 1 > MAX_MEMBERS:
            raise UserError(f"{where} {text!r}: at most {MAX_MEMBERS} members")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        repeated = next(seed for seed in seeds if seeds.count(seed) > 1)
        raise UserError(f"{where} {text!r}: seed {repeated} is given twice")
    return seeds


def seeds_option(text: str | None, where: str = "--seeds") -> RunOptions:
    return RunOptions() if text is None else RunOptions(tuple(parse_seeds(text, where)), text)


def read_run_table(entries: Any, source: str) -> RunOptions:
    """A config file's [run] table: `seeds = "0-7"` (the flag's syntax)."""
    if not isinstance(entries, dict):
        raise UserError(f"{source}: [run] must be a table")
    for key in entries:
        if key != "seeds":
            raise UserError(f"{source}: [run] {key}: unknown key (the [run] table takes seeds)")
    seeds = entries.get("seeds")
    if seeds is None:
        return RunOptions()
    if not isinstance(seeds, str):
        raise UserError(f'{source}: [run] seeds: expected a string like "0-7" or "0,3,5"')
    return seeds_option(seeds, f"{source}: [run] seeds")
