"""The graph-ready training step equals the plain eager recipe it replaced, bit for bit on CPU."""

from __future__ import annotations

import math

import torch

from vae_cli.config import Config
from vae_cli.data import to_float
from vae_cli.model import elbo_loss
from vae_cli.step import STATS, TrainStep, flatten_parameters
from vae_cli.train import build_model, kl_weight

BATCH, STEPS_PER_EPOCH = 16, 4


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
        self.stats = torch.zeros(len(STATS) - 1, dtype=torch.float64)

    def __call__(self, images: torch.Tensor, lr: float, beta: float) -> None:
        x = torch.bernoulli(to_float(images), generator=self.binarize)
        self.flat_grad.zero_()
        mu, logvar = self.model.encode(x)
        eps = torch.randn(mu.shape, generator=self.noise)
        z = mu + torch.exp(0.5 * logvar) * eps
        parts = elbo_loss(x, self.model.decode(z), mu, logvar, beta=beta)
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


def test_graph_ready_step_equals_the_plain_eager_step_bit_for_bit(data_dir) -> None:
    from vae_cli.data import load_dataset

    config = Config().replace(
        {"binarize": "dynamic", "kl_warmup_epochs": 1, "lr_schedule": "cosine", "seed": 0}
    )
    images = load_dataset(data_dir, limit=BATCH * 8).train_images
    plain = PlainStep(config)
    model = build_model(config, torch.device("cpu"))
    generators = {
        "noise": torch.Generator().manual_seed(1),
        "binarize": torch.Generator().manual_seed(2),
    }
    graph_ready = TrainStep(model, config, generators)
    poisoned_step = 5
    for step in range(8):
        batch = images[step * BATCH : (step + 1) * BATCH]
        lr = 1e-3 * (1 + math.cos(math.pi * step / 8)) / 2 + 1e-4  # changes every step
        beta = kl_weight(config, step, STEPS_PER_EPOCH)  # warms up over the first 4 steps
        if step == poisoned_step:
            beta = math.inf  # a non-finite loss: the step must be skipped by both
        plain(batch, lr, beta)
        graph_ready(batch, lr, beta)
        assert torch.equal(graph_ready.flat.detach(), plain.flat.detach()), step
    state = graph_ready.optimizer.state_dict(0, lr)["state"][0]
    reference = plain.optimizer.state[plain.flat]
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(state[key], reference[key]), key
    assert torch.equal(graph_ready.stats[: len(plain.stats)], plain.stats)
    assert graph_ready.stats[STATS.index("bad_steps")] == 1
    assert graph_ready.lr_value == lr


def test_the_step_reads_lr_and_beta_from_its_device_tensors() -> None:
    config = Config().replace({"hidden_dim": 32, "latent_dim": 4})
    model = build_model(config, torch.device("cpu"))
    train_step = TrainStep(model, config, {"noise": torch.Generator().manual_seed(0)})
    train_step.set_schedule(3e-4, 0.25)
    assert train_step.lr.item() == 3e-4 and train_step.beta.item() == 0.25
    assert train_step.optimizer.lr.data_ptr() == train_step.lr.data_ptr()
    before = train_step.flat.detach().clone()
    train_step.set_schedule(0.0, 0.25)  # lr 0: an Adam step leaves the weights alone
    train_step.step(torch.rand(8, 784))
    assert torch.equal(train_step.flat.detach(), before)
