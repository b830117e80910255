"""A sweep's search space: the `[search]` table of a tune config, checked key by key.

Pure data, no Optuna: every problem is found (and named) before a study or folder is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_cli.config.settings import FIELDS, Config, rule
from vae_cli.config.toml import parse_tables, read_toml
from vae_cli.config.values import check_value, did_you_mean, show_value
from vae_cli.errors import UserError

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    """One searched config field: a float or int range, or a list of choices."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()


def load_tune_config(path: Path) -> tuple[Config, list[Dimension]]:
    """The fixed settings ([model], [data], [train]) and the `[search]` space of a tune file."""
    data = read_toml(path)
    search = data.pop("search", None)
    loaded = parse_tables(data, str(path))
    if loaded.run.seeds is not None:
        raise UserError(
            f"{path}: [run] seeds: a sweep trains one run per trial; --parallel N trains N "
            "trials at a time in one stacked step"
        )
    config = loaded.config
    if not isinstance(search, dict) or not search:
        raise UserError(
            f"{path}: no [search] table; declare at least one field to search, e.g. "
            "lr = { low = 1e-4, high = 3e-3, log = true }"
        )
    space = [
        parse_dimension(name, spec, f"{path}: [search] {name}") for name, spec in search.items()
    ]
    check_objective_space(config, space, path)
    check_schedule_space(config, space, path)
    return config, space


def parse_dimension(name: str, spec: Any, where: str) -> Dimension:
    if name not in FIELDS:
        raise UserError(
            f"{where}: unknown field{did_you_mean(name, FIELDS)} (expected a config field "
            "such as lr)"
        )
    if (reason := rule(name, "unsearchable")) is not None:
        raise UserError(f"{where}: cannot be searched: {reason}")
    if not isinstance(spec, dict):
        raise UserError(
            f"{where}: expected a table: {{ low = …, high = … }} or {{ choices = [...] }}"
        )
    if "choices" in spec:
        return parse_choices(name, spec, where)
    return parse_range(name, spec, where)


def parse_choices(name: str, spec: dict[str, Any], where: str) -> Dimension:
    if set(spec) != {"choices"}:
        extra = ", ".join(sorted(set(spec) - {"choices"}))
        raise UserError(f"{where}: choices cannot be combined with {extra}")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise UserError(f"{where}: choices must be a non-empty list")
    values = [as_field_value(name, value, where) for value in choices]
    if len(set(map(repr, values))) != len(values):
        raise UserError(f"{where}: choices repeat a value")
    return Dimension(name, "choice", choices=tuple(values))


def parse_range(name: str, spec: dict[str, Any], where: str) -> Dimension:
    if unknown := set(spec) - RANGE_KEYS:
        first = sorted(unknown)[0]
        raise UserError(
            f"{where}: unknown key {first}{did_you_mean(first, RANGE_KEYS)} (low, high, log, step)"
        )
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high")
    kind = FIELDS[name][1].type.replace(" | None", "")
    if kind not in ("int", "float"):
        raise UserError(f"{where}: a {kind} field is searched with choices = [...], not a range")
    low, high = (as_field_value(name, spec[key], f"{where}: {key}") for key in ("low", "high"))
    if low >= high:
        raise UserError(f"{where}: low {low} must be below high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {show_value(log)}")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if log:
            raise UserError(f"{where}: a range takes log or step, not both")
        number = int if kind == "int" else int | float
        if not isinstance(step, number) or isinstance(step, bool):
            raise UserError(f"{where}: step: expected {kind_name(kind)}, got {show_value(step)}")
        if not 0 < step <= high - low:
            raise UserError(f"{where}: step must be > 0 and at most high - low, got {step}")
    return Dimension(name, kind, low=low, high=high, log=log, step=step)


def kind_name(kind: str) -> str:
    return "an integer" if kind == "int" else "a number"


def as_field_value(name: str, value: Any, where: str) -> Any:
    """`value` as field `name` takes it (TOML's 1 is 1.0 for a float field, a list is a
    per-layer tuple), or a UserError."""
    if FIELDS[name][1].type.startswith("float") and type(value) is int:
        value = float(value)
    if (problem := check_value(name, value)) is not None:
        raise UserError(f"{where}: {problem}")
    return tuple(value) if isinstance(value, list) else value


def check_objective_space(config: Config, space: list[Dimension], path: Path) -> None:
    """IWAE has no KL term: searching beta, the warm-up or free bits with it is refused."""
    names = {d.name for d in space}
    objectives = {config.train.objective}
    for dimension in space:
        if dimension.name == "objective":
            objectives = set(dimension.choices)
    elbo_only = names & {"beta", "kl_warmup_epochs", "free_bits"}
    if "iwae" in objectives and elbo_only:
        raise UserError(
            f"{path}: [search] {sorted(elbo_only)[0]}: applies to --objective elbo only, "
            "and this sweep trains iwae"
        )


def searched_values(config: Config, space: list[Dimension], name: str) -> tuple[Any, ...]:
    """The values a sweep may give field `name`: its choices, its range's ends, or the fixed one."""
    for dimension in space:
        if dimension.name == name:
            return dimension.choices or (dimension.low, dimension.high)
    return (getattr(config.train, name),)


def check_schedule_space(config: Config, space: list[Dimension], path: Path) -> None:
    """A cosine schedule decays from lr to final_lr: no trial may draw lr below final_lr."""
    if "cosine" not in searched_values(config, space, "lr_schedule"):
        return
    lowest_lr = min(searched_values(config, space, "lr"))
    highest_final = max(searched_values(config, space, "final_lr"))
    if lowest_lr < highest_final:
        raise UserError(
            f"{path}: [search] a cosine schedule decays from lr to final_lr, but this sweep "
            f"can draw lr {lowest_lr:g} below final_lr {highest_final:g}"
        )


def format_param(value: Any) -> str:
    """A searched value as a sweep's output shows it: floats to 4 significant digits."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else show_value(value).strip("'")


def largest_sizes(space: list[Dimension]) -> dict[str, Any]:
    """The largest value a sweep may draw of each setting that sizes a step's memory (of a
    per-layer list, the one with the most units): together they make the most demanding
    trial."""
    return {
        d.name: max(d.choices or (d.low, d.high), key=units)
        for d in space
        if rule(d.name, "sizes_memory")
    }


def units(value: Any) -> float:
    return sum(value) if isinstance(value, tuple) else value
