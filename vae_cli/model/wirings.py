"""How a hierarchy's stochastic layers connect: which networks it has, and one pass that draws
every layer's z (a walk). Three wirings, each one class:

- chain (Burda et al. 2016, App. C): q(z1|x) q(z2|z1) ... q(zL|zL-1), p(zL) ... p(z1|z2) p(x|z1);
- skip (Tomczak & Welling 2018's HVAE, vae_vampprior models/HVAE_2level.py): q(zL|x) ...
  q(z1|x, z2), p(zL) ... p(z1|z2) p(x|z1, ..., zL);
- ladder (Sønderby et al. 2016, casperkaae/LVAE): a deterministic pass up (mu-hat of each layer
  from the one below's, LVAE's only_mu_up), then inference down: q(zl|.) is the precision-
  weighted merge of the pass's Gaussian with the generative p(zl|zl+1), whose network it shares.

Chain and ladder have the same networks and differ in the pass only. The modules are named so
that one- and two-layer models keep the names of their older checkpoints: "encoder" (q of z1),
"decoder" (p(x|.)), "encoder<l>" (q of z_l) and "decoder<l>" (p(z_l-1 | z_l)). A new wiring is
one class here and its name among the `wiring` setting's choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from vae_cli.config.settings import ModelConfig
from vae_cli.model.layers import (
    IMAGE_PIXELS,
    ConvDecoder,
    ConvEncoder,
    GaussianMLP,
    MLPDecoder,
    with_constant_weights,
)

if TYPE_CHECKING:
    from vae_cli.model.vae import VAE


@dataclass
class Draw:
    """One stochastic layer in one walk: its draw z (what other layers' posteriors are computed
    from), `term` (what log-densities, conditional priors and the decoder read: z itself, or
    with DReG an alias whose gradient is reweighted), q's mu and clamped logvar at the draw, and
    p(z | the layer above)'s (None at the top, whose prior is the prior object)."""

    z: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    term: torch.Tensor
    prior_mu: torch.Tensor | None = None
    prior_logvar: torch.Tensor | None = None


@dataclass
class Walk:
    draws: list[Draw]  # bottom (z1) first
    x_logits: torch.Tensor
    upward: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # the ladder's pass up


def posterior_name(layer: int) -> str:
    """The module of q(z_layer+1 | .): "encoder", "encoder2", ..."""
    return "encoder" if layer == 0 else f"encoder{layer + 1}"


def prior_name(layer: int) -> str:
    """The module of p(z_layer+1 | z_layer+2): "decoder2" gives z1 from z2, ..."""
    return f"decoder{layer + 2}"


