"""One setting's value: whether it is acceptable, and how messages and --help show it.

The same words for every flag, TOML key and search bound: "expected an integer >= 1, got 0".
"""

from __future__ import annotations

import math
from typing import Any

from vae_cli.config.settings import FIELDS, MAX_LAYERS, Config, flag_name
from vae_cli.errors import UserError


def help_for(name: str) -> str:
    """The help text of a field with its choices and default, for `--help` and TOML comments."""
    field_ = FIELDS[name][1]
    choices = (
        f" One of: {', '.join(field_.metadata['choices'])}." if field_.metadata["choices"] else ""
    )
    maximum = field_.metadata["maximum"]
    limit = f" At most {bound(maximum)}." if maximum is not None else ""
    if field_.metadata["alias"]:  # folded into the list it names: no default of its own
        return f"{field_.metadata['help']}{limit}"
    default = show_value(field_.default).strip("'")
    return f"{field_.metadata['help']}{choices}{limit} (default: {default})"


def flag_help(name: str) -> str:
    """A setting's help for `--help`: its text and choices (the default and range are shown
    the way typer shows every option's)."""
    meta = FIELDS[name][1].metadata
    choices = f" One of: {', '.join(meta['choices'])}." if meta["choices"] else ""
    return f"{meta['help']}{choices}"


LIST = "tuple[int, ...]"  # the type of a per-layer list (latent_dims, hidden_dims)


def type_words(annotation: str) -> str:
    base = annotation.replace(" | None", "")
    return {
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        LIST: "integers separated by commas like 64,32,16",
    }[base]


def parse_list(name: str, text: str) -> tuple[int, ...]:
    """A per-layer list as typed on the command line ("64,32,16"), or a UserError."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise UserError(f"{flag_name(name)}: expected at least one layer, got none")
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise UserError(f"{flag_name(name)}: expected {type_words(LIST)}, got {text!r}") from None


def bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def show_value(value: Any) -> str:
    """A value as a message shows it: as typed on a command line or in TOML, never Python's
    spelling (None, True)."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(map(show_value, value))
    return repr(value) if isinstance(value, str) else str(value)


def count(n: int, noun: str) -> str:
    """ "1 epoch", "2 epochs"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def did_you_mean(name: str, known: Any) -> str:
    """ " (did you mean epochs?)" for a misspelt key, as typer suggests a misspelt flag."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_value(name: str, value: Any) -> str | None:
    """Why `value` is not acceptable for field `name`, or None when it is."""
    f = FIELDS[name][1]
    meta, wanted = f.metadata, type_words(f.type)
    base = f.type.replace(" | None", "")
    if value is None:
        return None if "None" in f.type else f"expected {wanted}"
    if base == LIST:
        return check_list(value, meta)
    type_ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[base]
    if not type_ok:
        return f"expected {wanted}, got {show_value(value)}"
    if base == "float" and not math.isfinite(value):
        return f"expected a finite number, got {show_value(value)}"
    if meta["choices"] and value not in meta["choices"]:
        return f"expected one of {', '.join(meta['choices'])}, got {show_value(value)}"
    for key, words in (("minimum", ">="), ("maximum", "<="), ("above", ">"), ("below", "<")):
        limit = meta[key]
        if limit is not None and not COMPARE[key](value, limit):
            return f"expected {wanted} {words} {bound(limit)}, got {show_value(value)}"
    return None


def check_list(value: Any, meta: dict[str, Any]) -> str | None:
    """Why a per-layer list is not acceptable: not integers, empty, too long, out of bounds."""
    if not isinstance(value, tuple | list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        return f"expected {type_words(LIST)}, got {show_value(value)}"
    if not value:
        return "expected at least one layer, got none"
    if len(value) > MAX_LAYERS:
        return f"expected at most {MAX_LAYERS} layers, got {len(value)} ({show_value(value)})"
    for key, words in (("minimum", ">="), ("maximum", "<=")):
        limit = meta[key]
        if limit is not None and not all(COMPARE[key](item, limit) for item in value):
            return f"expected integers {words} {bound(limit)}, got {show_value(value)}"
    return None


COMPARE = {
    "minimum": lambda value, limit: value >= limit,
    "maximum": lambda value, limit: value <= limit,
    "above": lambda value, limit: value > limit,
    "below": lambda value, limit: value < limit,
}


def given_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags the user gave (None = not given), each validated; a per-layer list comes as
    typed ("64,32,16")."""
    given = {name: value for name, value in flags.items() if value is not None}
    for name, value in given.items():
        if FIELDS[name][1].type == LIST and isinstance(value, str):
            given[name] = value = parse_list(name, value)
        if (problem := check_value(name, value)) is not None:
            raise UserError(f"{flag_name(name)}: {problem}")
    return given


def apply_flags(config: Config, flags: dict[str, Any]) -> Config:
    """Override `config` with the flags the user gave, validating each."""
    return config.replace(given_flags(flags))
