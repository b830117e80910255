"""The stacked step of one member equals the plain eager step, on the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import dataset_name, make_step, one_layer_elbo
from torch import nn

from vae_cli.config.schedule import kl_weight
from vae_cli.config.settings import Config
from vae_cli.data.dataset import to_float
from vae_cli.training.loop import build_model

BATCH, STEPS_PER_EPOCH = 16, 4


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=2e-6)


def flatten_parameters(model: nn.Module) -> tuple[nn.Parameter, torch.Tensor]:
    """Every parameter re-homed as a view into one flat buffer, with one flat gradient: the
    recipe's single Adam parameter."""
    parameters = list(model.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in parameters]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in parameters:
        p.data = flat.data[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat, flat.grad


class PlainStep:
    """The eager step as it was before the graph-ready one: a Python-float lr and beta, the
    batch converted and binarized outside the step, statistics summed in float64."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model = build_model(config, torch.device("cpu"))
        self.flat, self.flat_grad = flatten_parameters(self.model)
        offset = 0
        for p in self.model.parameters():  # backward adds into views of the flat gradient
            p.grad = self.flat_grad[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        self.optimizer = torch.optim.Adam(
            [self.flat], lr=config.train.lr, fused=True, betas=(0.9, config.train.adam_beta2)
        )
        self.noise = torch.Generator().manual_seed(1)
        self.binarize = torch.Generator().manual_seed(2)
        self.stats = torch.zeros(9, dtype=torch.float64)  # STATS' order, without the halt

    def __call__(self, images: torch.Tensor, lr: float, beta: float) -> None:
        x = torch.bernoulli(to_float(images), generator=self.binarize)
        self.flat_grad.zero_()
        mu, logvar = self.model.encode(x)
        eps = torch.randn(mu.shape, generator=self.noise)
        z = mu + torch.exp(0.5 * logvar) * eps
        parts = one_layer_elbo(x, self.model.decode(z), mu, logvar, beta=beta)
        parts.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([self.flat], self.config.train.grad_clip)
        finite = bool(torch.isfinite(norm) & torch.isfinite(parts.loss))
        self.optimizer.found_inf = torch.tensor(0.0 if finite else 1.0)
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.step()
        recon, kl = parts.recon.detach().sum(), parts.kl.detach().sum()  # float32 sums
        if finite:
            clipped = float(norm > self.config.train.grad_clip)
            self.stats[:8] += torch.stack(
                [
                    torch.tensor(float(len(x)), dtype=torch.float64),
                    torch.tensor(1.0, dtype=torch.float64),
                    (recon + kl).double(),
                    recon.double(),
                    kl.double(),
                    torch.tensor(clipped, dtype=torch.float64),
                    norm.double(),
                    torch.tensor(0.0, dtype=torch.float64),
                ]
            )
            self.stats[8] = 0
        else:
            self.stats[7] += 1
            self.stats[8] += 1


@pytest.mark.parametrize("grad_clip", [1e9, 1.0], ids=["unclipped", "clipped"])
def test_the_stacked_step_of_one_member_is_the_plain_eager_step(
    grad_clip: float, data_dir: Path
) -> None:
    """Bit for bit while no gradient is clipped. A clipped step differs by rounding only: the
    stack stores Linear weights transposed (see model.Linear), so the gradient norm sums the
    same squares in another order."""
    from vae_cli.data.dataset import load_dataset

    config = (
        Config()
        .replace({"binarize": "dynamic", "kl_warmup_epochs": 1, "lr_schedule": "cosine", "seed": 0})
        .replace({"grad_clip": grad_clip})
    )
    same = torch.equal if grad_clip > 100 else close
    images = load_dataset(data_dir, dataset_name(data_dir), limit=BATCH * 8).train_images
    plain = PlainStep(config)
    graph_ready = make_step(config)
    stack = graph_ready.stack
    poisoned_step = 5
    for step in range(8):
        batch = images[step * BATCH : (step + 1) * BATCH]
        lr = 1e-3 * (1 + math.cos(math.pi * step / 8)) / 2 + 1e-4  # changes every step
        beta = kl_weight(config, step, STEPS_PER_EPOCH)  # warms up over the first 4 steps
        if step == poisoned_step:
            beta = math.inf  # a non-finite loss: the step must be skipped by both
        plain(batch, lr, beta)
        graph_ready(batch.unsqueeze(0), [lr], [beta])
        weights = stack.single_layout(stack.flat.detach()[0])
        assert same(weights, plain.flat.detach()), step
    reference = plain.optimizer.state[plain.flat]
    for key, value in (
        ("exp_avg", stack.adam.exp_avg),
        ("exp_avg_sq", stack.adam.exp_avg_sq),
    ):
        assert same(stack.single_layout(value[0]), reference[key]), key
    assert torch.equal(stack.adam.steps[0], reference["step"])
    (sums,) = stack.stats.read()
    names = (
        "images",
        "steps",
        "loss",
        "recon",
        "kl",
        "clipped",
        "grad_norm",
        "bad_steps",
        "bad_streak",
    )
    summed = torch.tensor([sums[name] for name in names], dtype=torch.float64)
    norm = names.index("grad_norm")  # the same squares summed in another order: rounding
    assert close(summed[norm], plain.stats[norm])
    summed[norm] = plain.stats[norm]
    assert same(summed, plain.stats)
    assert sums["bad_steps"] == 1
    assert graph_ready.lr_values == [lr]


def test_the_step_reads_lr_and_beta_from_its_device_tensors() -> None:
    config = Config().replace({"hidden_dim": 32, "latent_dim": 4})
    train_step = make_step(config)
    train_step.set_schedule([3e-4], [0.25])
    assert train_step.lr.tolist() == [3e-4] and train_step.beta.tolist() == [0.25]
    before = train_step.stack.flat.detach().clone()
    train_step.set_schedule([0.0], [0.25])  # lr 0: an Adam step leaves the weights alone
    train_step.run(torch.rand(1, 8, 784))
    assert torch.equal(train_step.stack.flat.detach(), before)
