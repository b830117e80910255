"""Estimators of the ELBO's gradient with respect to one image's posterior parameters, mu and
logvar, one estimate per draw: what `vae gradients` compares.

The single-sample ELBO is L(z) = data(z) - KL(q || p) when the KL is analytic (a normal prior,
one layer: data(z) = log p(x|z)), else log p(x, z) - log q(z|x) (data(z) = log p(x, z)). The
estimators:

- reparam: the pathwise gradient of L through z = mu + exp(logvar / 2) * eps, what training uses;
- score: the score function (REINFORCE), f(z) * grad log q(z|x) with z held fixed, where f is
  the sampled part of L (the analytic KL's gradient is added exactly);
- score_baseline: the same with f less the mean of f over the other draws (a leave-one-out
  baseline, so each estimate stays unbiased);
- stl: "sticking the landing" (Roeder et al. 2017): the pathwise gradient of log p(x, z) -
  log q(z|x) with q's parameters held constant inside log q (its score term, zero in
  expectation, is left out);
- naive: the data term through a draw without the trick (z detached): exactly zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vae_cli.model.densities import bernoulli_log_likelihood, gaussian_kl, gaussian_log_density
from vae_cli.model.wirings import posterior_name, prior_name

if TYPE_CHECKING:
    from vae_cli.model.vae import VAE

ESTIMATORS = ("reparam", "score", "score_baseline", "stl")

# data(z) for draws z (S, D) -> (S,); kl(mu, logvar) -> () when analytic.
Data = Callable[[torch.Tensor], torch.Tensor]
AnalyticKL = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Gradients = tuple[torch.Tensor, torch.Tensor]  # per draw, (S, D) each: d/d mu, d/d logvar


@dataclass
class ElboTerms:
    """The single-sample ELBO of one image: data(z), and the KL when it is analytic (then
    data is log p(x|z) and log_prior(z) the prior's density, for STL's full form)."""

    data: Data
    analytic_kl: AnalyticKL | None
    log_prior: Data | None = None

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) of draws z (S, D)."""
        if self.analytic_kl is None:
            return self.data(z)
        return self.data(z) + self.log_prior(z)


@dataclass
class Estimates:
    """One estimator's draws: per-draw gradients (S, D) for mu and logvar, and seconds taken."""

    mu: torch.Tensor
    logvar: torch.Tensor
    seconds: float


def standard_normal_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return gaussian_kl(mu, logvar).sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))


def per_draw_parameters(mu: torch.Tensor, logvar: torch.Tensor, draws: int) -> list[torch.Tensor]:
    """mu and logvar (D,) repeated per draw (S, D), as leaves: each draw's gradient is its own
    row, from one backward pass."""
    return [t.detach().expand(draws, -1).clone().requires_grad_() for t in (mu, logvar)]


