"""Evaluation maths: the importance-weighted NLL, active units, and the training objectives."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import one_layer_elbo

from vae_cli.config.settings import Config, ModelConfig
from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_log_density
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model.reparameterize import reparameterize
from vae_cli.model.vae import VAE
from vae_cli.training.loop import kl_weight, learning_rate


def tiny_model(latent_dim: int = 2) -> VAE:
    return VAE(ModelConfig(latent_dim=latent_dim, hidden_dim=16)).eval()


def iwae_noise(x: torch.Tensor, model: VAE, k: int, seed: int) -> list[torch.Tensor]:
    """k standard-normal draws per image of the model's one layer, (k, B, D)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(k, len(x), model.latent_dims[0], generator=generator)]


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 784), 0.3), generator=torch.Generator().manual_seed(seed))


def test_iw_with_one_sample_is_the_single_sample_elbo() -> None:
    model, x = tiny_model(), binary_images(5)
    estimate = importance_weighted_nll(model, x, 1, seed=9)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = reparameterize(
            mu, logvar, torch.Generator().manual_seed(9), max_logvar=math.inf, min_std=0.0
        )
        elbo = (
            bernoulli_log_likelihood(model.decode(z), x)
            + gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
            - gaussian_log_density(z, mu, logvar)
        )
    assert estimate.nll == pytest.approx(-elbo.mean().item(), rel=1e-6)


def test_iw_with_one_sample_averages_to_the_analytic_elbo() -> None:
    model, x = tiny_model(), binary_images(4000)
    estimate = importance_weighted_nll(model, x, 1)
    analytic = evaluate_elbo(model, x).loss
    assert abs(estimate.nll - analytic) < 4 * estimate.stderr


def exact_nll_by_quadrature(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) for a 1-D latent: integrate p(x|z) p(z) on a fine grid."""
    z = torch.linspace(-8, 8, 8001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        logits = model.decode(z.float()).double().unsqueeze(1).expand(-1, len(x), -1)
        log_px_z = bernoulli_log_likelihood(logits, x)  # (grid, B)
    log_joint = log_px_z + (-0.5 * (math.log(2 * math.pi) + z.pow(2)))  # (grid, B)
    return -(torch.logsumexp(log_joint, dim=0) + math.log(z[1, 0] - z[0, 0]))


def test_iw_estimate_converges_to_the_exact_likelihood() -> None:
    model, x = tiny_model(latent_dim=1), binary_images(8).double()
    exact = exact_nll_by_quadrature(model, x).mean().item()
    errors = [abs(importance_weighted_nll(model, x.float(), k).nll - exact) for k in (1, 20, 5000)]
    assert errors[2] < 0.05
    assert errors[2] < errors[0]


def test_iw_memory_bound_chunks_the_samples_without_biasing_the_estimate() -> None:
    model, x = tiny_model(), binary_images(6)
    whole = importance_weighted_nll(model, x, 500, max_elements=10**8)
    chunked = importance_weighted_nll(model, x, 500, max_elements=784 * 6 * 7)  # chunks of 7
    # Other chunk sizes draw other noise, so the two agree only statistically.
    assert whole.nll == pytest.approx(chunked.nll, abs=0.2)
    assert whole.bits_per_dim == pytest.approx(whole.nll / (784 * math.log(2)))


class ConstructedEncoder(torch.nn.Module):
    """mu_0 follows the first pixel, mu_1 follows it 20x weaker, mu_2 is constant."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = x[:, :1]
        mu = torch.cat([first, 0.05 * first, torch.full_like(first, 3.0)], dim=1)
        return mu, torch.zeros_like(mu)


def test_active_units_on_a_constructed_example() -> None:
    model = VAE(ModelConfig(latent_dim=3, hidden_dim=4))
    model.encoder = ConstructedEncoder()
    x = torch.zeros(1000, 784)
    x[::2, 0] = 1.0  # variance of the first pixel: 0.25
    result = evaluate_elbo(model, x)
    assert result.active_units == 1  # 0.25 > 0.01 > 0.25 * 0.05**2 > 0
    assert result.kl_per_dim[0] == pytest.approx(0.5 * 9.0)  # the constant mu = 3 dimension


