"""A hierarchy of stochastic layers against the maths written out independently, per wiring:
the log-weights of a three-layer model, the ladder's precision-weighted merge, each layer's
KL, the IW-NLL against quadrature, the DReG gradient computed sample by sample, and ancestral
sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal
from torch.func import functional_call

from vae_cli.config.settings import ModelConfig
from vae_cli.model.densities import bernoulli_log_likelihood
from vae_cli.model.evaluate import EVAL_SEED, evaluate_elbo, importance_weighted_nll
from vae_cli.model.vae import VAE
from vae_cli.model.wirings import precision_weighted

WIRINGS = ("chain", "skip", "ladder")


def hierarchy(
    wiring: str,
    latent_dims: tuple[int, ...] = (3, 2, 2),
    *,
    seed: int = 0,
    scale: float = 2.0,
    prior: str = "normal",
) -> VAE:
    torch.manual_seed(seed)
    config = ModelConfig(
        latent_dims=latent_dims,
        hidden_dims=(16, 8, 6)[: len(latent_dims)],
        wiring=wiring,
        activation="tanh",
        prior=prior,
        pseudo_inputs=3,
    )
    model = VAE(config).double().eval()
    with torch.no_grad():  # larger weights than at initialisation: KLs well away from 0
        for parameter in model.parameters():
            parameter.mul_(scale)
    return model


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 784), 0.3, dtype=torch.float64), generator=generator)


def layer_noise(model: VAE, *lead: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(*lead, size, generator=generator, dtype=torch.float64)
        for size in model.latent_dims
    ]


# The maths written out: networks called by name, densities from torch.distributions, the
# logvar clamp at ±10 (the default floor on sigma, 1e-4, lies below it).


def gaussian(net: torch.nn.Module, *inputs: torch.Tensor, constant: bool = False):
    """(mu, logvar) of a network's Gaussian; `constant`: its weights detached (DReG's q)."""
    if constant:
        weights = {name: p.detach() for name, p in net.named_parameters()}
        mu, logvar = functional_call(net, weights, inputs)
    else:
        mu, logvar = net(*inputs)
    return mu, logvar.clamp(-10, 10)


def merged(up: tuple, down: tuple) -> tuple:
    """The product of two Gaussians: precisions add, means weighted by them."""
    (mu_a, logvar_a), (mu_b, logvar_b) = up, down
    precision_a, precision_b = logvar_a.neg().exp(), logvar_b.neg().exp()
    variance = 1 / (precision_a + precision_b)
    return (mu_a * precision_a + mu_b * precision_b) * variance, variance.log().clamp(-10, 10)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)


def written_out(model: VAE, x: torch.Tensor, noise: list, *, constant_q: bool = False,
                cut_paths: bool = False) -> dict:  # fmt: skip
    """log p(x|z), each layer's log q and log p, for three wirings of L layers, each drawn
    as its paper draws it. `constant_q`: q's densities with every weight detached (DReG);
    `cut_paths`: every z detached where it is drawn (only the explicit dependence left)."""
    wiring, layers = model.config.wiring, len(model.latent_dims)
    enc = [model.encoder, *(getattr(model, f"encoder{n}") for n in range(2, layers + 1))]
    dec = {n: getattr(model, f"decoder{n + 2}") for n in range(layers - 1)}  # p(z_n | z_n+1)
    images = x.unsqueeze(0) if noise[0].dim() > x.dim() else x
    z, q = [None] * layers, [None] * layers

    def sample(layer: int, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        drawn = mu + (0.5 * logvar).exp() * noise[layer]
        z[layer] = drawn.detach() if cut_paths else drawn

    if wiring == "chain":
        below = images
        for layer in range(layers):
            mu, logvar = gaussian(enc[layer], below)
            sample(layer, mu, logvar)
            q[layer] = (mu.detach(), logvar.detach()) if layer == 0 and constant_q else (
                gaussian(enc[layer], z[layer - 1], constant=True) if constant_q else (mu, logvar)
            )  # fmt: skip
            below = z[layer]
    elif wiring == "skip":
        for layer in reversed(range(layers)):
            inputs = (images,) if layer == layers - 1 else (images, z[layer + 1])
            mu, logvar = gaussian(enc[layer], *inputs)
            sample(layer, mu, logvar)
            q[layer] = gaussian(enc[layer], *inputs, constant=True) if constant_q else (mu, logvar)
    else:  # ladder: up through the means, then down, merging
        up, h = [], x
        for layer in range(layers):
            up.append(gaussian(enc[layer], h))
            h = up[-1][0]
        up = [(mu.unsqueeze(0), lv.unsqueeze(0)) if images is not x else (mu, lv) for mu, lv in up]
        for layer in reversed(range(layers)):
            if layer == layers - 1:
                mu, logvar = up[layer]
                q_const = (mu.detach(), logvar.detach())
            else:
                mu, logvar = merged(up[layer], gaussian(dec[layer], z[layer + 1]))
                frozen = tuple(t.detach() for t in up[layer])
                q_const = merged(frozen, gaussian(dec[layer], z[layer + 1], constant=True))
            sample(layer, mu, logvar)
            q[layer] = q_const if constant_q else (mu, logvar)
    seen = z if wiring == "skip" else z[:1]
    logits = model.decoder(*seen)
    log_q = [log_normal(z[n], *q[n]) for n in range(layers)]
    log_p = [log_normal(z[n], *gaussian(dec[n], z[n + 1])) for n in range(layers - 1)]
    log_p.append(log_prior(model, enc, z[-1]))
    return {"log_px": bernoulli_log_likelihood(logits, images), "log_q": log_q, "log_p": log_p,
            "z": z}  # fmt: skip


def log_prior(model: VAE, enc: list, z: torch.Tensor) -> torch.Tensor:
    """log p(z_L): N(0, I), or the VampPrior's mixture of the top posterior at each clamped
    pseudo-input, log (1/K) Σ_k N(z; mu_k, var_k) (Tomczak & Welling 2018, eq. 9)."""
    if model.config.prior == "normal":
        return log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    h = model.prior.pseudo_inputs.clamp(0, 1)
    if model.config.wiring == "skip":
        mu, logvar = gaussian(enc[-1], h)
    else:  # up through the means
        for net in enc:
            mu, logvar = gaussian(net, h)
            h = mu
    components = log_normal(z.unsqueeze(-2), mu, logvar)  # (..., K)
    return torch.logsumexp(components, dim=-1) - math.log(len(mu))


def log_weight(terms: dict) -> torch.Tensor:
    return terms["log_px"] + sum(terms["log_p"]) - sum(terms["log_q"])


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_the_log_weights_of_three_layers_are_the_densities_written_out(
    wiring: str, prior: str
) -> None:
    model, x = hierarchy(wiring, prior=prior), binary_images(4)
    noise = layer_noise(model, 5, 4)
    with torch.no_grad():
        log_w, log_px = model.log_weights(x, noise)
        terms = written_out(model, x, noise)
    torch.testing.assert_close(log_px, terms["log_px"])
    torch.testing.assert_close(log_w, log_weight(terms))


@pytest.mark.parametrize("wiring", WIRINGS)
def test_each_layers_elbo_kl_is_its_single_sample_density_ratio(wiring: str) -> None:
    """Below the top, log q(z_l|.) - log p(z_l|z_l+1) at the draws; the top's KL is the
    analytic one of N(0, I), whose mean is the sampled ratio's (Monte Carlo)."""
    model, x = hierarchy(wiring), binary_images(4)
    draws = 4000
    noise = layer_noise(model, draws, 4)
    with torch.no_grad():
        parts = model.elbo(x.expand(draws, -1, -1).reshape(-1, 784),
                           [n.reshape(draws * 4, -1) for n in noise])  # fmt: skip
        terms = written_out(model, x, noise)
    below = sum(terms["log_q"][:-1]) - sum(terms["log_p"][:-1])  # (draws, 4)
    top_sampled = terms["log_q"][-1] - terms["log_p"][-1]
    torch.testing.assert_close(parts.recon.reshape(draws, 4), -terms["log_px"])
    top_analytic = parts.kl.reshape(draws, 4) - below
    error = (top_sampled - top_analytic).mean() / (
        (top_sampled - top_analytic).std() / math.sqrt(top_sampled.numel())
    )
    assert abs(error.item()) < 4
    assert below.mean() > 0.1 and top_analytic.mean() > 0.1  # every layer carries information


