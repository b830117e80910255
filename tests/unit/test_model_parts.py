"""Priors and wirings are parts: a prior is one class, and a model with it trains, evaluates
and samples through the same code as the shipped ones; the settings' choices name exactly the
parts there are; old checkpoints' sizes fold into the per-layer lists."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_step

from vae_cli.config.settings import FIELDS, Config, ModelConfig
from vae_cli.model.densities import gaussian_log_density, gaussian_log_density_per_dim
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model.priors import PRIORS, LayerKL, NormalPrior, PriorContext
from vae_cli.model.vae import VAE, prior_noise
from vae_cli.model.wirings import WIRINGS

LOG_4 = math.log(4.0)


class WideNormal(NormalPrior):
    """p(z) = N(0, 4 I): a prior that exists only in this test, written as any other is."""

    exact_kl = False  # estimated from the draw, as a learned prior's would be

    @classmethod
    def from_config(cls, config: object) -> WideNormal:
        return cls()

    def log_prob(self, z: torch.Tensor, context: PriorContext) -> torch.Tensor:
        return gaussian_log_density(z, torch.zeros_like(z), torch.full_like(z, LOG_4))

    def kl(self, z, mu, logvar, context: PriorContext) -> LayerKL:
        wide = torch.full_like(z, LOG_4)
        log_ratio = gaussian_log_density_per_dim(z, mu, logvar)
        return LayerKL(log_ratio - gaussian_log_density_per_dim(z, torch.zeros_like(z), wide))

    def sample(self, component, eps: torch.Tensor, context: PriorContext) -> torch.Tensor:
        return 2.0 * eps

    def grid(self, quantiles: torch.Tensor, context: PriorContext) -> torch.Tensor:
        return 2.0 * quantiles


@pytest.mark.parametrize("wiring", ["chain", "ladder"])
def test_a_new_prior_is_one_class(monkeypatch: pytest.MonkeyPatch, wiring: str) -> None:
    monkeypatch.setitem(PRIORS, "wide", WideNormal)
    config = Config().replace(
        {"latent_dims": (4, 2), "hidden_dims": (16,), "wiring": wiring, "prior": "wide",
         "batch_size": 8, "binarize": "dynamic"}
    )  # fmt: skip
    step = make_step(config)
    images = (torch.rand(1, 8, 784, generator=torch.Generator().manual_seed(0)) * 255).byte()
    for _ in range(3):  # the ELBO trains it ...
        step(images, [1e-3], [1.0])
    assert torch.isfinite(step.stack.flat).all()
    model = step.stack.member(0)
    assert isinstance(model.prior, WideNormal)
    x = torch.rand(6, 784, generator=torch.Generator().manual_seed(1)).bernoulli()
    elbo = evaluate_elbo(model, x)  # ... evaluation reads it ...
    assert len(elbo.kl_per_layer) == 2 and math.isfinite(elbo.loss)
    assert importance_weighted_nll(model, x, 50).nll <= elbo.loss + 1.0
    with torch.no_grad():  # ... and sampling draws from it: z2 = 2 eps, then down the layers
        noise = prior_noise(model, 3, torch.Generator().manual_seed(2))
        top, *_ = model.prior_sample(noise)
        assert torch.equal(top, 2.0 * noise.eps[0])
        assert model.generate_from(noise).shape == (3, 784)
        log_w, _ = model.log_weights(x, [torch.randn(5, 6, d) for d in (4, 2)])
    assert torch.isfinite(log_w).all()


def test_the_settings_choices_name_the_parts_there_are() -> None:
    assert set(FIELDS["prior"][1].metadata["choices"]) == set(PRIORS)
    assert set(FIELDS["wiring"][1].metadata["choices"]) == set(WIRINGS)


@pytest.mark.parametrize(
    ("old", "latent_dims", "hidden_dims"),
    [
        ({"latent_dim": 32, "hidden_dim": 256, "stochastic_layers": 1, "latent2_dim": 50,
          "hidden2_dim": 100}, (32,), (256,)),  # a one-layer checkpoint stored all five
        ({"latent_dim": 100, "hidden_dim": 200, "stochastic_layers": 2, "latent2_dim": 50,
          "hidden2_dim": 100}, (100, 50), (200, 100)),  # configs/quality2.toml before
        ({"stochastic_layers": 2}, (32, 50), (256, 100)),  # the old second layer's defaults
        ({"latent_dim": 8}, (8,), (256,)),
        ({"latent_dims": (64, 32, 16), "latent_dim": 8}, (8, 32, 16), (256,)),
        ({"latent_dims": (64, 32), "stochastic_layers": 1}, (64,), (256,)),
    ],
)  # fmt: skip
def test_old_sizes_fold_into_the_per_layer_lists(
    old: dict, latent_dims: tuple, hidden_dims: tuple
) -> None:
    model = ModelConfig(**old)
    assert (model.latent_dims, model.hidden_dims) == (latent_dims, hidden_dims)
    assert "latent_dim" not in Config(model=model).to_dict()["model"]  # never stored
    assert Config(model=model) == Config().replace({"latent_dims": latent_dims,
                                                    "hidden_dims": hidden_dims})  # fmt: skip


def test_a_one_and_a_two_layer_model_keep_their_checkpoints_parameter_names() -> None:
    """Checkpoints written before the hierarchy load with their keys as they are."""
    one = VAE(ModelConfig())
    assert [name for name, _ in one.named_parameters()][:2] == [
        "encoder.body.0.weight", "encoder.body.0.bias",
    ]  # fmt: skip
    two = VAE(ModelConfig(latent_dims=(100, 50), hidden_dims=(200, 100)))
    modules = [name for name, _ in two.named_children()]
    assert modules == ["encoder", "decoder", "encoder2", "decoder2", "prior"]
    assert two.decoder.body[4].out_features == 784 and two.encoder2.mu.out_features == 50


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_output_bias_data_starts_the_decoder_at_the_pixel_means(arch: str) -> None:
    """With the last layer's weights at zero, the decoder gives every pixel its mean over
    the training images (a conv decoder, which has one bias: their overall mean)."""
    from vae_cli.model.vae import start_at_the_data_mean

    model = VAE(ModelConfig(arch=arch, latent_dims=(2,), hidden_dims=(8,)))
    means = torch.linspace(0.0, 1.0, 784)
    start_at_the_data_mean(model, means)
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            if parameter is not model.decoder.output_bias():
                parameter.zero_()
        pixels = torch.sigmoid(model.decode(torch.zeros(1, 2)))[0]
    expected = means.clamp(1e-3, 1 - 1e-3) if arch == "mlp" else means.mean().expand(784)
    torch.testing.assert_close(pixels, expected)
