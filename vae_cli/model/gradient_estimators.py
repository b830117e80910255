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


def model_terms(model: VAE, x: torch.Tensor, upper_noise: torch.Tensor | None) -> ElboTerms:
    """The single-sample ELBO of image x (1, 784) as a function of the bottom layer's draw z
    (S, D). One layer with the normal prior: log p(x|z) and the analytic KL. A VampPrior:
    log p(x|z) + log p(z), its learned density. Two layers: z is z1, and z2 is drawn from
    q(z2|z1) with `upper_noise` (S, D2), so data(z1) = log p(x|z1) + log p(z1|z2) + log p(z2)
    - log q(z2|z1)."""

    def log_likelihood(z: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_likelihood(model.decode(z), x)

    if model.config.stochastic_layers == 1:
        if model.prior is None:
            return ElboTerms(log_likelihood, standard_normal_kl, standard_normal_log_density)
        return ElboTerms(lambda z: log_likelihood(z) + model.log_prior(z), None)

    def two_layers(z1: torch.Tensor) -> torch.Tensor:
        mu2, logvar2 = model.encode_top(z1)
        z2 = mu2 + torch.exp(0.5 * logvar2) * upper_noise[: len(z1)]  # draw s, noise s
        below, below_logvar = model.prior_below(z2)
        upper = model.log_prior(z2) - gaussian_log_density(z2, mu2, logvar2)
        return log_likelihood(z1) + gaussian_log_density(z1, below, below_logvar) + upper

    return ElboTerms(two_layers, None)
