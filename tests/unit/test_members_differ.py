"""A population whose members differ in what members may differ in (learning rate and its
schedule, Adam's beta2, beta and its warm-up, free bits, gradient clipping): each member trains
as the single run with its own settings. Also stacked conv, two-layer and IWAE models, and
VampPriors (each member with its own pseudo-inputs). Synthetic images, no MNIST."""

from __future__ import annotations

import pytest
import torch

from vae_cli.config.schedule import kl_weight, learning_rate
from vae_cli.config.settings import Config
from vae_cli.training.graphs import build_step
from vae_cli.training.loop import build_model
from vae_cli.training.stack import Stack
from vae_cli.training.streams import make_generators

STEPS, BATCH, STEPS_PER_EPOCH = 12, 16, 4
# How far a member may be from the single run with its settings, relative to how far training
# moved the weights: rounding only (measured: 0 for the MLP, 3e-6 conv, 2e-5 to 1.2e-3 IWAE
# with DReG, whose batched products split their sums differently; Adam turns a rounding
# difference in a near-zero gradient into a step of lr, so the figure depends on the CPU). A
# member trained with another member's setting is 8e-2 (Adam's beta2) to 2 (the learning
# rate) away.
TOLERANCE = 1e-2
SMALL = {"hidden_dim": 32, "latent_dim": 4, "batch_size": BATCH}
TWO_LAYER_VAMP = {"prior": "vamp", "pseudo_inputs": 5, "stochastic_layers": 2, "latent2_dim": 3}


def stacked_step(configs: list[Config]) -> object:
    device = torch.device("cpu")
    population = Stack([build_model(config, device) for config in configs])
    generators = [make_generators(config.train.seed, device) for config in configs]
    return build_step(population, configs, generators)


def weights(step: object) -> torch.Tensor:
    """The members' weights (M, P), each in the single model's layout."""
    population = step.stack
    return torch.stack([population.single_layout(row) for row in population.flat.detach()])


def train_steps(configs: list[Config], images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """STEPS steps of a population of `configs` on the same batches, each member with its own
    schedules; returns the members' weights before and after."""
    step = stacked_step(configs)
    before = weights(step)
    for index in range(STEPS):
        batch = images[index * BATCH : (index + 1) * BATCH]
        fraction = index / STEPS
        lrs = [learning_rate(config, fraction) for config in configs]
        betas = [kl_weight(config, index, STEPS_PER_EPOCH) for config in configs]
        step(batch.expand(len(configs), *batch.shape), lrs, betas)
    return before, weights(step)


def distance(trained: torch.Tensor, reference: torch.Tensor, start: torch.Tensor) -> float:
    """How far `trained` is from `reference`, relative to how far training moved it."""
    return ((trained - reference).norm() / (reference - start).norm()).item()


def synthetic_images(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 784, generator=generator) * 255).to(torch.uint8)


MEMBER_SETTINGS = {
    "lr": [{"lr": 1e-3}, {"lr": 3e-3}],
    "cosine": [
        {"lr_schedule": "cosine", "lr": 2e-3, "final_lr": 1e-4},
        {"lr_schedule": "cosine", "lr": 2e-3, "final_lr": 1e-3},
    ],
    "adam_beta2": [{"adam_beta2": 0.999}, {"adam_beta2": 0.9}],
    "beta": [{"beta": 1.0}, {"beta": 0.25}],
    "kl_warmup": [{"kl_warmup_epochs": 0}, {"kl_warmup_epochs": 2}],
    "free_bits": [{"free_bits": 0.0}, {"free_bits": 0.5}],
    "grad_clip": [{"grad_clip": 0.0}, {"grad_clip": 0.05}],
    "seed": [{"seed": 3}, {"seed": 4}],
    "vamp_free_bits": [  # a floor on a VampPrior's marginal KL estimates, in one member only
        {"prior": "vamp", "pseudo_inputs": 6, "free_bits": 0.0},
        {"prior": "vamp", "pseudo_inputs": 6, "free_bits": 0.5},
    ],
}


@pytest.mark.parametrize("setting", MEMBER_SETTINGS)
def test_each_member_trains_as_the_single_run_with_its_own_settings(setting: str) -> None:
    base = Config().replace({**SMALL, "binarize": "dynamic"})
    configs = [base.replace(values) for values in MEMBER_SETTINGS[setting]]
    images = synthetic_images(STEPS * BATCH)
    start, together = train_steps(configs, images)
    alone = [train_steps([config], images)[1][0] for config in configs]
    for member, other in ((0, 1), (1, 0)):
        assert distance(together[member], alone[member], start[member]) < TOLERANCE, member
        # ... and the tolerance tells the settings apart: the other one's run is far away.
        assert distance(together[member], alone[other], start[member]) > 5 * TOLERANCE, member


@pytest.mark.parametrize(
    "model",
    [
        {"arch": "conv"},
        {"stochastic_layers": 2, "latent2_dim": 3, "hidden2_dim": 16},
        {"objective": "iwae", "k": 3, "dreg": True, "stochastic_layers": 2, "latent2_dim": 3},
        {"prior": "vamp", "pseudo_inputs": 6},
        {"prior": "vamp", "pseudo_inputs": 6, "free_bits": 0.3},
        {**TWO_LAYER_VAMP, "objective": "iwae", "k": 3, "dreg": True},
    ],
    ids=["conv", "two-layer", "two-layer-iwae-dreg", "vamp", "vamp-floored", "two-layer-vamp-dreg"],
)
def test_stacked_models_of_every_kind_train_as_their_single_runs(model: dict) -> None:
    base = Config().replace({**SMALL, "binarize": "dynamic", **model})
    configs = [base.replace({"seed": 1, "lr": 1e-3}), base.replace({"seed": 2, "lr": 2e-3})]
    images = synthetic_images(STEPS * BATCH, seed=1)
    start, together = train_steps(configs, images)
    for member, config in enumerate(configs):
        alone = train_steps([config], images)[1][0]
        assert distance(together[member], alone, start[member]) < TOLERANCE, member


def test_every_per_member_setting_is_exercised() -> None:
    """A setting a population may vary per member must be varied above, or it is untested."""
    from vae_cli.config.settings import member_keys

    exercised = {key for values in MEMBER_SETTINGS.values() for v in values for key in v}
    assert set(member_keys()) <= exercised
