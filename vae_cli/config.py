"""The run configuration: one dataclass per concern, the single source of defaults and help texts.

Command-line flags, TOML files and checkpoints all go through `Config`; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_cli.errors import UserError


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple = (),
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A config field: its default, a one-line help text and the values it accepts."""
    meta = {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
    }
    return field(default=default, metadata=meta)


# Seeds fit 32 bits everywhere: torch generators take more, but Optuna's samplers (numpy) do not.
MAX_SEED = 2**32 - 1
MAX_MEMBERS = 64  # one stacked step holds every member's weights, moments and activations


@dataclass
class ModelConfig:
    arch: str = setting("mlp", "Encoder/decoder family.", choices=("mlp", "conv"))
    # Upper bounds keep absurd sizes a one-line error instead of an allocation failure.
    latent_dim: int = setting(32, "Size of the latent code z.", minimum=1, maximum=4096)
    hidden_dim: int = setting(256, "Width of the hidden layers.", minimum=1, maximum=8192)
    activation: str = setting("relu", "Hidden-layer nonlinearity.", choices=("relu", "tanh"))
    stochastic_layers: int = setting(
        1,
        "Stochastic layers: 1 (z), or 2 (z1 and z2 above it, Burda et al. 2016's hierarchy).",
        minimum=1,
        maximum=2,
    )
    latent2_dim: int = setting(
        50, "Size of z2, the top latent of a two-layer model.", minimum=1, maximum=4096
    )
    hidden2_dim: int = setting(
        100, "Width of the layers between z1 and z2 (two-layer model).", minimum=1, maximum=8192
    )
    max_logvar: float = setting(10.0, "logvar is clamped to [-max, +max].", above=0)
    min_std: float = setting(1e-4, "Floor on the posterior std sigma (0 disables).", minimum=0)


@dataclass
class DataConfig:
    dataset: str = setting("mnist", "Dataset to train on.", choices=("mnist", "fashion-mnist"))
    binarize: str = setting(
        "none",
        "Pixels: none = continuous in [0,1]; static/dynamic = Bernoulli draws.",
        choices=("none", "static", "dynamic"),
    )
    limit: int | None = setting(None, "Use only the first N training and test images.", minimum=1)


