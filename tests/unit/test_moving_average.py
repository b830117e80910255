"""The moving average of the weights (--ema): its update with its warm-up, members that skip
a step, and what a checkpoint keeps of it."""

from __future__ import annotations

import pytest
import torch
from conftest import make_step

from vae_cli.config.settings import Config

SMALL = {"latent_dims": (2,), "hidden_dims": (8,), "batch_size": 4, "ema": 0.9}


def images(seed: int) -> torch.Tensor:
    return (torch.rand(1, 4, 784, generator=torch.Generator().manual_seed(seed)) * 255).byte()


def test_the_average_follows_the_weights_with_a_short_memory_at_first() -> None:
    """average ← d·average + (1 - d)·weights, d = min(ema, (1 + n) / (10 + n)) after n
    averaged steps: 0.1 after none, 2/11 after one, ..., then the ema itself."""
    step = make_step(Config().replace(SMALL))
    stack = step.stack
    assert stack.average is not None and torch.equal(stack.average, stack.flat.detach())
    for n in range(30):
        before = stack.average.clone()
        step(images(n), [1e-2], [1.0])
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * before + (1 - decay) * stack.flat.detach()
        torch.testing.assert_close(stack.average, expected, rtol=0, atol=1e-6)
    assert stack.averaged_steps.tolist() == [30.0]
    assert not torch.equal(stack.average, stack.flat.detach())


def test_a_member_whose_step_is_skipped_keeps_its_average() -> None:
    step = make_step(Config().replace(SMALL), seeds=(0, 1))
    stack = step.stack
    step(images(0).expand(2, -1, -1), [1e-2, 1e-2], [1.0, 1.0])
    stack.freeze(1)  # a failed or pruned member rides along, never updated
    kept = stack.average[1].clone()
    step(images(1).expand(2, -1, -1), [1e-2, 1e-2], [1.0, 1.0])
    assert torch.equal(stack.average[1], kept) and stack.averaged_steps.tolist() == [2.0, 1.0]


def test_a_checkpoint_holds_the_average_as_its_model_and_the_weights_to_resume() -> None:
    step = make_step(Config().replace(SMALL))
    stack = step.stack
    for n in range(3):
        step(images(n), [1e-2], [1.0])
    state = stack.member_state_dict(0, lr=1e-2, beta2=0.99)
    averaged, trained = state["model"], state["training_weights"]
    assert set(averaged) == set(trained) and float(state["averaged_steps"]) == 3.0
    assert all(torch.equal(stack.member(0).state_dict()[k], v) for k, v in averaged.items())
    fresh = make_step(Config().replace(SMALL)).stack
    fresh.load_member_state_dict(0, {k: v.clone() if torch.is_tensor(v) else v
                                     for k, v in state.items()})  # fmt: skip
    assert torch.equal(fresh.flat, stack.flat) and torch.equal(fresh.average, stack.average)
    assert torch.equal(fresh.averaged_steps, stack.averaged_steps)


@pytest.mark.parametrize("ema", [0.0, 0.999])
def test_without_a_moving_average_nothing_is_kept(ema: float) -> None:
    step = make_step(Config().replace({**SMALL, "ema": ema}))
    state = step.stack.member_state_dict(0, lr=1e-2, beta2=0.99)
    assert ("training_weights" in state) == bool(ema)
