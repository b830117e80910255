"""Settings: one dataclass per concern, each field with its rules; TOML in and out, the
checks, the plan of phases, the schedules and a sweep's search space. No torch."""

from vae_cli.config.checks import check_settings
from vae_cli.config.run_options import RunOptions
from vae_cli.config.settings import (
    FIELDS,
    MAX_MEMBERS,
    MAX_SEED,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    flag_name,
)
from vae_cli.config.toml import default_toml, from_dict, load_config, read_config, to_toml
from vae_cli.config.values import apply_flags, check_value, help_for, show_value

__all__ = [
    "FIELDS",
    "MAX_MEMBERS",
    "MAX_SEED",
    "Config",
    "DataConfig",
    "ModelConfig",
    "RunOptions",
    "TrainConfig",
    "apply_flags",
    "check_settings",
    "check_value",
    "default_toml",
    "flag_name",
    "from_dict",
    "help_for",
    "load_config",
    "read_config",
    "show_value",
    "to_toml",
]