@dataclass
class TrainConfig:
    epochs: int = setting(10, "Number of passes over the training set.", minimum=1)
    batch_size: int = setting(128, "Images per optimiser step.", minimum=1)
    # lr 1.2e-3 and beta2 0.99 measured best for 10 epochs with clipping at 1.0: clipped
    # gradients change scale over training and a shorter second-moment memory follows it
    # (README, "Results").
    lr: float = setting(1.2e-3, "Adam learning rate (peak, with a schedule).", above=0)
    adam_beta2: float = setting(0.99, "Adam's second-moment decay rate.", above=0, below=1)
    lr_schedule: str = setting(
        "constant", "Learning-rate schedule.", choices=("constant", "cosine")
    )
    final_lr: float = setting(1e-4, "Learning rate at the end of a cosine schedule.", minimum=0)
    time_budget: float | None = setting(
        None,
        "Minutes of training time (the steps' wall time, waits for the device included; not "
        "the test pass, pictures or checkpoints): the cosine schedule follows it and training "
        "stops at the first epoch end past it.",
        above=0,
    )
    seed: int = setting(0, "Seed for weights, data order and noise.", minimum=0, maximum=MAX_SEED)
    seeds: str | None = setting(
        None,
        "Train one member per seed in one process (e.g. 0-7 or 0,3,5; at most "
        f"{MAX_MEMBERS} members); each is an ordinary run folder RUN/seed-S/.",
    )
    grad_clip: float = setting(1.0, "Max global gradient norm (0 disables clipping).", minimum=0)
    max_bad_steps: int = setting(
        20, "Stop after this many non-finite steps in a row.", minimum=1, maximum=1_000_000
    )
    beta: float = setting(1.0, "Weight of the KL term.", minimum=0)
    kl_warmup_epochs: int = setting(
        0, "Epochs over which the KL weight rises 0 -> beta.", minimum=0
    )
    free_bits: float = setting(
        0.0, "Per-dimension KL floor in nats (Kingma et al. 2016).", minimum=0
    )
    objective: str = setting("elbo", "Training bound.", choices=("elbo", "iwae"))
    # Training holds all k samples of a batch at once (evaluation chunks them).
    k: int = setting(
        1, "Importance samples per image for the IWAE objective.", minimum=1, maximum=1000
    )
    dreg: bool = setting(
        False,
        "IWAE: the encoder's gradient by the doubly reparameterized estimator (Tucker et al. "
        "2018), lower variance at the same cost.",
    )
    device: str = setting(
        "auto", "auto picks cuda, then mps, then cpu.", choices=("auto", "cpu", "cuda", "mps")
    )
    amp: bool = setting(False, "bf16 autocast on CUDA (ignored on CPU).")
    compile: bool = setting(
        False, "torch.compile the ELBO step (opt-in; slower to start; IWAE runs eagerly)."
    )
    cuda_graph: bool = setting(
        True, "Capture the training step in a CUDA graph and replay it (CUDA only)."
    )
    tensorboard: bool = setting(False, "Also write TensorBoard event files to RUN/tensorboard/.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Training phases after the first ([train] is the first): each a dict of PHASE_KEYS
    # settings, applied on top of the phase before it, with its own epochs / time_budget.
    phases: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (None values left out, as TOML has no null)."""
        tables: dict[str, Any] = {
            name: {k: v for k, v in dataclasses.asdict(section).items() if v is not None}
            for name, section in self.sections()
        }
        if self.phases:
            tables["phases"] = [dict(phase) for phase in self.phases]
        return tables

    def sections(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in SECTION_TYPES]

    def replace(self, values: dict[str, Any]) -> Config:
        """A copy with flat `name -> value` overrides (names as in `FIELDS`)."""
        sections = {name: dataclasses.asdict(section) for name, section in self.sections()}
        for name, value in values.items():
            sections[FIELDS[name][0]][name] = value
        return Config(
            ModelConfig(**sections["model"]),
            DataConfig(**sections["data"]),
            TrainConfig(**sections["train"]),
            self.phases,
        )

    def phase(self, index: int) -> Config:
        """The settings training uses in phase `index` (0: the [train] table), without phases.

        Settings carry over from phase to phase; the length (epochs or time_budget) is each
        phase's own. A phase given only a time budget runs until it is spent.
        """
        current = dataclasses.replace(self, phases=())
        for phase in self.phases[:index]:
            length = {"epochs": UNBOUNDED_EPOCHS, "time_budget": None}
            current = current.replace({**length, **phase})
        return current


UNBOUNDED_EPOCHS = 1_000_000  # a phase bounded by its time budget alone
# What a [[phases]] table may set: training settings, never the model or the data.
PHASE_KEYS = (
    "epochs",
    "time_budget",
    "objective",
    "k",
    "dreg",
    "lr",
    "lr_schedule",
    "final_lr",
    "beta",
    "kl_warmup_epochs",
    "free_bits",
    "grad_clip",
    "adam_beta2",
)


# Settings that may differ between the members of one population: they change numbers, not
# tensor shapes or the code a step runs, so such runs train stacked in one step.
PER_MEMBER_KEYS = (
    "seed",
    "lr",
    "final_lr",
    "beta",
    "kl_warmup_epochs",
    "free_bits",
    "grad_clip",
    "adam_beta2",
)


def parse_seeds(text: str) -> list[int]:
    """--seeds: "0-7", "0,3,5" or both ("0-3,8"); every seed once, 32 bits, at most
    MAX_MEMBERS of them. A UserError says what is wrong."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise UserError(
                f"--seeds {text!r}: expected seeds like 0-7 or 0,3,5 (non-negative integers)"
            )
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UserError(f"--seeds {text!r}: the range {part.strip()} runs backwards")
        if high > MAX_SEED:
            raise UserError(f"--seeds {text!r}: seeds are at most {MAX_SEED} (32 bits)")
        if len(seeds) + high - low + 1 > MAX_MEMBERS:
            raise UserError(f"--seeds {text!r}: at most {MAX_MEMBERS} members")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        repeated = next(seed for seed in seeds if seeds.count(seed) > 1)
        raise UserError(f"--seeds {text!r}: seed {repeated} is given twice")
    return seeds


SECTION_TYPES = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
# Flat field name -> (section, dataclasses.Field); names are unique across sections.
FIELDS = {
    f.name: (section, f) for section, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls)
}
# Keys a config file may carry that describe a run rather than configure it.
INFORMATIONAL_SECTIONS = ("manifest",)


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


