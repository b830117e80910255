"""The VampPrior's maths: log p(z) of the mixture against densities written out, its KL
estimate against closed forms, the IW-NLL against quadrature, sampling from a known mixture,
the ELBO's terms, and DReG with a prior that shares the encoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from vae_cli.config.settings import ModelConfig
from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_kl
from vae_cli.model.evaluate import importance_weighted_nll
from vae_cli.model.vae import VAE, prior_noise


def vamp(k: int, latent_dim: int = 3, seed: int = 0, **model: object) -> VAE:
    torch.manual_seed(seed)
    config = ModelConfig(
        latent_dim=latent_dim, hidden_dim=16, prior="vamp", pseudo_inputs=k, **model
    )
    return VAE(config).double().eval()


def log_prior(model: VAE, z: torch.Tensor) -> torch.Tensor:
    return model.prior.log_prob(z, model.context())


def components(model: VAE) -> tuple[torch.Tensor, torch.Tensor]:
    """Each component's mu and sigma, computed here from the encoder at the pseudo-inputs."""
    with torch.no_grad():
        mu, logvar = model.encode(model.prior.pseudo_inputs.clamp(0, 1))
    return mu, (0.5 * logvar).exp()


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 784), 0.3, dtype=torch.float64), generator=generator)


def test_one_pseudo_input_is_the_gaussian_of_its_posterior() -> None:
    model, z = vamp(1), torch.randn(5, 3, dtype=torch.float64)
    mu, sigma = components(model)
    expected = Normal(mu[0], sigma[0]).log_prob(z).sum(-1)
    with torch.no_grad():
        torch.testing.assert_close(log_prior(model, z), expected)


def test_two_pseudo_inputs_are_the_mixture_written_out() -> None:
    from vae_cli.model.priors import mixture_log_density_per_dim

    model, z = vamp(2), 1.5 * torch.randn(7, 3, dtype=torch.float64)
    mu, sigma = components(model)
    density = [Normal(mu[k], sigma[k]).log_prob(z).exp() for k in range(2)]  # (7, 3) per dim
    joint = 0.5 * density[0].prod(-1) + 0.5 * density[1].prod(-1)  # probabilities, not logs
    marginal = 0.5 * density[0] + 0.5 * density[1]
    with torch.no_grad():
        torch.testing.assert_close(log_prior(model, z), joint.log())
        logvar = (2 * sigma.log()).double()
        torch.testing.assert_close(mixture_log_density_per_dim(z, mu, logvar), marginal.log())


def test_the_kl_estimate_is_the_closed_form_for_one_pseudo_input() -> None:
    """With K = 1 the prior is a Gaussian, and the single-sample log q - log p averages to
    the closed-form KL between two diagonal Gaussians."""
    model, x, n = vamp(1), binary_images(3), 20_000
    with torch.no_grad():
        mu_x, logvar_x = model.encode(x)
        z = mu_x + (0.5 * logvar_x).exp() * torch.randn(n, 3, 3, dtype=torch.float64)
        joint = model.prior.kl(z, mu_x, logvar_x, model.context()).total  # (n, 3)
    mu_u, sigma_u = components(model)
    q = Normal(mu_x, (0.5 * logvar_x).exp())
    closed = torch.distributions.kl_divergence(q, Normal(mu_u[0], sigma_u[0])).sum(-1)
    standard_error = joint.std(0) / math.sqrt(n)
    assert ((joint.mean(0) - closed).abs() < 4 * standard_error).all()


def test_a_pseudo_input_whose_posterior_is_the_standard_normal_gives_its_kl() -> None:
    """u = 0 and no biases: q(z|u) = N(0, I), so the VampPrior is the standard prior; its
    log p(z) is the standard normal's, and the ELBO's KL estimate averages to the analytic
    KL the normal prior would use."""
    model, x, n = vamp(1), binary_images(2), 20_000
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name == "prior.pseudo_inputs":
                parameter.zero_()
        z = torch.randn(4, 3, dtype=torch.float64)
        standard = Normal(0.0, 1.0).log_prob(z).sum(-1)
        torch.testing.assert_close(log_prior(model, z), standard)
        mu, logvar = model.encode(x)
        noise = torch.randn(n * 2, 3, dtype=torch.float64)
        estimates = model.elbo(x.repeat(n, 1), [noise]).kl.view(n, 2)  # n draws per image
    analytic = gaussian_kl(mu, logvar).sum(-1)
    assert ((estimates.mean(0) - analytic).abs() < 4 * estimates.std(0) / math.sqrt(n)).all()


