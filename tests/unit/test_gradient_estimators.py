"""The estimators of `vae gradients` against closed forms: a linear-Gaussian decoder, where the
ELBO's gradient, the pathwise gradient's spread and the exact posterior are known; the model's
terms against its own log weights; the encoder SNR of the IWAE bound."""

from __future__ import annotations

import math

import pytest
import torch

from vae_cli.config.settings import ModelConfig
from vae_cli.model.densities import gaussian_log_density
from vae_cli.model.encoder_snr import encoder_gradients, encoder_snr, signal_to_noise
from vae_cli.model.gradient_estimators import (
    ElboTerms,
    estimate_all,
    model_terms,
    naive_gradient,
    score_baseline,
    standard_normal_kl,
    standard_normal_log_density,
    stl,
)
from vae_cli.model.vae import VAE

D, P, NOISE_STD = 3, 5, 0.7  # latent size, observation size, the decoder's std


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(W z + b, s² I): every gradient of the ELBO is closed-form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> None:
        self.weight, self.bias, self.x = weight, bias, x

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        residual = self.x - z @ self.weight.T - self.bias
        return -0.5 * (residual.pow(2) / NOISE_STD**2 + math.log(2 * math.pi * NOISE_STD**2)).sum(
            -1
        )

    def terms(self) -> ElboTerms:
        return ElboTerms(self.log_likelihood, standard_normal_kl, standard_normal_log_density)

    def elbo_gradient(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """d ELBO / d mu = W^T (x - W mu - b) / s² - mu; d / d logvar = -sigma² |W_d|² / (2 s²)
        - (sigma² - 1) / 2 (the data term's expectation is quadratic in mu and linear in
        sigma²)."""
        variance = logvar.exp()
        grad_mu = self.weight.T @ (self.x - self.weight @ mu - self.bias) / NOISE_STD**2 - mu
        column_norms = self.weight.pow(2).sum(0)
        grad_logvar = -variance * column_norms / (2 * NOISE_STD**2) - 0.5 * (variance - 1)
        return grad_mu, grad_logvar

    def reparam_std_mu(self, logvar: torch.Tensor) -> torch.Tensor:
        """The pathwise gradient for mu is W^T (x - W (mu + sigma eps) - b) / s² - mu: its
        covariance is W^T W diag(sigma²) W^T W / s⁴."""
        gram = self.weight.T @ self.weight
        return torch.diagonal(gram @ torch.diag(logvar.exp()) @ gram).sqrt() / NOISE_STD**2

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact posterior's mean and logvar (diagonal when W's columns are orthogonal)."""
        precision = self.weight.pow(2).sum(0) / NOISE_STD**2 + 1
        mean = self.weight.T @ (self.x - self.bias) / NOISE_STD**2 / precision
        return mean, -precision.log()


def linear_gaussian(orthogonal: bool = False) -> LinearGaussian:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(P, D, generator=generator, dtype=torch.float64)
    if orthogonal:
        q, _ = torch.linalg.qr(torch.randn(P, P, generator=generator, dtype=torch.float64))
        weight = q[:, :D] * torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64)
    bias = torch.randn(P, generator=generator, dtype=torch.float64)
    x = torch.randn(P, generator=generator, dtype=torch.float64)
    return LinearGaussian(weight, bias, x)


MU = torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64)
LOGVAR = torch.tensor([-1.0, 0.2, -0.4], dtype=torch.float64)


def draws(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_unbiased(samples: torch.Tensor, expected: torch.Tensor, sigmas: float = 4.5) -> None:
    """Each dimension's mean within `sigmas` standard errors of the expected value."""
    standard_error = samples.std(0) / math.sqrt(len(samples))
    assert ((samples.mean(0) - expected).abs() <= sigmas * standard_error).all(), (
        samples.mean(0),
        expected,
        standard_error,
    )


