"""The two-stochastic-layer model and DReG: each layer's KL, the IW-NLL against exact
quadrature, the doubly reparameterized gradient computed two ways, and ancestral sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from vae_cli.config.settings import ModelConfig
from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_kl
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model.vae import VAE


def two_layers(latent_dim: int = 3, latent2_dim: int = 2, seed: int = 0, scale: float = 3.0) -> VAE:
    torch.manual_seed(seed)
    config = ModelConfig(
        stochastic_layers=2,
        latent_dim=latent_dim,
        latent2_dim=latent2_dim,
        hidden_dim=16,
        hidden2_dim=8,
        activation="tanh",
    )
    model = VAE(config).double().eval()
    with torch.no_grad():  # larger weights than at initialisation: KLs well away from 0
        for parameter in model.parameters():
            parameter.mul_(scale)
    return model


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 784), 0.3, dtype=torch.float64), generator=generator)


def independent_terms(model: VAE, x: torch.Tensor, eps1: torch.Tensor, eps2: torch.Tensor):
    """log p(x|z1), log q(z1|x) - log p(z1|z2) and log q(z2|z1) - log p(z2) written out with
    torch.distributions, from the networks' raw outputs."""
    mu1, logvar1 = model.encoder(x)
    logvar1 = logvar1.clamp(-10, 10)
    z1 = mu1 + (0.5 * logvar1).exp() * eps1
    mu2, logvar2 = model.encoder2(z1)
    logvar2 = logvar2.clamp(-10, 10)
    z2 = mu2 + (0.5 * logvar2).exp() * eps2
    below_mu, below_logvar = model.decoder2(z2)
    below_logvar = below_logvar.clamp(-10, 10)
    log_px = bernoulli_log_likelihood(model.decoder(z1), x)
    kl1 = (
        Normal(mu1, (0.5 * logvar1).exp()).log_prob(z1)
        - Normal(below_mu, (0.5 * below_logvar).exp()).log_prob(z1)
    ).sum(-1)
    kl2 = (Normal(mu2, (0.5 * logvar2).exp()).log_prob(z2) - Normal(0.0, 1.0).log_prob(z2)).sum(-1)
    return log_px, kl1, kl2, (mu2, logvar2)


def test_each_layers_kl_is_the_monte_carlo_one() -> None:
    model, x = two_layers(), binary_images(4)
    draws = 20000
    generator = torch.Generator().manual_seed(1)
    eps1 = torch.randn(draws, 4, 3, generator=generator, dtype=torch.float64)
    eps2 = torch.randn(draws, 4, 2, generator=generator, dtype=torch.float64)
    images = x.expand(draws, -1, -1).reshape(-1, 784)  # (draws x 4, 784)
    eps1, eps2 = eps1.reshape(-1, 3), eps2.reshape(-1, 2)
    with torch.no_grad():
        parts = model.elbo(images, [eps1, eps2])
        log_px, kl1, kl2_sampled, (mu2, logvar2) = independent_terms(model, images, eps1, eps2)
    # The same draws, written out independently: the same numbers.
    torch.testing.assert_close(parts.recon, -log_px)
    kl_total = parts.kl  # (draws, 4): z1's single-sample term plus z2's analytic KL
    torch.testing.assert_close(kl_total, kl1 + gaussian_kl(mu2, logvar2).sum(-1))
    # z2's analytic KL (at each sampled z1) is the mean of its sampled log-density ratio.
    analytic, sampled = gaussian_kl(mu2, logvar2).sum(-1), kl2_sampled
    error = (sampled - analytic).mean() / ((sampled - analytic).std() / math.sqrt(sampled.numel()))
    assert abs(error.item()) < 4
    assert analytic.mean() > 0.1 and kl1.mean() > 0.1  # both layers carry information