def reparam(
    terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> Gradients:
    m, lv = per_draw_parameters(mu, logvar, len(eps))
    z = m + torch.exp(0.5 * lv) * eps
    if terms.analytic_kl is not None:
        elbo = terms.data(z) - terms.analytic_kl(m, lv)
    else:
        elbo = terms.data(z) - gaussian_log_density(z, m, lv)
    grad_mu, grad_logvar = torch.autograd.grad(elbo.sum(), [m, lv])
    return grad_mu, grad_logvar


def stl(terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> Gradients:
    m, lv = per_draw_parameters(mu, logvar, len(eps))
    z = m + torch.exp(0.5 * lv) * eps
    elbo = terms.log_joint(z) - gaussian_log_density(z, m.detach(), lv.detach())
    grad_mu, grad_logvar = torch.autograd.grad(elbo.sum(), [m, lv])
    return grad_mu, grad_logvar


def sampled_part(
    terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f(z) at fixed draws, and log q's score: d log q / d mu = eps / sigma, d / d logvar =
    (eps² - 1) / 2."""
    with torch.no_grad():
        z = mu + torch.exp(0.5 * logvar) * eps
        f = terms.data(z)
        if terms.analytic_kl is None:
            f = f - gaussian_log_density(z, mu.expand_as(z), logvar.expand_as(z))
    return f, eps * torch.exp(-0.5 * logvar), 0.5 * (eps.pow(2) - 1)


def analytic_kl_gradient(terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor) -> Gradients:
    """-d KL / d (mu, logvar), exact (zero when the KL is estimated by sampling)."""
    if terms.analytic_kl is None:
        return torch.zeros_like(mu), torch.zeros_like(logvar)
    m, lv = (t.detach().clone().requires_grad_() for t in (mu, logvar))
    grad_mu, grad_logvar = torch.autograd.grad(-terms.analytic_kl(m, lv), [m, lv])
    return grad_mu, grad_logvar


def score(terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> Gradients:
    return score_function(terms, mu, logvar, eps, baseline=False)


def score_baseline(
    terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> Gradients:
    return score_function(terms, mu, logvar, eps, baseline=True)


def score_function(
    terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, *, baseline: bool
) -> Gradients:
    f, score_mu, score_logvar = sampled_part(terms, mu, logvar, eps)
    if baseline:  # each draw's baseline is the mean of f over the other draws
        f = f - (f.sum() - f) / (len(f) - 1)
    kl_mu, kl_logvar = analytic_kl_gradient(terms, mu, logvar)
    return f.unsqueeze(-1) * score_mu + kl_mu, f.unsqueeze(-1) * score_logvar + kl_logvar


def naive_gradient(
    terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> Gradients:
    """The data term's gradient through a draw that does not go through the trick: z taken
    out of the graph (as `.sample()` does), so nothing reaches mu or logvar."""
    m, lv = per_draw_parameters(mu, logvar, len(eps))
    z = (m + torch.exp(0.5 * lv) * eps).detach()
    data = terms.data(z).sum()
    if not data.requires_grad:  # a data term without parameters of its own: no graph at all
        return torch.zeros_like(m), torch.zeros_like(lv)
    grads = torch.autograd.grad(data, [m, lv], allow_unused=True)
    zero = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (m, lv), strict=True)]
    return zero[0], zero[1]


def estimate_all(
    terms: ElboTerms, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> dict[str, Estimates]:
    """Every estimator on the same draws eps (S, D)."""
    functions = {"reparam": reparam, "score": score, "score_baseline": score_baseline, "stl": stl}
    results = {}
    for name in ESTIMATORS:
        functions[name](terms, mu, logvar, eps[:2])  # warm-up: first calls pay for setup
        started = time.perf_counter()
        grad_mu, grad_logvar = functions[name](terms, mu, logvar, eps)
        seconds = time.perf_counter() - started
        results[name] = Estimates(grad_mu.detach(), grad_logvar.detach(), seconds)
    return results


def upper_noise(model: VAE, samples: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The noise of the layers above z1 where they are drawn given z1 (a chain: q(z2|z1), ...),
    (S, D_l) each; a top-down wiring draws them before z1, and holds them at their means."""
    if model.wiring.top_down:
        return []
    return [torch.randn(samples, size, generator=generator) for size in model.latent_dims[1:]]


def model_terms(model: VAE, x: torch.Tensor, upper: list[torch.Tensor]) -> ElboTerms:
    """The single-sample ELBO of image x (1, 784) as a function of the bottom layer's draw z
    (S, D). One layer under N(0, I): log p(x|z) and the analytic KL; another prior: log p(x|z)
    + log p(z). A chain: the layers above drawn from q given z with `upper` (draw s, noise s),
    so data(z) = log p(x, z, z2, ...) - log q(z2, ... | z). A top-down wiring: the layers
    above at their posterior means, which z1's posterior reads: data(z) = log p(x, z, z2*, ...)
    - log q(z2*, ... | x)."""
    context = model.context()

    def log_likelihood(z: torch.Tensor, *above: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_likelihood(model.decode(z, *above), x)

    layers = len(model.latent_dims)
    if layers == 1:
        if model.prior.exact_kl:
            return ElboTerms(log_likelihood, standard_normal_kl, standard_normal_log_density)
        return ElboTerms(lambda z: log_likelihood(z) + model.prior.log_prob(z, context), None)
    if model.wiring.top_down:
        return ElboTerms(held_above(model, x, log_likelihood), None)

    def chain(z1: torch.Tensor) -> torch.Tensor:
        draws, log_q = [z1], 0.0
        for layer in range(1, layers):
            mu, logvar = model.clamped(*model.net(posterior_name(layer))(draws[-1]))
            z = mu + torch.exp(0.5 * logvar) * upper[layer - 1][: len(z1)]
            log_q = log_q + gaussian_log_density(z, mu, logvar)
            draws.append(z)
        return log_likelihood(z1) + log_generative(model, draws) - log_q

    return ElboTerms(chain, None)


def log_generative(model: VAE, draws: list[torch.Tensor]) -> torch.Tensor:
    """log p(z1 | z2) + ... + log p(zL) of draws, bottom first."""
    total = model.prior.log_prob(draws[-1], model.context())
    for layer in range(len(draws) - 1):
        mu, logvar = model.clamped(*model.net(prior_name(layer))(draws[layer + 1]))
        total = total + gaussian_log_density(draws[layer], mu, logvar)
    return total


def held_above(model: VAE, x: torch.Tensor, log_likelihood: Data) -> Data:
    """data(z1) of a top-down wiring with the layers above at their posterior means."""
    with torch.no_grad():
        posteriors = model.encode_layers(x)
    above = [mu for mu, _ in posteriors[1:]]
    log_q_above = sum(gaussian_log_density(mu, mu, logvar) for mu, logvar in posteriors[1:])

    def data(z1: torch.Tensor) -> torch.Tensor:
        held = [mu.expand(len(z1), -1) for mu in above]
        return log_likelihood(z1, *held) + log_generative(model, [z1, *held]) - log_q_above

    return data
