"""One setting's value: whether it is acceptable, and how messages and --help show it.

The same words for every flag, TOML key and search bound: "expected an integer >= 1, got 0".
"""

from __future__ import annotations

import math
from typing import Any

from vae_cli.config.settings import FIELDS, Config, flag_name
from vae_cli.errors import UserError


def help_for(name: str) -> str:
    """The help text of a field with its choices and default, for `--help` and TOML comments."""
    field_ = FIELDS[name][1]
    choices = (
        f" One of: {', '.join(field_.metadata['choices'])}." if field_.metadata["choices"] else ""
    )
    default = (
        "not set"
        if field_.default is None
        else str(field_.default).lower()
        if isinstance(field_.default, bool)
        else repr(field_.default)
    )
    maximum = field_.metadata["maximum"]
    limit = f" At most {bound(maximum)}." if maximum is not None else ""
    return f"{field_.metadata['help']}{choices}{limit} (default: {default.strip(chr(39))})"


def type_words(annotation: str) -> str:
    base = annotation.replace(" | None", "")
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}[
        base
    ]


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


COMPARE = {
    "minimum": lambda value, limit: value >= limit,
    "maximum": lambda value, limit: value <= limit,
    "above": lambda value, limit: value > limit,
    "below": lambda value, limit: value < limit,
}


def apply_flags(config: Config, flags: dict[str, Any]) -> Config:
    """Override `config` with the flags the user gave (None = not given), validating each."""
    given = {name: value for name, value in flags.items() if value is not None}
    for name, value in given.items():
        if (problem := check_value(name, value)) is not None:
            raise UserError(f"{flag_name(name)}: {problem}")
    return config.replace(given)
