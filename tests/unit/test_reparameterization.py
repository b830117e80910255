"""The reparameterization trick, the clamp, the sigma floor and the KL, proved numerically."""

from __future__ import annotations

import math

import pytest
import torch

from vae_cli.config.settings import ModelConfig
from vae_cli.model.densities import gaussian_kl
from vae_cli.model.reparameterize import clamp_logvar, reparameterize
from vae_cli.model.vae import VAE


def draws(mu: torch.Tensor, logvar: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return reparameterize(mu.expand(n, *mu.shape), logvar.expand(n, *logvar.shape), generator)


def test_samples_have_the_requested_mean_and_std() -> None:
    n, mu, sigma = 100_000, 2.0, 0.5
    z = draws(
        torch.tensor([mu], dtype=torch.float64),
        torch.tensor([2 * math.log(sigma)], dtype=torch.float64),
        n,
    ).squeeze(1)
    mean_se = sigma / math.sqrt(n)
    std_se = sigma / math.sqrt(2 * (n - 1))
    assert abs(z.mean().item() - mu) < 4 * mean_se
    assert abs(z.std().item() - sigma) < 4 * std_se


def test_a_batch_of_pairs_each_gets_its_own_distribution() -> None:
    n = 100_000
    mu = torch.tensor([-3.0, 0.0, 1.5, 10.0], dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 2.0, 0.7], dtype=torch.float64)
    z = draws(mu, 2 * sigma.log(), n)  # (n, 4)
    assert ((z.mean(0) - mu).abs() < 4 * sigma / math.sqrt(n)).all()
    assert ((z.std(0) - sigma).abs() < 4 * sigma / math.sqrt(2 * (n - 1))).all()


@pytest.mark.parametrize("logvar_value", [-4.0, 0.0, 3.0])
def test_gradients_are_one_and_half_eps_sigma(logvar_value: float) -> None:
    mu = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    logvar = torch.full((5,), logvar_value, dtype=torch.float64, requires_grad=True)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(3))
    z.sum().backward()
    eps = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigma = math.exp(0.5 * logvar_value)
    torch.testing.assert_close(mu.grad, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(logvar.grad, 0.5 * eps * sigma)


def test_gradcheck_in_float64() -> None:
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)

    def with_fixed_noise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return reparameterize(mu, logvar, torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(with_fixed_noise, (mu, logvar))


def test_clamp_upper_bound_gives_finite_z_and_max_sigma() -> None:
    logvar = torch.tensor([1e4], requires_grad=True)
    z = reparameterize(torch.zeros(1), logvar, torch.Generator().manual_seed(0), max_logvar=10.0)
    assert torch.isfinite(z).all()
    std = torch.exp(0.5 * clamp_logvar(torch.tensor([1e4]), max_logvar=10.0))
    assert std.item() == pytest.approx(math.exp(5.0))
    z.sum().backward()
    assert torch.isfinite(logvar.grad).all()


@pytest.mark.parametrize("min_std", [1e-4, 0.05])
def test_clamp_lower_bound_and_sigma_floor(min_std: float) -> None:
    logvar = torch.tensor([-1e4], requires_grad=True)
    clamped = clamp_logvar(logvar, max_logvar=10.0, min_std=min_std)
    assert torch.exp(0.5 * clamped).item() == pytest.approx(max(math.exp(-5.0), min_std))
    z = reparameterize(torch.zeros(1), logvar, torch.Generator().manual_seed(0), min_std=min_std)
    z.sum().backward()
    assert torch.isfinite(z).all() and torch.isfinite(logvar.grad).all()


def test_values_inside_the_range_pass_unchanged() -> None:
    # The copied bug clamp(max=-m, min=m) would turn every one of these into +m.
    logvar = torch.linspace(-9.9, 9.9, 101)
    torch.testing.assert_close(clamp_logvar(logvar, max_logvar=10.0, min_std=0.0), logvar)
    assert clamp_logvar(torch.tensor([-20.0, 20.0]), max_logvar=10.0, min_std=0.0).tolist() == [
        -10.0,
        10.0,
    ]


def test_mean_only_returns_mu_exactly() -> None:
    model = VAE(ModelConfig(latent_dim=4, hidden_dim=16))
    x = torch.rand(6, 784)
    x_logits, mu, _, z = model(x, mean_only=True)
    assert torch.equal(z, mu)
    assert torch.equal(x_logits, model.decode(mu))


def test_seeded_sampling_repeats_and_other_seeds_differ() -> None:
    mu, logvar = torch.randn(8, 4), torch.randn(8, 4)
    first = reparameterize(mu, logvar, torch.Generator().manual_seed(11))
    again = reparameterize(mu, logvar, torch.Generator().manual_seed(11))
    other = reparameterize(mu, logvar, torch.Generator().manual_seed(12))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_kl_is_zero_at_the_prior() -> None:
    assert torch.equal(gaussian_kl(torch.zeros(3), torch.zeros(3)), torch.zeros(3))


def test_kl_matches_a_monte_carlo_estimate() -> None:
    mu, sigma = (
        torch.tensor([0.7, -1.2], dtype=torch.float64),
        torch.tensor([0.5, 1.6], dtype=torch.float64),
    )
    q = torch.distributions.Normal(mu, sigma)
    z = mu + sigma * torch.randn(
        200_000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    monte_carlo = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).mean(0)
    analytic = gaussian_kl(mu, 2 * sigma.log())
    torch.testing.assert_close(analytic, monte_carlo, atol=0.02, rtol=0.0)
    torch.testing.assert_close(
        analytic, torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
    )
