"""A bad flag value in the words config.check_value uses for the same mistake in a TOML file:
"--iw-samples: expected an integer >= 1, got 0", whether typer's own check or ours found it."""

from __future__ import annotations

import typer

from vae_cli.config.values import show_value

# Typer's checks of a flag's value (its type, min and max) -> the words config.check_value uses
# for the same mistake in a TOML file or a training flag: "expected an integer >= 1, got 0".
BOUND_WORDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
}


def parameter_message(error: typer.BadParameter) -> str:
    """`--flag: expected …, got …` for a bad flag value, whichever check found it."""
    param = getattr(error, "param", None)
    flag = max(param.opts, key=len) if param is not None and param.opts else "value"
    cause = error.__cause__
    details = cause.errors() if hasattr(cause, "errors") else []  # pydantic's, under typer
    if details:
        kind, given = details[0].get("type"), details[0].get("input")
        if kind in TYPE_WORDS:
            return f"{flag}: expected {TYPE_WORDS[kind]}, got {show_value(given)}"
        if kind in BOUND_WORDS:
            words, key = BOUND_WORDS[kind]
            limit = (details[0].get("ctx") or {}).get(key)
            number = "an integer" if isinstance(limit, int) else "a number"
            return f"{flag}: expected {number} {words} {show_value(limit)}, got {as_typed(given)}"
    return f"{flag}: {error.message}"


def as_typed(value: object) -> str:
    """A number the user typed (typer hands over its text) as written: 0, 200, nan."""
    if isinstance(value, str):
        return value.strip()
    return show_value(value)