def test_the_ladder_merge_is_the_normalised_product_of_the_two_gaussians() -> None:
    """N(z; mu_a, va) N(z; mu_b, vb) ∝ N(z; mu_q, vq): checked pointwise on a grid, where the
    ratio of the product to the merged density must be one constant."""
    mu_a, logvar_a, mu_b, logvar_b = torch.tensor(
        [[0.3, -2.0], [0.5, -1.0], [-1.0, 1.5], [-0.7, 2.0]], dtype=torch.float64
    )
    mu_q, logvar_q = precision_weighted(mu_a, logvar_a, mu_b, logvar_b)
    grid = torch.linspace(-4, 4, 101, dtype=torch.float64).unsqueeze(1)  # (G, 1) per dimension
    product = Normal(mu_a, (0.5 * logvar_a).exp()).log_prob(grid) + Normal(
        mu_b, (0.5 * logvar_b).exp()
    ).log_prob(grid)
    ratio = product - Normal(mu_q, (0.5 * logvar_q).exp()).log_prob(grid)  # (G, 2)
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    variance = 1 / (1 / logvar_a.exp() + 1 / logvar_b.exp())
    torch.testing.assert_close(logvar_q, variance.log())


def exact_nll_by_quadrature(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) = -log ∫∫ p(x|z1[, z2]) p(z1|z2) p(z2) dz1 dz2 on a grid (1-D z1 and z2);
    a decoder of z1 alone is evaluated on the z1 grid only."""
    skip = model.config.wiring == "skip"
    grid = torch.linspace(-6, 6, 161 if skip else 601, dtype=torch.float64)
    step = (grid[1] - grid[0]).item()
    z1, z2 = (g.reshape(-1, 1) for g in torch.meshgrid(grid, grid, indexing="ij"))
    below_mu, below_logvar = gaussian(model.decoder2, z2)
    log_joint_z = log_normal(z1, below_mu, below_logvar) + log_normal(z2, 0 * z2, 0 * z2)
    if skip:  # p(x | z1, z2) on every grid point
        logits = model.decoder(z1, z2).unsqueeze(1).expand(-1, len(x), -1)
        log_px = bernoulli_log_likelihood(logits, x)  # (G², B)
    else:  # p(x | z1) on the z1 grid, repeated for every z2
        logits = model.decoder(grid.unsqueeze(1)).unsqueeze(1).expand(-1, len(x), -1)
        log_px = bernoulli_log_likelihood(logits, x).repeat_interleave(len(grid), dim=0)
    joint = log_joint_z.unsqueeze(1) + log_px  # (G², B)
    return -(torch.logsumexp(joint, dim=0) + 2 * math.log(step))


@pytest.mark.parametrize("wiring", WIRINGS)
def test_the_iw_nll_of_two_layers_converges_to_the_exact_likelihood(wiring: str) -> None:
    model, x = hierarchy(wiring, (1, 1), scale=1.0), binary_images(6)
    with torch.no_grad():
        exact = exact_nll_by_quadrature(model, x).mean().item()
    errors = [abs(importance_weighted_nll(model, x, k).nll - exact) for k in (1, 5000)]
    assert errors[1] < 0.05 < errors[0], errors


@pytest.mark.parametrize("wiring", WIRINGS)
def test_evaluation_reports_each_layers_kl_and_active_units(wiring: str) -> None:
    """Each layer's KL with the evaluation's noise, and a unit active when its posterior
    mean (the others at their means) varies over the images by more than 0.01."""
    model, x = hierarchy(wiring), binary_images(50)
    top = model.encoder3
    with torch.no_grad():  # z3's second unit ignores its input: inactive by construction
        top.mu.weight[1] = 0.0
    generator = torch.Generator().manual_seed(EVAL_SEED)
    noise = [torch.randn((50, d), generator=generator, dtype=torch.float64) for d in (3, 2, 2)]
    with torch.no_grad():
        terms = written_out(model, x, noise)
        means = written_out(model, x, [torch.zeros_like(n) for n in noise])["z"]
    result = evaluate_elbo(model, x)
    below = [(terms["log_q"][n] - terms["log_p"][n]).mean().item() for n in range(2)]
    assert result.kl_per_layer[:2] == pytest.approx(below, rel=1e-9)
    assert sum(result.kl_per_layer) == pytest.approx(result.kl, rel=1e-9)
    active = [int((mu.var(0, unbiased=False) > 0.01).sum()) for mu in means]
    assert result.active_units_per_layer == active and active[2] == 1


@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("layers", [1, 2])
def test_dreg_is_the_weighted_gradient_computed_sample_by_sample(wiring: str, layers: int) -> None:
    """DReG (Tucker et al. 2018, eq. 5): for every weight, Σ_k w̃_k ∂log w_k/∂θ through the
    densities explicitly plus Σ_k w̃_k² through the samples' paths, with q's densities at
    constant weights. Each sample's two parts are taken on their own here and summed; the
    ladder's generative networks, which its q shares, get both."""
    model = hierarchy(wiring, (3, 2)[:layers], scale=0.5)
    x, k = binary_images(2), 4
    noise = layer_noise(model, k, 2, seed=3)
    with torch.no_grad():  # weights spread over the samples, so that w and w² differ
        assert torch.softmax(model.log_weights(x, noise)[0], dim=0).max() < 0.9
    weights_of = list(model.parameters())
    dreg = torch.autograd.grad(model.iwae(x, noise, dreg=True).loss, weights_of)
    w = torch.softmax(model.log_weights(x, noise)[0].detach(), dim=0)  # (K, B)
    expected = [torch.zeros_like(p) for p in weights_of]
    whole = log_weight(written_out(model, x, noise, constant_q=True))
    explicit = log_weight(written_out(model, x, noise, constant_q=True, cut_paths=True))
    for sample in range(k):
        for image in range(2):
            full = torch.autograd.grad(whole[sample, image], weights_of, retain_graph=True,
                                       allow_unused=True)  # fmt: skip
            direct = torch.autograd.grad(explicit[sample, image], weights_of,
                                         retain_graph=True, allow_unused=True)  # fmt: skip
            weight = w[sample, image]
            for total, f, d in zip(expected, full, direct, strict=True):
                f = torch.zeros_like(total) if f is None else f
                d = torch.zeros_like(total) if d is None else d
                total -= (weight * d + weight**2 * (f - d)) / 2  # the loss is a batch mean
    for ours, reference in zip(dreg, expected, strict=True):
        torch.testing.assert_close(ours, reference)
    plain = torch.autograd.grad(model.iwae(x, noise).loss, weights_of)
    assert any(not torch.allclose(a, b) for a, b in zip(dreg, plain, strict=True))


