"""Each setting's rules live in its field: a dummy setting added with `setting(...)` is
resumable, per phase, per member, searchable and memory-sizing exactly as its metadata says,
through the code that enforces each rule (nothing else lists it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vae_cli.config import settings
from vae_cli.config.settings import Config, TrainConfig, setting
from vae_cli.errors import UserError


def add_dummy(monkeypatch: pytest.MonkeyPatch, **rules: Any) -> None:
    """A `dummy` float setting in [train] with the given rules, known everywhere."""
    # "float" as a string, as every settings module annotation reads (postponed annotations).
    fields = [("dummy", "float", setting(1.0, "A setting for this test.", minimum=0, **rules))]
    train = dataclasses.make_dataclass("TrainWithDummy", fields, bases=(TrainConfig,))
    monkeypatch.setitem(settings.SECTION_TYPES, "train", train)
    monkeypatch.setitem(settings.FIELDS, "dummy", ("train", dataclasses.fields(train)[-1]))


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


def test_the_rules_of_the_real_settings() -> None:
    """What the old lists said, now read from the fields."""
    from vae_cli.config.settings import member_keys, phase_keys, resumable, rule

    assert set(member_keys()) == {
        "seed", "lr", "final_lr", "beta", "kl_warmup_epochs", "free_bits", "grad_clip",
        "adam_beta2",
    }  # fmt: skip
    assert set(phase_keys()) == {
        "epochs", "time_budget", "objective", "k", "dreg", "lr", "lr_schedule", "final_lr",
        "beta", "kl_warmup_epochs", "free_bits", "grad_clip", "adam_beta2",
    }  # fmt: skip
    runtime = {"device", "amp", "compile", "cuda_graph", "tensorboard", "max_bad_steps"}
    assert {name for name in settings.FIELDS if resumable(name, phased=True)} == runtime
    assert {name for name in settings.FIELDS if resumable(name, phased=False)} == runtime | set(
        phase_keys()
    )
    sizes = {name for name in settings.FIELDS if rule(name, "sizes_memory")}
    assert sizes == {
        "batch_size", "hidden_dim", "latent_dim", "k", "pseudo_inputs", "stochastic_layers",
        "latent2_dim", "hidden2_dim",
    }  # fmt: skip
    assert {name for name in settings.FIELDS if rule(name, "unsearchable")} == {
        "device", "amp", "compile", "cuda_graph", "max_bad_steps", "dataset", "limit",
        "validation",
    }  # fmt: skip
