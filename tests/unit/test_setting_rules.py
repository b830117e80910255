"""Each setting's rules live in its field: a dummy setting added with `setting(...)` is
resumable, per phase, per member, searchable and memory-sizing exactly as its metadata says,
through the code that enforces each rule (nothing else lists it)."""

from __future__ import annotations

import pytest
from conftest import add_dummy

from vae_cli.config import settings
from vae_cli.config.settings import Config
from vae_cli.errors import UserError

EVERYTHING = dict(resumable=True, per_phase=True, per_member=True, sizes_memory=True)
NOTHING = dict(unsearchable="a test says so")


def stored_run() -> Config:
    return Config().replace({"dummy": 1.0})


def test_a_resume_changes_the_dummy_only_if_it_is_resumable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vae_cli.commands.resume import resumed_config

    add_dummy(monkeypatch, **EVERYTHING)
    assert resumed_config(stored_run(), {"dummy": 2.0}).value("dummy") == 2.0
    add_dummy(monkeypatch, **NOTHING)
    with pytest.raises(UserError, match="--dummy 2: the resumed run was trained with --dummy 1"):
        resumed_config(stored_run(), {"dummy": 2.0})


def test_a_phase_sets_the_dummy_only_if_it_is_per_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    from vae_cli.config.toml import parse_phases

    add_dummy(monkeypatch, **EVERYTHING)
    assert parse_phases([{"epochs": 1, "dummy": 3}], "f.toml") == ({"epochs": 1, "dummy": 3.0},)
    add_dummy(monkeypatch, **NOTHING)
    with pytest.raises(UserError, match="dummy cannot change between phases"):
        parse_phases([{"epochs": 1, "dummy": 3}], "f.toml")


def test_trials_differing_in_the_dummy_share_a_stack_only_if_it_is_per_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vae_cli.commands.tune import group_by_shape

    drawn = [("trial 0", {"dummy": 1.0}), ("trial 1", {"dummy": 2.0})]
    add_dummy(monkeypatch, **EVERYTHING)
    assert len(group_by_shape(drawn, Config())) == 1
    add_dummy(monkeypatch, **NOTHING)
    assert len(group_by_shape(drawn, Config())) == 2


def test_a_sweep_searches_the_dummy_unless_it_says_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from vae_cli.config.search import parse_dimension

    add_dummy(monkeypatch, **EVERYTHING)
    dimension = parse_dimension("dummy", {"low": 0.5, "high": 2.0}, "[search] dummy")
    assert (dimension.low, dimension.high) == (0.5, 2.0)
    add_dummy(monkeypatch, **NOTHING)
    with pytest.raises(UserError, match="cannot be searched: a test says so"):
        parse_dimension("dummy", {"low": 0.5, "high": 2.0}, "[search] dummy")


def test_the_memory_check_sizes_the_dummy_only_if_it_sizes_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vae_cli.config.search import Dimension, largest_sizes

    space = [Dimension("dummy", "float", low=0.5, high=4.0)]
    add_dummy(monkeypatch, **EVERYTHING)
    assert largest_sizes(space) == {"dummy": 4.0}
    add_dummy(monkeypatch, **NOTHING)
    assert largest_sizes(space) == {}


def test_a_setting_that_shapes_the_model_is_never_resumable_nor_per_member() -> None:
    """Whatever changes a model's parameters' shapes cannot change on resume (the checkpoint
    could not load) nor differ between stacked members (one buffer holds them all)."""
    import torch

    from vae_cli.config.settings import resumable, rule
    from vae_cli.model.vae import VAE

    def shapes(config: Config) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            return {k: tuple(p.shape) for k, p in VAE(config.model).named_parameters()}

    other = {
        "arch": "conv", "latent_dims": (7, 3), "hidden_dims": (9,), "wiring": "skip",
        "block": "gated", "activation": "tanh", "prior": "vamp", "pseudo_inputs": 7,
        "latent_dim": 7, "hidden_dim": 9, "stochastic_layers": 2, "latent2_dim": 5,
        "hidden2_dim": 6,
    }  # fmt: skip
    base = Config().replace({"latent_dims": (4, 2), "hidden_dims": (8,), "prior": "vamp"})
    shaping = {name for name, value in other.items() if shapes(base.replace({name: value}))
               != shapes(base)}  # fmt: skip
    assert {"latent_dims", "hidden_dims", "wiring", "block", "arch", "pseudo_inputs"} <= shaping
    for name in shaping:
        assert not resumable(name, phased=False) and not rule(name, "per_member"), name


def test_a_setting_that_sizes_memory_grows_the_step_it_is_checked_with() -> None:
    """Each sizes_memory setting, raised, raises the memory check's estimate: the sweep's
    check of its largest values is then the most demanding step."""
    from vae_cli.config.settings import rule
    from vae_cli.training.memory import step_bytes

    base = Config().replace(
        {"latent_dims": (8, 4), "hidden_dims": (16, 8), "prior": "vamp", "objective": "iwae"}
    )
    raised = {
        "batch_size": 256, "latent_dims": (16, 8), "hidden_dims": (32, 16), "k": 4,
        "pseudo_inputs": 100, "latent_dim": 16, "hidden_dim": 32, "stochastic_layers": 3,
        "latent2_dim": 8, "hidden2_dim": 16,
    }  # fmt: skip
    sizing = {name for name in settings.FIELDS if rule(name, "sizes_memory")}
    assert sizing == set(raised)
    for name, value in raised.items():
        assert step_bytes(base.replace({name: value}), 60_000) > step_bytes(base, 60_000), name
