"""The config: defaults, TOML round trip, precedence (flag > file > default), shipped files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vae_cli.config.settings import FIELDS, Config
from vae_cli.config.toml import default_toml, from_dict, load_config, to_toml
from vae_cli.config.values import apply_flags, help_for
from vae_cli.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_documented_model() -> None:
    config = Config()
    assert (config.model.latent_dims, config.model.hidden_dims) == ((32,), (256,))
    assert (config.model.max_logvar, config.model.min_std) == (10.0, 1e-4)
    assert (config.train.epochs, config.train.batch_size, config.train.grad_clip) == (10, 128, 1.0)
    assert config.data.binarize == "none" and config.train.device == "auto"


def test_every_field_has_a_help_text() -> None:
    assert all(field.metadata["help"] for _, field in FIELDS.values())


def test_help_texts_state_the_upper_bounds() -> None:
    assert "At most 4096. (default: 32)" in help_for("latent_dims")
    assert "At most 4294967295." in help_for("seed")
    assert "At most" not in help_for("lr")  # unbounded above


def test_toml_round_trip(tmp_path: Path) -> None:
    config = Config().replace(
        {"latent_dim": 7, "lr": 3e-4, "binarize": "dynamic", "limit": 100, "amp": True}
    )
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config, {"command": "vae train"}))
    assert load_config(path) == config


def test_shipped_default_toml_is_the_builtin_defaults() -> None:
    assert load_config(REPO / "configs/default.toml") == Config()
    assert (REPO / "configs/default.toml").read_text() == default_toml()


# Every shipped training config (tune.toml is a search space, read by its own test).
SHIPPED = sorted(p.stem for p in (REPO / "configs").glob("*.toml") if p.stem != "tune")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    from vae_cli.config.checks import check_settings

    config = load_config(REPO / f"configs/{name}.toml")
    assert isinstance(config, Config)
    check_settings(config)  # e.g. quality.toml's cosine phases decay, never rise


def test_the_two_hour_recipe_is_the_full_one_in_fewer_epochs() -> None:
    """quality3_short.toml differs from quality3.toml only in its epochs and warm-up, so the
    full recipe's scaled-down bit-exact rerun (tests/cli/test_phases.py) stands for it too."""
    full = load_config(REPO / "configs/quality3.toml")
    short = load_config(REPO / "configs/quality3_short.toml")
    assert (short.train.epochs, short.train.kl_warmup_epochs) == (300, 30)
    assert [phase["epochs"] for phase in short.phases] == [75]
    shortened = full.replace({"epochs": 300, "kl_warmup_epochs": 30})
    assert short == dataclasses.replace(shortened, phases=({**full.phases[0], "epochs": 75},))
    assert short.train.time_budget is None and "time_budget" not in short.phases[0]


def test_flag_beats_file_beats_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 3\nlr = 0.01\n[model]\nlatent_dim = 8\n")
    config = apply_flags(load_config(path), {"epochs": 5, "latent_dim": None, "seed": None})
    assert config.train.epochs == 5  # flag
    assert config.train.lr == 0.01 and config.model.latent_dims == (8,)  # file
    assert config.train.batch_size == 128  # default


def test_integers_are_accepted_for_float_keys() -> None:
    assert from_dict({"train": {"lr": 1}}, "x").train.lr == 1.0


def test_booleans_are_not_integers() -> None:
    with pytest.raises(UserError, match="epochs: expected an integer"):
        from_dict({"train": {"epochs": True}}, "x")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[run]\nseeds = "3-1"\n', "[run] seeds '3-1': the range 3-1 runs backwards"),
        ("[run]\nseeds = 4\n", '[run] seeds: expected a string like "0-7" or "0,3,5"'),
        ('[run]\nseed = "0-3"\n', "[run] seed: unknown key"),
        ('[train]\nseeds = "0-3"\n', "[train] seeds: belongs in [run], not [train]"),
    ],
)
def test_seeds_in_a_file_are_checked_by_the_loader(
    text: str, fragment: str, tmp_path: Path
) -> None:
    from vae_cli.config.toml import read_config

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        read_config(path)
    assert str(error.value).startswith(f"{path}: ") and fragment in str(error.value)


def test_seeds_in_a_file_make_a_population_and_are_no_training_setting(tmp_path: Path) -> None:
    from vae_cli.config.settings import FIELDS
    from vae_cli.config.toml import read_config

    path = tmp_path / "c.toml"
    path.write_text('[run]\nseeds = "0-2,5"\n[train]\nepochs = 2\n')
    loaded = read_config(path)
    assert loaded.run.seeds == (0, 1, 2, 5) and loaded.config.train.epochs == 2
    assert "seeds" not in FIELDS and "seeds" not in loaded.config.to_dict()["train"]


def test_a_config_file_records_the_settings_it_set_itself(tmp_path: Path) -> None:
    from vae_cli.config.toml import read_config

    path = tmp_path / "c.toml"
    path.write_text(
        "[train]\nepochs = 2\nseed = 0\n[model]\nlatent_dim = 4\n"
        "[[phases]]\nepochs = 1\nlr = 1e-4\n"
    )
    loaded = read_config(path)
    assert loaded.keys == {"epochs", "seed", "latent_dim"}  # a default-valued seed counts too
    assert loaded.config.train.seed == 0 and loaded.config.phases == ({"epochs": 1, "lr": 1e-4},)