def exact_nll_by_quadrature(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) = -log ∫∫ p(x|z1) p(z1|z2) p(z2) dz1 dz2 on a grid (1-D z1 and z2)."""
    grid = torch.linspace(-7, 7, 701, dtype=torch.float64)
    step = (grid[1] - grid[0]).item()
    z2 = grid.unsqueeze(1)  # (G2, 1)
    below_mu, below_logvar = model.prior_below(z2)  # (G2, 1) each
    log_pz1_z2 = Normal(below_mu, (0.5 * below_logvar).exp()).log_prob(grid.unsqueeze(0))
    log_p_z2 = Normal(0.0, 1.0).log_prob(grid)  # (G2,)
    logits = model.decode(grid.unsqueeze(1))  # (G1, 784)
    log_px_z1 = bernoulli_log_likelihood(logits.unsqueeze(1).expand(-1, len(x), -1), x)
    # log p(x) = logsumexp over (z2, z1) of log p(z2) + log p(z1|z2) + log p(x|z1), times cells.
    joint = log_p_z2[:, None, None] + log_pz1_z2[:, :, None] + log_px_z1[None, :, :]
    return -(torch.logsumexp(joint.flatten(0, 1), dim=0) + 2 * math.log(step))


def test_two_layer_iw_nll_converges_to_the_exact_likelihood() -> None:
    model, x = two_layers(latent_dim=1, latent2_dim=1, scale=1.0), binary_images(6)
    with torch.no_grad():
        exact = exact_nll_by_quadrature(model, x).mean().item()
    errors = [abs(importance_weighted_nll(model, x, k).nll - exact) for k in (1, 5000)]
    assert errors[1] < 0.05 < errors[0], errors


def test_the_elbo_of_each_layer_is_reported_by_evaluation() -> None:
    model, x = two_layers(), binary_images(50)
    result = evaluate_elbo(model, x)
    assert len(result.kl_per_layer) == 2 and len(result.active_units_per_layer) == 2
    assert sum(result.kl_per_layer) == pytest.approx(result.kl, rel=1e-6)  # float32 sums
    assert result.active_units == sum(result.active_units_per_layer)
    assert len(result.kl_per_dim) == 5
    assert result.loss == pytest.approx(result.recon + result.kl, rel=1e-9)


def test_each_layers_kl_and_active_units_are_its_own() -> None:
    """Each layer's KL and active units against a direct computation with the evaluation's
    noise (not only their sums): z1's KL is log q(z1|x) - log p(z1|z2) at the draws, z2's
    the analytic KL of q(z2|z1); a unit is active when its posterior mean varies over the
    images by more than 0.01 (z2's: the mean of q(z2|z1 = mu1))."""
    from vae_cli.model.evaluate import EVAL_SEED

    model, x = two_layers(), binary_images(50)
    with torch.no_grad():  # z2's second unit ignores its input: inactive by construction
        model.encoder2.mu.weight[1] = 0.0
    generator = torch.Generator().manual_seed(EVAL_SEED)
    eps1 = torch.randn((50, 3), generator=generator, dtype=torch.float64)
    eps2 = torch.randn((50, 2), generator=generator, dtype=torch.float64)
    with torch.no_grad():
        _, kl1, _, (mu2, logvar2) = independent_terms(model, x, eps1, eps2)
        kl2 = gaussian_kl(mu2, logvar2).sum(-1)
        mu1 = model.encoder(x)[0]
        top_mu = model.encoder2(mu1)[0]
    result = evaluate_elbo(model, x)
    assert result.kl_per_layer == pytest.approx([kl1.mean().item(), kl2.mean().item()], rel=1e-9)
    active = [int((mu.var(0, unbiased=False) > 0.01).sum()) for mu in (mu1, top_mu)]
    assert active == [3, 1] and result.active_units_per_layer == active


def encoder_and_decoder(model: VAE) -> tuple[list, list]:
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder")]
    decoder = [p for n, p in model.named_parameters() if n.startswith("decoder")]
    return encoder, decoder


@pytest.mark.parametrize("layers", [1, 2])
def test_dreg_is_the_weighted_pathwise_gradient_computed_another_way(layers: int) -> None:
    """DReG's encoder gradient is Σ_k w̃_k² ∂log w_k/∂φ through the samples only, with q's
    parameters held constant in log q (Tucker et al. 2018, eq. 5); its decoder gradient is
    the plain IWAE one. Here each sample's gradient is taken on its own and summed."""
    if layers == 2:
        model = two_layers(scale=0.5)
    else:
        model = VAE(ModelConfig(latent_dim=3, hidden_dim=16)).double()
    x, k = binary_images(2), 4
    generator = torch.Generator().manual_seed(3)
    noise = [
        torch.randn(k, 2, d, generator=generator, dtype=torch.float64) for d in model.latent_dims
    ]
    with torch.no_grad():  # weights spread over the samples, so that w and w² differ
        assert torch.softmax(model.log_weights(x, noise)[0], dim=0).max() < 0.9
    encoder, decoder = encoder_and_decoder(model)
    loss = model.iwae(x, noise, dreg=True).loss
    dreg = torch.autograd.grad(loss, encoder + decoder)

    plain = model.iwae(x, noise).loss  # the usual estimator, for the decoder's reference
    iwae = torch.autograd.grad(plain, encoder + decoder)
    for ours, reference in zip(dreg[len(encoder) :], iwae[len(encoder) :], strict=True):
        torch.testing.assert_close(ours, reference)

    log_w, _ = model.log_weights(x, noise)
    weights = torch.softmax(log_w.detach(), dim=0)  # (K, B)
    expected = [torch.zeros_like(p) for p in encoder]
    for sample in range(k):
        for image in range(2):
            single = log_w_with_constant_q(model, x, noise)[sample, image]
            grads = torch.autograd.grad(single, encoder, retain_graph=True, allow_unused=True)
            for total, grad in zip(expected, grads, strict=True):
                if grad is not None:
                    total -= weights[sample, image] ** 2 * grad / 2  # the loss is a batch mean
    for ours, reference in zip(dreg[: len(encoder)], expected, strict=True):
        torch.testing.assert_close(ours, reference)
    # ...and it is not the plain IWAE encoder gradient.
    assert any(not torch.allclose(a, b) for a, b in zip(dreg, iwae, strict=True))


def log_w_with_constant_q(model: VAE, x: torch.Tensor, noise: list) -> torch.Tensor:
    """log w with every q density's parameters detached from the encoder (z keeps its path),
    written out from the networks."""
    from torch.func import functional_call

    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * noise[0]
    log_q = Normal(mu.detach(), (0.5 * logvar.detach()).exp()).log_prob(z).sum(-1)
    log_px = bernoulli_log_likelihood(model.decode(z), x)
    if len(model.latent_dims) == 1:
        return log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q
    mu2, logvar2 = model.encode_top(z)
    z2 = mu2 + (0.5 * logvar2).exp() * noise[1]
    constant = {n: p.detach() for n, p in model.encoder2.named_parameters()}
    q_mu2, q_logvar2 = model.clamped(*functional_call(model.encoder2, constant, (z,)))
    log_q = log_q + Normal(q_mu2, (0.5 * q_logvar2).exp()).log_prob(z2).sum(-1)
    below_mu, below_logvar = model.prior_below(z2)
    log_prior = Normal(below_mu, (0.5 * below_logvar).exp()).log_prob(z).sum(-1)
    log_prior = log_prior + Normal(0.0, 1.0).log_prob(z2).sum(-1)
    return log_px + log_prior - log_q


def test_ancestral_samples_follow_each_layer() -> None:
    model = two_layers()
    draws = 40000
    z2 = torch.tensor([[0.3, -1.2]], dtype=torch.float64).expand(draws, -1)
    eps1 = torch.randn(draws, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    seen = []
    model.decode = lambda z1: seen.append(z1) or torch.zeros(len(z1), 784)  # look at z1
    model.generate(z2, eps1)
    (z1,) = seen
    mu, logvar = model.prior_below(z2[:1])
    sigma = (0.5 * logvar).exp()[0]
    assert ((z1.mean(0) - mu[0]).abs() < 4 * sigma / math.sqrt(draws)).all()
    assert ((z1.std(0) / sigma - 1).abs() < 0.02).all()
    model.generate(z2[:3])  # without noise: the means of p(z1|z2)
    torch.testing.assert_close(seen[-1], mu.expand(3, -1))
