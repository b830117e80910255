"""The VAE: a hierarchy of L stochastic layers (one by default) wired as a chain, with skips or
as a ladder (wirings.py), under a prior object (priors.py). It gives the commands encode,
decode and generate and the training loop its objectives, one code path for every depth,
wiring and prior.

Pure maths on tensors: nothing here knows about files, devices or the command line.
Notation follows Kingma & Welling (2014): x, x_logits, mu, logvar, z, kl.
"""

from __future__ import annotations

import torch
from torch import nn

from vae_cli.config.settings import ModelConfig
from vae_cli.model.bounds import LossParts, elbo_from_parts, iwae_bound
from vae_cli.model.densities import (
    bernoulli_log_likelihood,
    gaussian_log_density,
    gaussian_log_density_per_dim,
)
from vae_cli.model.layers import IMAGE_PIXELS, IMAGE_SIDE
from vae_cli.model.priors import PRIORS, LayerKL, PriorContext, PriorNoise
from vae_cli.model.reparameterize import clamp_logvar
from vae_cli.model.wirings import WIRINGS, NoiseSource, Walk, prior_name

__all__ = ["IMAGE_PIXELS", "IMAGE_SIDE", "VAE", "LossParts", "count_parameters", "prior_noise"]


class VAE(nn.Module):
    """q(z|x) and p(x|z) over L stochastic layers, bottom (z1) first, with the prior p(z_L)
    an object. The commands use `encode` (the bottom layer's posterior), `encode_layers` (every
    layer's), `decode` (logits of x), `generate_from` (ancestral samples) and the objectives
    `elbo`, `iwae` and `log_weights`: none of them asks how deep the model is, how its layers
    are wired or what its prior is."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wiring = WIRINGS[config.wiring]()
        for name, module in self.wiring.networks(config).items():
            self.add_module(name, module)
        self.prior = PRIORS[config.prior].from_config(config)
        # None: one model. M: every parameter stacked over M members (training/stack.py), and
        # every tensor through the model has the member dimension first.
        self.members: int | None = None

    @property
    def latent_dims(self) -> list[int]:
        """The size of each stochastic layer, bottom (z1) first."""
        return list(self.config.latent_dims)

    def layer_names(self) -> list[str]:
        """ "z" for one layer, else "z1", "z2", ... (bottom first)."""
        layers = len(self.latent_dims)
        return ["z"] if layers == 1 else [f"z{layer}" for layer in range(1, layers + 1)]

    def net(self, name: str) -> nn.Module:
        return self._modules[name]

    def clamped(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return mu, clamp_logvar(
            logvar, max_logvar=self.config.max_logvar, min_std=self.config.min_std
        )

    def context(self) -> PriorContext:
        """What the prior may ask of this model: its top posterior, and the stack's size."""
        return PriorContext(lambda x: self.wiring.top_posterior(self, x), self.members)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of draws z (..., D) of the top layer, summed over its dimensions."""
        return self.prior.log_prob(z, self.context())

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 784), also from (B, 1, 28, 28) (stacked members: (M, B, 784) as given)."""
        return x.flatten(1) if self.members is None and x.dim() > 2 else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and the clamped logvar of the bottom layer's posterior, each (B, D), for x
        (B, 784) or (B, 1, 28, 28) pixels in [0, 1] (the layers above, where z1's posterior
        reads them, at their means)."""
        return self.encode_layers(x)[0]

    def encode_layers(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's posterior (mu, clamped logvar), bottom first, with every z at its
        mean."""
        walk = self.wiring.walk(self, self.images(x), None)
        return [(d.mu, d.logvar) for d in walk.draws]

    def decode_layers(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Bernoulli logits (..., 784) of p(x | z): the decoder reads z1 (chain, ladder) or
        every layer (skip); all of z's leading dimensions go through as one batch (each
        member's apart for a stack)."""
        seen = zs if self.wiring.decoder_sees_every_layer else zs[:1]
        rows = (-1,) if self.members is None else (self.members, -1)
        flat = [z.reshape(*rows, z.shape[-1]) for z in seen]
        return self.decoder(*flat).reshape(*seen[0].shape[:-1], IMAGE_PIXELS)

    def decode(self, z: torch.Tensor, *above: torch.Tensor) -> torch.Tensor:
        """Logits of x (..., 784) for z1 (..., D) and, where the decoder reads them (skip), the
        layers above it."""
        return self.decode_layers([z, *above])

    def generate(self, z_top: torch.Tensor, *eps: torch.Tensor | None) -> torch.Tensor:
        """Logits of x for a draw z_top of the top layer: ancestral sampling down the layers,
        eps the noise of each layer below, top first (none given: their means)."""
        layers = len(self.latent_dims)
        zs: list[torch.Tensor] = [z_top]
        for step, layer in enumerate(reversed(range(layers - 1))):
            mu, logvar = self.clamped(*self.net(prior_name(layer))(zs[0]))
            noise = eps[step] if step < len(eps) else None
            zs.insert(0, mu if noise is None else mu + torch.exp(0.5 * logvar) * noise)
        return self.decode_layers(zs)

    def prior_sample(self, noise: PriorNoise, temperature: float = 1.0) -> list[torch.Tensor]:
        """A draw of the top layer's prior (n, D) and the lower layers' noise, on the model's
        device, from `prior_noise`; the noise is scaled by the temperature on the CPU."""
        device = next(self.parameters()).device
        eps = [(temperature * e).to(device) for e in noise.eps]
        component = None if noise.component is None else noise.component.to(device)
        return [self.prior.sample(component, eps[0], self.context()), *eps[1:]]

    def generate_from(self, noise: PriorNoise, temperature: float = 1.0) -> torch.Tensor:
        """Logits of x for a draw from the prior: its top layer's z, then each layer below
        given the one above (ancestral sampling)."""
        return self.generate(*self.prior_sample(noise, temperature))

    def prior_grid(self, quantiles: torch.Tensor) -> torch.Tensor:
        """Standard-normal quantiles (n, D) of the top layer placed where its prior lies."""
        return self.prior.grid(quantiles, self.context())

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, *, mean_only: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """(x_logits, mu, logvar, z) of the bottom layer: a reconstruction through every layer,
        with sampled latents, or their means with `mean_only`."""
        noise = NoiseSource(generator)
        return self.wiring.reconstruct(self, self.images(x), noise, mean_only=mean_only)

    def elbo(
        self,
        x: torch.Tensor,
        noise: list[torch.Tensor],
        *,
        beta: float | torch.Tensor = 1.0,
        free_bits: float | torch.Tensor = 0.0,
    ) -> LossParts:
        """The negative ELBO with the reparameterization noise of each layer, noise[l] shaped
        like layer l's latent (B, D_l): reconstruction plus beta times each layer's KL, with
        free bits (Kingma et al. 2016) on each dimension where its share is exact, else on
        the layer."""
        walk = self.wiring.walk(self, x, noise)
        x_logits = walk.x_logits.to(x.dtype)  # float32 (or the pixels' dtype) under autocast
        recon = -bernoulli_log_likelihood(x_logits, x)
        kls = layer_kls(self, walk, x.dtype)
        return elbo_from_parts(recon, kls, beta=beta, free_bits=free_bits)

    def importance_walk(
        self, x: torch.Tensor, noise: list[torch.Tensor], *, dreg: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Walk]:
        """(log w, log p(x|z), the walk) of K samples per image, log w and log p(x|z) (…, K,
        B): log w = log p(x, z) - log q(z|x) over all layers, with noise[l] (…, K, B, D_l).

        With `dreg`, q's densities see every weight as a constant (the z's still functions of
        them) and the gradient reaching each sample's terms is weighted by its normalized
        importance weight: q's parameters then get the doubly reparameterized gradient (Tucker
        et al. 2018, eq. 5), p's the usual IWAE one. Each draw's terms read an alias of it and
        the other layers' posteriors the draw itself, so no path is weighted twice."""
        walk = self.wiring.walk(self, x, noise, importance=True, dreg=dreg)
        log_px_z = bernoulli_log_likelihood(walk.x_logits.to(x.dtype), x.unsqueeze(-3))
        log_q = None
        for index, layer in enumerate(walk.draws):
            q = (
                self.wiring.constant_posterior(self, x, walk, index)
                if dreg
                else (layer.mu, layer.logvar)
            )
            density = gaussian_log_density(layer.term, *q)
            log_q = density if log_q is None else log_q + density
        log_prior = None
        for layer in walk.draws[:-1]:
            density = gaussian_log_density(layer.term, layer.prior_mu, layer.prior_logvar)
            log_prior = density if log_prior is None else log_prior + density
        top = self.log_prior(walk.draws[-1].term)
        log_prior = top if log_prior is None else log_prior + top
        log_w = log_px_z + log_prior - log_q
        if dreg and log_w.requires_grad:
            weights = torch.softmax(log_w.detach(), dim=-2).unsqueeze(-1)  # (…, K, B, 1)
            for layer in walk.draws:
                layer.term.register_hook(lambda grad, weights=weights: grad * weights)
        return log_w, log_px_z, walk

    def log_weights(
        self, x: torch.Tensor, noise: list[torch.Tensor], *, dreg: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w, log p(x|z)) of K samples per image, each (…, K, B) (see importance_walk)."""
        log_w, log_px_z, _ = self.importance_walk(x, noise, dreg=dreg)
        return log_w, log_px_z

    def iwae(self, x: torch.Tensor, noise: list[torch.Tensor], *, dreg: bool = False) -> LossParts:
        """The negative IWAE bound (Burda et al. 2016, eq. 8) with K samples per image (noise[l]
        (…, K, B, D_l)); recon is the mean over samples of -log p(x|z_k), kl the KL: analytic
        for one layer under N(0, I), else the samples' mean of log q - log p."""
        log_w, log_px_z, walk = self.importance_walk(x, noise, dreg=dreg)
        bound = iwae_bound(log_w)
        recon = -log_px_z.mean(-2)
        if len(walk.draws) == 1 and self.prior.exact_kl:
            (layer,) = walk.draws
            kl_dims = self.prior.kl(layer.z, layer.mu, layer.logvar, self.context()).per_dim
            kl_dims = kl_dims.squeeze(-3)  # the K samples share one posterior
            return LossParts(-bound.mean(-1), recon, kl_dims.sum(-1), kl_dims.mean(-2))
        kl = (log_px_z - log_w).mean(-2)  # E_q[log q(z|x) - log p(z)] per image
        return LossParts(-bound.mean(-1), recon, kl, kl.mean(-1, keepdim=True))


def layer_kls(model: VAE, walk: Walk, dtype: torch.dtype) -> list[LayerKL]:
    """Each layer's KL at the walk's draws, bottom first: below the top, the single-sample
    log q(z_l|.) - log p(z_l|z_l+1) of each dimension (both diagonal, so the dimensions'
    shares add up exactly); the top's, the prior's (analytic for N(0, I))."""
    kls = []
    for layer in walk.draws[:-1]:
        log_q = gaussian_log_density_per_dim(layer.term, layer.mu, layer.logvar)
        log_p = gaussian_log_density_per_dim(layer.term, layer.prior_mu, layer.prior_logvar)
        kls.append(LayerKL(log_q - log_p))
    top = walk.draws[-1]
    kls.append(model.prior.kl(top.term, top.mu.to(dtype), top.logvar.to(dtype), model.context()))
    return kls


@torch.no_grad()
def start_at_the_data_mean(model: VAE, pixel_means: torch.Tensor) -> None:
    """The decoder's output bias set to the logit of each pixel's mean over the training
    images (784,) (Burda et al.'s IWAE code): before it has learned anything the model gives
    every image the data's marginal likelihood. A conv decoder has one bias: the logit of the
    mean over all pixels."""
    bias = model.decoder.output_bias()
    means = pixel_means.clamp(1e-3, 1 - 1e-3).to(bias)
    means = means if bias.numel() == means.numel() else means.mean().expand_as(bias)
    bias.copy_(torch.logit(means))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prior_noise(model: VAE, n: int, generator: torch.Generator) -> PriorNoise:
    """n draws' worth of the prior's randomness, from one CPU generator (the same picture on
    every device): the prior's own (a VampPrior's component of each draw) first, then each
    layer's noise, the top layer first."""
    component = model.prior.draw_components(n, generator)
    sizes = model.latent_dims[::-1]
    return PriorNoise(component, [torch.randn(n, size, generator=generator) for size in sizes])