def draw(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """z = mu + sigma·eps (Kingma & Welling 2014, §2.4), or the mean without noise."""
    return mu if noise is None else mu + torch.exp(0.5 * logvar) * noise


def precision_weighted(
    mu: torch.Tensor, logvar: torch.Tensor, other_mu: torch.Tensor, other_logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of two diagonal Gaussians, renormalised: precisions add and the means are
    weighted by them (Sønderby et al. 2016, eqs. 18-19), in log space."""
    logvar_q = -torch.logaddexp(-logvar, -other_logvar)
    mu_q = mu * torch.exp(logvar_q - logvar) + other_mu * torch.exp(logvar_q - other_logvar)
    return mu_q, logvar_q


class Wiring:
    """What every wiring shares: the networks between the layers (q of each layer above the
    bottom from the one below, p of each layer from the one above) and the decoder."""

    name = ""
    decoder_sees_every_layer = False
    top_down = False  # z1's posterior reads the layers above (drawn first)

    def networks(self, config: ModelConfig) -> dict[str, nn.Module]:
        """The wiring's modules in the order they are made (the order a seed's weights are
        drawn in, and the order of a checkpoint's parameters)."""
        sizes = config.layer_sizes()
        mlp = dict(activation=config.activation, block=config.block)
        modules: dict[str, nn.Module] = {
            "encoder": self.bottom_encoder(config, sizes),
            "decoder": self.data_decoder(config, sizes),
        }
        for layer in range(1, len(sizes)):
            size, hidden = sizes[layer]
            below = sizes[layer - 1][0]
            modules[posterior_name(layer)] = GaussianMLP(
                in_dim=self.posterior_inputs(layer, sizes), hidden_dim=hidden, out_dim=size, **mlp
            )
            modules[prior_name(layer - 1)] = GaussianMLP(
                in_dim=size, hidden_dim=hidden, out_dim=below, **mlp
            )
        return modules

    def bottom_encoder(self, config: ModelConfig, sizes: list[tuple[int, int]]) -> nn.Module:
        (size, hidden), mlp = sizes[0], dict(activation=config.activation)
        if config.arch == "conv":
            return ConvEncoder(latent_dim=size, hidden_dim=hidden, **mlp)
        inputs = self.posterior_inputs(0, sizes)
        return GaussianMLP(
            in_dim=inputs, hidden_dim=hidden, out_dim=size, block=config.block, **mlp
        )

    def data_decoder(self, config: ModelConfig, sizes: list[tuple[int, int]]) -> nn.Module:
        (size, hidden), mlp = sizes[0], dict(activation=config.activation)
        if config.arch == "conv":
            return ConvDecoder(latent_dim=size, hidden_dim=hidden, **mlp)
        seen = [s for s, _ in sizes] if self.decoder_sees_every_layer else size
        return MLPDecoder(latent_dim=seen, hidden_dim=hidden, block=config.block, **mlp)

    def posterior_inputs(self, layer: int, sizes: list[tuple[int, int]]) -> int | list[int]:
        """What q(z_layer | .) reads: x for the bottom layer, the layer below's z above it."""
        return IMAGE_PIXELS if layer == 0 else sizes[layer - 1][0]

    def conditional_priors(self, model: VAE, draws: list[Draw]) -> None:
        """p(z_l | z_l+1) of every layer below the top, at the terms of the layer above."""
        for layer in range(len(draws) - 1):
            prior = model.net(prior_name(layer))(draws[layer + 1].term)
            draws[layer].prior_mu, draws[layer].prior_logvar = model.clamped(*prior)

    def upward_means(self, model: VAE, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Each layer's (mu, clamped logvar) going up from x through the means: chain's
        posteriors at z = mu, and the ladder's deterministic pass."""
        steps, h = [], x
        for layer in range(len(model.latent_dims)):
            mu, logvar = model.clamped(*model.net(posterior_name(layer))(h))
            steps.append((mu, logvar))
            h = mu
        return steps

    def top_posterior(self, model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_L | x) as a function of images: what a VampPrior's components are."""
        return self.upward_means(model, x)[-1]


class Chain(Wiring):
    name = "chain"

    def walk(
        self,
        model: VAE,
        x: torch.Tensor,
        noise: list[torch.Tensor] | None,
        *,
        importance: bool = False,
        dreg: bool = False,
    ) -> Walk:
        """Up from x, each layer drawn from q given the draw below; the decoder reads z1 as
        soon as it is drawn, then each p(z_l | z_l+1) is read at the draws above."""
        draws, h, x_logits = [], x, None
        for layer in range(len(model.latent_dims)):
            mu, logvar = model.clamped(*model.net(posterior_name(layer))(h))
            if layer == 0 and importance:  # K samples of each image: (…, 1, B, D)
                mu, logvar = mu.unsqueeze(-3), logvar.unsqueeze(-3)
            z = draw(mu, logvar, None if noise is None else noise[layer])
            term = z.view_as(z) if dreg else z
            draws.append(Draw(z, mu, logvar, term))
            if layer == 0:
                x_logits = model.decode_layers([term])
            h = z
        self.conditional_priors(model, draws)
        return Walk(draws, x_logits)

    def constant_posterior(
        self, model: VAE, x: torch.Tensor, walk: Walk, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z_layer | z_layer-1)'s parameters with its weights held constant (DReG), at the
        term of the layer below (so z1's own path still reaches the encoder)."""
        draws = walk.draws
        if layer == 0:
            return draws[0].mu.detach(), draws[0].logvar.detach()
        net = model.net(posterior_name(layer))
        return model.clamped(*with_constant_weights(net, draws[layer - 1].term))

    def reconstruct(
        self, model: VAE, x: torch.Tensor, noise: NoiseSource, *, mean_only: bool
    ) -> tuple[torch.Tensor, ...]:
        """Up to the top layer and back down the generative path to z1, then decoded: a
        reconstruction through every layer (noise drawn in that order)."""
        mu, logvar = model.clamped(*model.encoder(x))
        z = mu if mean_only else draw(mu, logvar, noise(mu))
        for layer in range(1, len(model.latent_dims)):
            up = model.clamped(*model.net(posterior_name(layer))(z))
            z = up[0] if mean_only else draw(*up, noise(up[0]))
        for layer in reversed(range(len(model.latent_dims) - 1)):
            down = model.clamped(*model.net(prior_name(layer))(z))
            z = down[0] if mean_only else draw(*down, noise(down[0]))
        return model.decode_layers([z]), mu, logvar, z


class TopDown(Wiring):
    """A wiring that draws from the top down: a reconstruction is one walk, decoded."""

    top_down = True

    def reconstruct(
        self, model: VAE, x: torch.Tensor, noise: NoiseSource, *, mean_only: bool
    ) -> tuple[torch.Tensor, ...]:
        """Each layer's noise drawn bottom first, then one walk."""
        eps = None
        if not mean_only:
            eps = [noise(x.new_empty(*x.shape[:-1], size)) for size in model.latent_dims]
        walk = self.walk(model, x, eps)
        bottom = walk.draws[0]
        return walk.x_logits, bottom.mu, bottom.logvar, bottom.z


class Skip(TopDown):
    name = "skip"
    decoder_sees_every_layer = True

    def posterior_inputs(self, layer: int, sizes: list[tuple[int, int]]) -> int | list[int]:
        """q(z_layer | x, z_layer+1): x and the layer above (the top layer: x alone)."""
        return IMAGE_PIXELS if layer == len(sizes) - 1 else [IMAGE_PIXELS, sizes[layer + 1][0]]

    def walk(
        self,
        model: VAE,
        x: torch.Tensor,
        noise: list[torch.Tensor] | None,
        *,
        importance: bool = False,
        dreg: bool = False,
    ) -> Walk:
        """Down from the top: each layer drawn from q given x and the draw above; p(z_l |
        z_l+1) and the decoder read every layer's term."""
        layers = len(model.latent_dims)
        images = x.unsqueeze(-3) if importance else x  # beside K samples: (…, 1, B, 784)
        draws: list[Draw | None] = [None] * layers
        for layer in reversed(range(layers)):
            above = () if layer == layers - 1 else (draws[layer + 1].z,)
            mu, logvar = model.clamped(*model.net(posterior_name(layer))(images, *above))
            z = draw(mu, logvar, None if noise is None else noise[layer])
            draws[layer] = Draw(z, mu, logvar, z.view_as(z) if dreg else z)
        self.conditional_priors(model, draws)
        return Walk(draws, model.decode_layers([d.term for d in draws]))

    def constant_posterior(
        self, model: VAE, x: torch.Tensor, walk: Walk, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        draws = walk.draws
        if layer == len(draws) - 1:
            return draws[layer].mu.detach(), draws[layer].logvar.detach()
        images = x.unsqueeze(-3) if draws[0].z.dim() > x.dim() else x
        net = model.net(posterior_name(layer))
        return model.clamped(*with_constant_weights(net, images, draws[layer + 1].term))

    def top_posterior(self, model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model.clamped(*model.net(posterior_name(len(model.latent_dims) - 1))(x))


class Ladder(TopDown):
    name = "ladder"

    def walk(
        self,
        model: VAE,
        x: torch.Tensor,
        noise: list[torch.Tensor] | None,
        *,
        importance: bool = False,
        dreg: bool = False,
    ) -> Walk:
        """Up through the means, then down: the top layer drawn from its upward Gaussian,
        each one below from that merged with p(z_l | z_l+1) at the draw above (LVAE's
        top-down inference, its generative network shared)."""
        upward = self.upward_means(model, x)
        if importance:
            upward = [(mu.unsqueeze(-3), logvar.unsqueeze(-3)) for mu, logvar in upward]
        layers = len(upward)
        draws: list[Draw | None] = [None] * layers
        generative: list[tuple[torch.Tensor, ...] | None] = [None] * layers
        for layer in reversed(range(layers)):
            mu, logvar = upward[layer]
            if layer < layers - 1:
                generative[layer] = model.clamped(*model.net(prior_name(layer))(draws[layer + 1].z))
                mu, logvar = model.clamped(*precision_weighted(mu, logvar, *generative[layer]))
            z = draw(mu, logvar, None if noise is None else noise[layer])
            draws[layer] = Draw(z, mu, logvar, z.view_as(z) if dreg else z)
        if dreg:  # p(z_l | z_l+1) read at the terms, whose gradient is reweighted
            self.conditional_priors(model, draws)
        else:
            for layer in range(layers - 1):
                draws[layer].prior_mu, draws[layer].prior_logvar = generative[layer]
        return Walk(draws, model.decode_layers([draws[0].term]), upward)

    def constant_posterior(
        self, model: VAE, x: torch.Tensor, walk: Walk, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The merge with every weight held constant: the upward Gaussian detached, the
        generative one from constant weights at the term above."""
        draws = walk.draws
        mu, logvar = (t.detach() for t in walk.upward[layer])
        if layer == len(draws) - 1:
            return mu, logvar
        net = model.net(prior_name(layer))
        generative = model.clamped(*with_constant_weights(net, draws[layer + 1].term))
        return model.clamped(*precision_weighted(mu, logvar, *generative))


class NoiseSource:
    """Standard-normal draws shaped like a given tensor, from one generator, in the order
    asked for (a reconstruction's noise)."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(
            like.shape, generator=self.generator, device=like.device, dtype=like.dtype
        )


WIRINGS: dict[str, type[Wiring]] = {"chain": Chain, "skip": Skip, "ladder": Ladder}