def test_every_estimator_is_unbiased_for_the_closed_form_gradient() -> None:
    problem = linear_gaussian()
    estimates = estimate_all(problem.terms(), MU, LOGVAR, draws(40_000))
    grad_mu, grad_logvar = problem.elbo_gradient(MU, LOGVAR)
    for name, estimate in estimates.items():
        assert estimate.mu.shape == estimate.logvar.shape == (40_000, D), name
        assert_unbiased(estimate.mu, grad_mu)
        assert_unbiased(estimate.logvar, grad_logvar)
    # The pathwise estimators are precise enough to pin the value, not only the bias.
    for name in ("reparam", "stl"):
        torch.testing.assert_close(estimates[name].mu.mean(0), grad_mu, atol=0.05, rtol=0.01)
        torch.testing.assert_close(
            estimates[name].logvar.mean(0), grad_logvar, atol=0.05, rtol=0.01
        )


def test_the_pathwise_gradient_has_the_closed_form_spread_and_the_score_function_more() -> None:
    problem = linear_gaussian()
    estimates = estimate_all(problem.terms(), MU, LOGVAR, draws(40_000))
    torch.testing.assert_close(
        estimates["reparam"].mu.std(0), problem.reparam_std_mu(LOGVAR), rtol=0.02, atol=0
    )

    def total_variance(name: str) -> float:
        return (estimates[name].mu.var(0).sum() + estimates[name].logvar.var(0).sum()).item()

    assert total_variance("score") > 20 * total_variance("reparam")
    # The baseline takes away f's large constant part, so most of the score function's noise.
    assert total_variance("score_baseline") < total_variance("score") / 5
    assert total_variance("score_baseline") > total_variance("reparam")


def test_the_leave_one_out_baseline_keeps_the_estimate_unbiased_with_two_draws() -> None:
    """With two draws each baseline is the other draw's f. Were a draw's own f in its
    baseline, the estimate would be halved on average."""
    problem = linear_gaussian()
    pairs = draws(2 * 6_000, seed=3).reshape(6_000, 2, D)
    rows = [score_baseline(problem.terms(), MU, LOGVAR, pair) for pair in pairs]
    grad_mu = torch.cat([mu for mu, _ in rows])
    expected, _ = problem.elbo_gradient(MU, LOGVAR)
    assert_unbiased(grad_mu, expected, sigmas=4)
    assert (grad_mu.mean(0) - 0.5 * expected).abs().max() > 0.2  # the halved one is far off


def test_sticking_the_landing_has_zero_variance_at_the_exact_posterior() -> None:
    problem = linear_gaussian(orthogonal=True)
    mu, logvar = problem.posterior()
    eps = draws(500)
    stl_mu, stl_logvar = stl(problem.terms(), mu, logvar, eps)
    assert stl_mu.abs().max() < 1e-9 and stl_logvar.abs().max() < 1e-9
    reparam = estimate_all(problem.terms(), mu, logvar, eps)["reparam"]
    assert reparam.mu.std(0).min() > 0.1  # the same draws: the score term's noise remains
    assert reparam.mu.mean(0).abs().max() < 5 * (reparam.mu.std(0) / math.sqrt(500)).max()


def test_a_draw_outside_the_graph_gives_exactly_zero() -> None:
    problem = linear_gaussian()
    grad_mu, grad_logvar = naive_gradient(problem.terms(), MU, LOGVAR, draws(100))
    assert torch.equal(grad_mu, torch.zeros(100, D, dtype=torch.float64))
    assert torch.equal(grad_logvar, torch.zeros(100, D, dtype=torch.float64))


MODELS = {
    "normal": ModelConfig(latent_dim=4, hidden_dim=24),
    "vamp": ModelConfig(latent_dim=4, hidden_dim=24, prior="vamp", pseudo_inputs=5),
    "two layers": ModelConfig(latent_dims=(4, 3), hidden_dims=(24, 8)),
    "two layers, vamp": ModelConfig(
        latent_dims=(4, 3), hidden_dims=(24, 8), prior="vamp", pseudo_inputs=5
    ),
    "three layers, skip": ModelConfig(latent_dims=(4, 3, 2), hidden_dims=(24, 8, 6), wiring="skip"),
    "three layers, ladder, vamp": ModelConfig(
        latent_dims=(4, 3, 2),
        hidden_dims=(24, 8, 6),
        wiring="ladder",
        prior="vamp",
        pseudo_inputs=5,
    ),
}