def test_the_iw_nll_converges_to_the_exact_likelihood_by_quadrature() -> None:
    """-log p(x) = -log ∫ p(x|z) p(z) dz on a 2-D grid, with the mixture prior."""
    model, x = vamp(3, latent_dim=2, seed=1), binary_images(4, seed=2)
    axis = torch.linspace(-6, 6, 241, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (241², 2)
    with torch.no_grad():
        logits = model.decode(grid)  # log p(x|z) = Σ x·l - softplus(l), as one product:
        log_px_z = logits @ x.T - torch.nn.functional.softplus(logits).sum(-1, keepdim=True)
        log_joint = log_px_z + log_prior(model, grid).unsqueeze(1)  # (grid, B)
    cell = math.log((axis[1] - axis[0]).item() ** 2)
    exact = -(torch.logsumexp(log_joint, dim=0) + cell).mean().item()
    errors = [abs(importance_weighted_nll(model.float(), x.float(), k).nll - exact)
              for k in (1, 5000)]  # fmt: skip
    assert errors[1] < 0.05 < errors[0], errors


def test_prior_draws_follow_the_known_mixture() -> None:
    model, n = vamp(2, latent_dim=2, seed=3), 40_000
    with torch.no_grad():  # two distinct pseudo-inputs: a dark and a bright image
        model.prior.pseudo_inputs[0] = 0.0
        model.prior.pseudo_inputs[1] = 1.0
        noise = prior_noise(model, n, torch.Generator().manual_seed(0))
        (z,) = model.prior_sample(noise)
    mu, sigma = components(model)
    share = (noise.component == 1).double().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / n)
    for k in (0, 1):
        draws = z[noise.component == k]
        assert ((draws.mean(0) - mu[k]).abs() < 4 * sigma[k] / math.sqrt(len(draws))).all()
        assert ((draws.std(0) / sigma[k] - 1).abs() < 0.05).all()


def test_the_elbo_counts_the_joint_kl_and_free_bits_floor_the_layer() -> None:
    """The ELBO's KL is the joint single-sample estimate; free bits floor the layer's whole
    batch-mean estimate at free_bits per dimension (its dimensions' shares are not exact)."""
    model, x = vamp(4), binary_images(6)
    noise = [torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)]
    with torch.no_grad():
        parts = model.elbo(x, noise)
        mu, logvar = model.encode(x)
        z = mu + (0.5 * logvar).exp() * noise[0]
        log_q = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
        joint = log_q - log_prior(model, z)
        recon = -bernoulli_log_likelihood(model.decode(z), x)
        torch.testing.assert_close(parts.kl, joint)
        torch.testing.assert_close(parts.loss, (recon + joint).mean())
    per_dim = joint.mean().item() / 3
    torch.testing.assert_close(model.elbo(x, noise, free_bits=0.5 * per_dim).loss, parts.loss)
    lifted = model.elbo(x, noise, free_bits=2 * per_dim).loss
    torch.testing.assert_close(lifted, recon.mean() + 3 * 2 * per_dim)