@pytest.mark.parametrize("wiring", WIRINGS)
def test_ancestral_samples_follow_each_layer(wiring: str) -> None:
    model = hierarchy(wiring)
    draws = 40000
    z3 = torch.tensor([[0.3, -1.2]], dtype=torch.float64).expand(draws, -1)
    generator = torch.Generator().manual_seed(5)
    eps2, eps1 = (torch.randn(draws, d, generator=generator, dtype=torch.float64) for d in (2, 3))
    seen = []
    model.decode_layers = lambda zs: seen.append(zs) or torch.zeros(len(zs[0]), 784)
    model.generate(z3, eps2, eps1)
    z1, z2, top = seen[0]
    torch.testing.assert_close(top, z3)
    mu2, logvar2 = gaussian(model.decoder3, z3[:1])
    sigma2 = (0.5 * logvar2).exp()[0]
    assert ((z2.mean(0) - mu2[0]).abs() < 4 * sigma2 / math.sqrt(draws)).all()
    assert ((z2.std(0) / sigma2 - 1).abs() < 0.02).all()
    mu1, logvar1 = gaussian(model.decoder2, z2)  # z1 given each z2 drawn
    torch.testing.assert_close(z1, mu1 + (0.5 * logvar1).exp() * eps1)
    model.generate(z3[:3])  # without noise: the means, layer by layer
    _, z2_mean, _ = seen[-1]
    torch.testing.assert_close(z2_mean, mu2.expand(3, -1))
