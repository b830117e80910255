"""Config files: TOML in (every problem a UserError naming the file and key) and commented
TOML out (a run's config.toml, configs/default.toml)."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_cli.config.run_options import RunOptions, read_run_table
from vae_cli.config.settings import FIELDS, SECTION_TYPES, Config, phase_keys
from vae_cli.config.values import check_value, did_you_mean, help_for
from vae_cli.errors import UserError

# Tables a config file may carry besides the settings: how to run them ([run]), and what
# produced a run (its config.toml's [manifest], ignored when read back).
RUN_TABLE, INFORMATIONAL_SECTIONS = "run", ("manifest",)


@dataclass(frozen=True)
class ConfigFile:
    config: Config
    run: RunOptions = field(default_factory=RunOptions)
    keys: frozenset[str] = frozenset()  # the settings the file itself set (phases aside)


def from_dict(data: dict[str, Any], source: str) -> Config:
    """Build a Config from a nested dict as read from TOML, naming `source` in every error
    (a [run] table is refused: this is a run's own settings, see read_config)."""
    parsed = parse_tables(data, source)
    if parsed.run != RunOptions():
        raise UserError(f"{source}: [run] seeds: a single run's settings take no seeds")
    return parsed.config


def parse_tables(data: dict[str, Any], source: str) -> ConfigFile:
    values: dict[str, Any] = {}
    phases: tuple[dict[str, Any], ...] = ()
    run = RunOptions()
    for section, entries in data.items():
        if section in INFORMATIONAL_SECTIONS:
            continue
        if section == "phases":
            phases = parse_phases(entries, source)
            continue
        if section == RUN_TABLE:
            run = read_run_table(entries, source)
            continue
        if not is_table(entries):
            raise UserError(f"{source}: {section} = ...: {top_level_key(section)}")
        if section not in SECTION_TYPES or not isinstance(entries, dict):
            hint = did_you_mean(section, [*SECTION_TYPES, "phases", RUN_TABLE])
            raise UserError(
                f"{source}: unknown section [{section}]{hint} (expected {known_tables()})"
            )
        for key, value in entries.items():
            if key not in FIELDS or FIELDS[key][0] != section:
                raise UserError(f"{source}: [{section}] {key}: {unknown_key(key, section)}")
            values[key] = checked_value(key, value, f"{source}: [{section}] {key}")
    config = dataclasses.replace(Config().replace(values), phases=phases)
    return ConfigFile(config, run, frozenset(values))


def known_tables() -> str:
    return ", ".join(f"[{s}]" for s in [*SECTION_TYPES, RUN_TABLE])


def is_table(entries: Any) -> bool:
    """A [table] or [[array of tables]], as opposed to a bare `key = value`."""
    return isinstance(entries, dict) or (
        isinstance(entries, list) and bool(entries) and all(isinstance(e, dict) for e in entries)
    )


def top_level_key(key: str) -> str:
    """Why a bare `key = value` outside any table is refused, and which table it belongs in."""
    import difflib

    table_of = {name: table for name, (table, _) in FIELDS.items()} | {"seeds": RUN_TABLE}
    if key in table_of:
        return f"a setting outside its table; write it under [{table_of[key]}]"
    close = difflib.get_close_matches(key, list(table_of), n=1, cutoff=0.6)
    if not close:
        return f"unknown key; settings go in tables ({known_tables()})"
    return f"unknown key (did you mean {close[0]}, under [{table_of[close[0]]}]?)"


def unknown_key(key: str, section: str) -> str:
    """Why `key` is not a key of [section]: misspelt, or a key of another table."""
    if key in FIELDS:
        return f"belongs in [{FIELDS[key][0]}], not [{section}]"
    if key == "seeds":
        return f"belongs in [{RUN_TABLE}], not [{section}] (it runs the settings per seed)"
    names = [f.name for f in dataclasses.fields(SECTION_TYPES[section])]
    return f"unknown key{did_you_mean(key, names)}"


def checked_value(key: str, value: Any, where: str) -> Any:
    """A TOML value for field `key` (1 means 1.0 for a float field), or a UserError."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and FIELDS[key][1].type.startswith("float")
    ):
        value = float(value)
    if (problem := check_value(key, value)) is not None:
        raise UserError(f"{where}: {problem}")
    return tuple(value) if isinstance(value, list) else value


def parse_phases(entries: Any, source: str) -> tuple[dict[str, Any], ...]:
    """The [[phases]] tables: per-phase settings only, each with its epochs or time_budget."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{source}: phases must be [[phases]] tables")
    allowed = phase_keys()
    phases = []
    for number, entry in enumerate(entries, start=2):  # [train] is phase 1
        where = f"{source}: [[phases]] {number}"
        for key in entry:
            if key in FIELDS and key not in allowed:
                raise UserError(
                    f"{where}: {key} cannot change between phases (only training settings: "
                    f"{', '.join(allowed)})"
                )
            if key not in FIELDS:
                raise UserError(f"{where}: {key}: unknown key{did_you_mean(key, allowed)}")
        if "epochs" not in entry and "time_budget" not in entry:
            raise UserError(f"{where}: give the phase's length: epochs or time_budget")
        phases.append({key: checked_value(key, v, f"{where} {key}") for key, v in entry.items()})
    return tuple(phases)


def read_config(path: Path) -> ConfigFile:
    """A TOML config file: its settings and its [run] table."""
    return parse_tables(read_toml(path), str(path))


def load_config(path: Path) -> Config:
    """A run's settings from a TOML file (a run folder's config.toml); every problem is a
    UserError naming the file."""
    return from_dict(read_toml(path), str(path))


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or invalid file is a UserError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read config file ({error.__class__.__name__})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: Config, manifest: dict[str, Any] | None = None) -> str:
    """The config as commented TOML; `manifest` adds an informational [manifest] section."""
    lines: list[str] = []
    for name, section in config.sections():
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            if f.metadata["alias"]:  # folded into the list it names
                continue
            value = getattr(section, f.name)
            lines.append(f"# {help_for(f.name)}")
            lines.append(
                f"{f.name} = {toml_value(value)}"
                if value is not None
                else f"# {f.name} =  (not set)"
            )
        lines.append("")
    for number, phase in enumerate(config.phases, start=2):
        lines.append(f"[[phases]]  # phase {number}, after the one before it ends")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in phase.items())
        lines.append("")
    if manifest:
        lines.append("[manifest]")
        lines.append("# What produced this run; ignored when the file is read as --config.")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in manifest.items())
        lines.append("")
    return "\n".join(lines)


def default_toml() -> str:
    """configs/default.toml: the built-in defaults, commented (a test keeps the file in sync)."""
    header = (
        "# vae-cli's built-in defaults, generated from vae_cli/config/ (the single source):\n"
        "#   python -c 'from vae_cli.config import default_toml; print(default_toml(), end=\"\")'"
        " > configs/default.toml\n"
        "# Copy and edit; every key is optional. Flags given on the command line win.\n"
        "# Run:  vae train --config configs/default.toml\n\n"
    )
    return header + to_toml(Config())