def written_out_vamp_elbo(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-ELBO of a one-layer VampPrior model from the networks and torch.distributions: the
    mixture's components the encoder at the clamped pseudo-inputs (Tomczak & Welling 2018,
    eqs. 6 and 9), every term a function of every weight."""
    mu, logvar = model.encoder(x)
    logvar = logvar.clamp(-10, 10)
    z = mu + (0.5 * logvar).exp() * eps
    u_mu, u_logvar = model.encoder(model.prior.pseudo_inputs.clamp(0, 1))
    u_logvar = u_logvar.clamp(-10, 10)
    components = Normal(u_mu, (0.5 * u_logvar).exp()).log_prob(z.unsqueeze(-2)).sum(-1)
    log_p = torch.logsumexp(components, -1) - math.log(len(u_mu))
    log_q = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    recon = -bernoulli_log_likelihood(model.decoder(z), x)
    return (recon + log_q - log_p).mean()


def test_the_vamp_elbos_gradient_is_the_written_out_one() -> None:
    """Not only the value: every weight's gradient, the pseudo-inputs' and the encoder's
    through both q and the prior's components (a term computed at a detached z or with a
    detached KL leaves the value and moves these)."""
    model, x = vamp(4), binary_images(5)
    eps = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    weights = list(model.parameters())
    ours = torch.autograd.grad(model.elbo(x, [eps]).loss, weights)
    expected = torch.autograd.grad(written_out_vamp_elbo(model, x, eps), weights)
    for name, a, b in zip(dict(model.named_parameters()), ours, expected, strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("prior", ["normal", "vamp"])
@pytest.mark.parametrize("wiring", ["chain", "skip", "ladder"])
def test_free_bits_above_every_layers_kl_leave_the_kl_no_gradient(prior: str, wiring: str) -> None:
    """Free bits mean what they say: a layer whose KL is below its floor gets no KL gradient,
    analytic or estimated, so the objective's gradient is the reconstruction's alone."""
    torch.manual_seed(0)
    config = ModelConfig(
        latent_dims=(3, 2), hidden_dims=(16, 8), wiring=wiring, prior=prior, pseudo_inputs=4
    )
    model, x = VAE(config).double(), binary_images(5)
    generator = torch.Generator().manual_seed(4)
    noise = [torch.randn(5, d, generator=generator, dtype=torch.float64) for d in (3, 2)]
    weights = list(model.parameters())
    floored = model.elbo(x, noise, free_bits=50.0)
    assert (floored.kl < 50.0 * 5).all()  # every layer below its floor
    ours = torch.autograd.grad(floored.loss, weights, allow_unused=True, retain_graph=True)
    recon_only = torch.autograd.grad(floored.recon.mean(), weights, allow_unused=True)
    for weight, a, b in zip(weights, ours, recon_only, strict=True):
        zero = torch.zeros_like(weight)
        torch.testing.assert_close(zero if a is None else a, zero if b is None else b)
    unfloored = torch.autograd.grad(model.elbo(x, noise).loss, weights, allow_unused=True)
    assert any(
        a is not None and not torch.allclose(a, b) for a, b in zip(unfloored, ours, strict=True)
    )


def test_dreg_with_a_vamp_prior_weights_the_sample_paths_squared_and_the_prior_once() -> None:
    """The prior shares the encoder: through the samples the encoder gets Σ w̃² ∂log w (DReG,
    q held constant); through the prior's components, the model's own dependence, Σ w̃
    ∂log p(z) at fixed z. The decoder and the pseudo-inputs get the plain IWAE gradient."""
    model, x, k = vamp(3), binary_images(2), 4
    noise = [torch.randn(k, 2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)]
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder")]
    dreg = torch.autograd.grad(model.iwae(x, noise, dreg=True).loss, encoder + rest)
    plain = torch.autograd.grad(model.iwae(x, noise).loss, encoder + rest)
    for ours, reference in zip(dreg[len(encoder) :], plain[len(encoder) :], strict=True):
        torch.testing.assert_close(ours, reference)

    weights = torch.softmax(model.log_weights(x, noise)[0].detach(), dim=0)  # (K, B)
    expected = [torch.zeros_like(p) for p in encoder]
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * noise[0]
    prior_mu, prior_logvar = (t.detach() for t in model.prior.components(model.context()))
    fixed = Normal(prior_mu, (0.5 * prior_logvar).exp())
    path = (  # log w through z only: q's and the prior's parameters held constant
        bernoulli_log_likelihood(model.decode(z), x)
        + torch.logsumexp(fixed.log_prob(z.unsqueeze(-2)).sum(-1), -1) - math.log(3)
        - Normal(mu.detach(), (0.5 * logvar.detach()).exp()).log_prob(z).sum(-1)
    )  # fmt: skip
    direct = log_prior(model, z.detach())  # the prior's dependence on the encoder, z fixed
    for sample in range(k):
        for image in range(2):
            for term, power in ((path, 2), (direct, 1)):
                grads = torch.autograd.grad(
                    term[sample, image], encoder, retain_graph=True, allow_unused=True
                )
                for total, grad in zip(expected, grads, strict=True):
                    if grad is not None:
                        total -= weights[sample, image] ** power * grad / 2  # a batch mean
    for ours, reference in zip(dreg[: len(encoder)], expected, strict=True):
        torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_prior_of_a_stack_is_each_members_own(layers: int) -> None:
    """Stacked members' pseudo-inputs are their own: a member's log p(z) is the single
    model's."""
    from vae_cli.training.stack import Stack

    extra = {"latent_dims": (3, 2)} if layers == 2 else {}
    models = [vamp(5, seed=seed, **extra).float() for seed in (0, 1)]
    stack = Stack(models)
    z = torch.randn(2, 4, models[0].latent_dims[-1])  # (M, B, D)
    with torch.no_grad():
        together = log_prior(stack.model, z)
        for member, model in enumerate(models):
            torch.testing.assert_close(together[member], log_prior(model, z[member]))


def test_the_expanded_quadratic_keeps_float32_accurate() -> None:
    """log p(z) is computed as one matrix product (the square expanded); in float32, with
    components as narrow as a trained encoder's (sigma 0.02) and z a few sigmas out, it
    agrees with the direct sum over dimensions in float64."""
    from vae_cli.model.priors import mixture_log_density

    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(50, 32, generator=generator)
    logvar = 2 * torch.empty(50, 32).uniform_(-4, 0, generator=generator)  # sigma 0.02 to 1
    z = mu[torch.arange(200) % 50] + 0.1 * torch.randn(200, 32, generator=generator)
    direct = Normal(mu.double(), (0.5 * logvar.double()).exp()).log_prob(z.double().unsqueeze(-2))
    expected = torch.logsumexp(direct.sum(-1), -1) - math.log(50)
    got = mixture_log_density(z, mu, logvar).double()
    assert ((got - expected).abs() / expected.abs().clamp(min=1)).max() < 1e-5