def _type_name(annotation: str) -> str:
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
    meta, wanted = f.metadata, _type_name(f.type)
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
    if meta["minimum"] is not None and value < meta["minimum"]:
        return f"expected {wanted} >= {bound(meta['minimum'])}, got {show_value(value)}"
    if meta["maximum"] is not None and value > meta["maximum"]:
        return f"expected {wanted} <= {bound(meta['maximum'])}, got {show_value(value)}"
    if meta["above"] is not None and value <= meta["above"]:
        return f"expected {wanted} > {bound(meta['above'])}, got {show_value(value)}"
    if meta["below"] is not None and value >= meta["below"]:
        return f"expected {wanted} < {bound(meta['below'])}, got {show_value(value)}"
    return None


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_flags(config: Config, flags: dict[str, Any]) -> Config:
    """Override `config` with the flags the user gave (None = not given), validating each."""
    given = {name: value for name, value in flags.items() if value is not None}
    for name, value in given.items():
        if (problem := check_value(name, value)) is not None:
            raise UserError(f"{flag_name(name)}: {problem}")
    return config.replace(given)


def from_dict(data: dict[str, Any], source: str) -> Config:
    """Build a Config from a nested dict as read from TOML, naming `source` in every error."""
    values: dict[str, Any] = {}
    phases: tuple[dict[str, Any], ...] = ()
    for section, entries in data.items():
        if section in INFORMATIONAL_SECTIONS:
            continue
        if section == "phases":
            phases = parse_phases(entries, source)
            continue
        if section not in SECTION_TYPES or not isinstance(entries, dict):
            known = ", ".join(f"[{s}]" for s in SECTION_TYPES)
            hint = did_you_mean(section, [*SECTION_TYPES, "phases"])
            raise UserError(f"{source}: unknown section [{section}]{hint} (expected {known})")
        for key, value in entries.items():
            if key not in FIELDS or FIELDS[key][0] != section:
                raise UserError(f"{source}: [{section}] {key}: {unknown_key(key, section)}")
            values[key] = checked_value(key, value, f"{source}: [{section}] {key}")
    return dataclasses.replace(Config().replace(values), phases=phases)


def unknown_key(key: str, section: str) -> str:
    """Why `key` is not a key of [section]: misspelt, or a key of another section."""
    if key in FIELDS:
        return f"belongs in [{FIELDS[key][0]}], not [{section}]"
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
    return value


def parse_phases(entries: Any, source: str) -> tuple[dict[str, Any], ...]:
    """The [[phases]] tables: training settings only, each with its epochs or time_budget."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{source}: phases must be [[phases]] tables")
    phases = []
    for number, entry in enumerate(entries, start=2):  # [train] is phase 1
        where = f"{source}: [[phases]] {number}"
        for key in entry:
            if key in FIELDS and key not in PHASE_KEYS:
                raise UserError(
                    f"{where}: {key} cannot change between phases (only training settings: "
                    f"{', '.join(PHASE_KEYS)})"
                )
            if key not in FIELDS:
                raise UserError(f"{where}: {key}: unknown key{did_you_mean(key, PHASE_KEYS)}")
        if "epochs" not in entry and "time_budget" not in entry:
            raise UserError(f"{where}: give the phase's length: epochs or time_budget")
        phases.append({key: checked_value(key, v, f"{where} {key}") for key, v in entry.items()})
    return tuple(phases)


def load_config(path: Path) -> Config:
    """Read a TOML config file; every problem is a UserError naming the file."""
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: Config, manifest: dict[str, Any] | None = None) -> str:
    """The config as commented TOML; `manifest` adds an informational [manifest] section."""
    lines: list[str] = []
    for name, section in config.sections():
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            lines.append(f"# {help_for(f.name)}")
            lines.append(
                f"{f.name} = {_toml_value(value)}"
                if value is not None
                else f"# {f.name} =  (not set)"
            )
        lines.append("")
    for number, phase in enumerate(config.phases, start=2):
        lines.append(f"[[phases]]  # phase {number}, after the one before it ends")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in phase.items())
        lines.append("")
    if manifest:
        lines.append("[manifest]")
        lines.append("# What produced this run; ignored when the file is read as --config.")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in manifest.items())
        lines.append("")
    return "\n".join(lines)


def default_toml() -> str:
    """configs/default.toml: the built-in defaults, commented (a test keeps the file in sync)."""
    header = (
        "# vae-cli's built-in defaults, generated from vae_cli/config.py (the single source):\n"
        "#   python -c 'from vae_cli.config import default_toml; print(default_toml(), end=\"\")'"
        " > configs/default.toml\n"
        "# Copy and edit; every key is optional. Flags given on the command line win.\n"
        "# Run:  vae train --config configs/default.toml\n\n"
    )
    return header + to_toml(Config())