def test_free_bits_floor_each_dimension_in_the_objective_only() -> None:
    x, logits = torch.zeros(2, 784), torch.zeros(2, 784)
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # KL per dim: 0.5 and 0
    logvar = torch.zeros(2, 2)
    plain = one_layer_elbo(x, logits, mu, logvar)
    floored = one_layer_elbo(x, logits, mu, logvar, free_bits=0.75)
    assert floored.loss - plain.loss == pytest.approx((0.75 - 0.5) + 0.75)
    assert torch.equal(floored.kl, plain.kl)  # reported KL stays the true one


def test_beta_scales_the_kl_term() -> None:
    x, logits, logvar = torch.zeros(1, 784), torch.zeros(1, 784), torch.zeros(1, 2)
    mu = torch.tensor([[2.0, 0.0]])  # KL = 2
    assert one_layer_elbo(x, logits, mu, logvar, beta=0.25).loss == pytest.approx(
        784 * math.log(2) + 0.25 * 2.0
    )


def test_kl_warmup_is_linear_in_steps() -> None:
    config = Config().replace({"beta": 2.0, "kl_warmup_epochs": 2})
    assert [kl_weight(config, step, 10) for step in (0, 5, 10, 20, 40)] == [0, 0.5, 1.0, 2.0, 2.0]
    assert kl_weight(Config(), 0, 10) == 1.0


def test_cosine_schedule_runs_from_lr_to_final_lr() -> None:
    config = Config().replace({"lr": 1e-3, "final_lr": 1e-4, "lr_schedule": "cosine"})
    assert learning_rate(config, 0.0) == pytest.approx(1e-3)
    assert learning_rate(config, 0.5) == pytest.approx(5.5e-4)
    assert learning_rate(config, 1.0) == pytest.approx(1e-4)
    assert learning_rate(Config(), 0.7) == Config().train.lr


def test_iwae_objective_with_one_sample_is_the_elbo_estimate() -> None:
    model, x = tiny_model(), binary_images(3)
    mu, logvar = model.encode(x)
    parts = model.iwae(x, iwae_noise(x, model, 1, seed=4))
    z = reparameterize(
        mu, logvar, torch.Generator().manual_seed(4), max_logvar=math.inf, min_std=0.0
    )
    log_w = (
        bernoulli_log_likelihood(model.decode(z), x)
        + gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        - gaussian_log_density(z, mu, logvar)
    )
    assert parts.loss.item() == pytest.approx(-log_w.mean().item(), rel=1e-6)


def test_iwae_objective_is_tighter_than_the_elbo() -> None:
    model, x = tiny_model(), binary_images(200)
    single = model.iwae(x, iwae_noise(x, model, 1, seed=0))
    many = model.iwae(x, iwae_noise(x, model, 50, seed=0))
    assert many.loss < single.loss


def prior_matching_model() -> VAE:
    """q(z|x) = p(z) = N(0, I) and logits 0 whatever z: every importance weight is exactly
    p(x|z) = 2^-784, so log (1/K) Σ_k w_k = -784 log 2 for every K, the -log K included."""
    model = tiny_model(latent_dim=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return model


@pytest.mark.parametrize("k", [1, 5, 64])
def test_the_iwae_objective_divides_by_k(k: int) -> None:
    model, x = prior_matching_model(), binary_images(6)
    parts = model.iwae(x, iwae_noise(x, model, k, seed=0))
    assert parts.loss.item() == pytest.approx(784 * math.log(2), rel=1e-6)


@pytest.mark.parametrize(("k", "max_elements"), [(5, 1 << 24), (7, 3 * 784)])
def test_the_iw_estimate_divides_by_k_also_across_chunks(k: int, max_elements: int) -> None:
    model, x = prior_matching_model(), binary_images(6)
    estimate = importance_weighted_nll(model, x, k, max_elements=max_elements)
    assert estimate.nll == pytest.approx(784 * math.log(2), rel=1e-6)  # float32 log weights