@pytest.mark.parametrize("kind", MODELS)
def test_the_model_terms_are_the_models_own_log_weights(kind: str) -> None:
    """log p(x, z) - log q(z|x) of the terms `vae gradients` differentiates equals the
    model's log w for the same noise, whatever its depth, wiring and prior (a top-down
    wiring's layers above z1 at their means: their noise zero); with the normal prior and one
    layer the analytic KL is what the ELBO subtracts."""
    model = VAE(MODELS[kind])
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 784, generator=generator).bernoulli(generator=generator)
    noise = [torch.randn(6, 1, size, generator=generator) for size in model.latent_dims]
    if model.wiring.top_down:
        noise[1:] = [torch.zeros_like(n) for n in noise[1:]]
    with torch.no_grad():
        log_w, _ = model.log_weights(x, noise)
        mu, logvar = (t[0] for t in model.encode(x))
        terms = model_terms(model, x, [n[:, 0] for n in noise[1:]])
        z = mu + torch.exp(0.5 * logvar) * noise[0][:, 0]
        from_terms = terms.log_joint(z) - gaussian_log_density(z, mu, logvar)
    torch.testing.assert_close(from_terms, log_w[:, 0], rtol=1e-5, atol=1e-4)
    assert (terms.analytic_kl is not None) == (kind == "normal")
    if kind == "normal":
        torch.testing.assert_close(
            terms.analytic_kl(mu, logvar), model.elbo(x, [noise[0][0]]).kl[0], rtol=1e-5, atol=0
        )


def test_the_encoder_snr_averages_each_weights_mean_over_std() -> None:
    rows = torch.tensor(
        [[1.0, 5.0, 2.0, -1.0], [3.0, 5.0, -2.0, -3.0], [2.0, 5.0, 0.0, -2.0]], dtype=torch.float64
    )
    # Weight 0: mean 2, std 1; weight 1 never moves (no ratio); weight 2: mean 0; weight 3:
    # mean -2, std 1 (the ratio takes |E g|).
    assert signal_to_noise(rows) == pytest.approx((2.0 + 0.0 + 2.0) / 3)


def test_iwae_and_dreg_estimate_the_same_encoder_gradient_and_dreg_is_less_noisy() -> None:
    model = VAE(ModelConfig(latent_dim=3, hidden_dim=16))
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(1, 784, generator=generator).bernoulli(generator=generator)
    plain = torch.stack(list(encoder_gradients(model, x, 16, 400, seed=5, dreg=False)))
    dreg = torch.stack(list(encoder_gradients(model, x, 16, 400, seed=5, dreg=True)))
    parameters = sum(p.numel() for p in model.encoder.parameters())
    assert plain.shape == dreg.shape == (400, parameters)
    assert plain.dtype == torch.float64
    # Both unbiased for the bound's gradient: their means agree within the noise.
    difference = (plain - dreg).mean(0)
    standard_error = (plain - dreg).std(0) / math.sqrt(400)
    moving = standard_error > 0
    assert (difference[moving].abs() <= 5 * standard_error[moving]).float().mean() > 0.99
    assert (plain.var(0).sum() > 2 * dreg.var(0).sum()).item()
    again = torch.stack(list(encoder_gradients(model, x, 16, 400, seed=5, dreg=True)))
    assert torch.equal(again, dreg)
    other_seed = next(encoder_gradients(model, x, 16, 1, seed=6, dreg=True))
    assert not torch.equal(other_seed, dreg[0])
    snr = encoder_snr(model, x, 16, 400, seed=5)
    assert snr["dreg"] > snr["iwae"] > 0
    assert snr["iwae"] == pytest.approx(
        (plain.mean(0).abs() / plain.std(0))[plain.std(0) > 0].mean().item(), rel=1e-9
    )
