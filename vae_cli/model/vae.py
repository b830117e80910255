"""The VAE: q(z|x) and p(x|z) with a standard-normal prior, or Burda et al.'s two stochastic
layers; it gives the commands encode/decode/generate and the training loop its objectives.

Pure maths on tensors: nothing here knows about files, devices or the command line.
Notation follows Kingma & Welling (2014): x, x_logits, mu, logvar, z, kl.
"""

from __future__ import annotations

import torch
from torch import nn

from vae_cli.config.settings import ModelConfig
from vae_cli.model.bounds import LossParts, elbo_from_parts, elbo_loss, iwae_bound, iwae_loss
from vae_cli.model.densities import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_log_density,
    gaussian_log_density_per_dim,
)
from vae_cli.model.layers import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    ConvDecoder,
    ConvEncoder,
    GaussianMLP,
    MLPDecoder,
    MLPEncoder,
    with_constant_weights,
)
from vae_cli.model.priors import PriorNoise, VampPrior
from vae_cli.model.reparameterize import clamp_logvar

__all__ = ["IMAGE_PIXELS", "IMAGE_SIDE", "VAE", "LossParts", "count_parameters", "latent_dims"]


def latent_dims(config: ModelConfig) -> list[int]:
    """The size of each stochastic layer of a model with these settings, bottom (z1) first."""
    if config.stochastic_layers == 2:
        return [config.latent_dim, config.latent2_dim]
    return [config.latent_dim]


class VAE(nn.Module):
    """q(z|x) and p(x|z) with a standard-normal prior or a VampPrior; with two stochastic
    layers, Burda et al.'s hierarchy q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1), the prior being
    p(z2). The commands use `encode` and `decode` (the bottom layer, z or z1), `generate_from`
    (ancestral samples from the prior) and the objectives `elbo`, `iwae` and `log_weights`:
    none of them asks how deep the model is or what its prior is."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        sizes = dict(
            latent_dim=config.latent_dim, hidden_dim=config.hidden_dim, activation=config.activation
        )
        encoder, decoder = (
            (MLPEncoder, MLPDecoder) if config.arch == "mlp" else (ConvEncoder, ConvDecoder)
        )
        self.encoder = encoder(**sizes)
        self.decoder = decoder(**sizes)
        if config.stochastic_layers == 2:
            top = dict(hidden_dim=config.hidden2_dim, activation=config.activation)
            self.encoder2 = GaussianMLP(in_dim=config.latent_dim, out_dim=config.latent2_dim, **top)
            self.decoder2 = GaussianMLP(in_dim=config.latent2_dim, out_dim=config.latent_dim, **top)
        # The standard normal needs no module (and draws nothing at initialisation).
        self.prior = VampPrior(config.pseudo_inputs) if config.prior == "vamp" else None
        # None: one model. M: every parameter stacked over M members (members.stack_models),
        # and every tensor through the model has the member dimension first.
        self.members: int | None = None

    @property
    def latent_dims(self) -> list[int]:
        """The size of each stochastic layer, bottom (z1) first."""
        return latent_dims(self.config)

    def clamped(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return mu, clamp_logvar(
            logvar, max_logvar=self.config.max_logvar, min_std=self.config.min_std
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and the clamped logvar of q(z|x) (the bottom layer), each (B, D), for x (B, 784)
        or (B, 1, 28, 28) pixels in [0, 1] (stacked members: (M, B, 784) -> (M, B, D))."""
        if self.members is None and x.dim() > 2:
            x = x.flatten(1)
        return self.clamped(*self.encoder(x))

    def encode_top(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z2|z1) of a two-layer model: mu and clamped logvar."""
        return self.clamped(*self.encoder2(z1))

    def prior_below(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z1|z2) of a two-layer model: mu and clamped logvar."""
        return self.clamped(*self.decoder2(z2))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of draws z (..., D) of the top layer, summed over its dimensions."""
        if self.prior is None:
            return gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        return self.prior.log_density(self, z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x|z), (..., 784) for z (the bottom layer) of shape (..., D)."""
        # All of z's leading dimensions as one batch (each member's apart for a population).
        rows = (-1,) if self.members is None else (self.members, -1)
        return self.decoder(z.reshape(*rows, z.shape[-1])).reshape(*z.shape[:-1], IMAGE_PIXELS)

    def generate(self, z_top: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of x for a draw z_top of the top layer's prior: ancestral sampling down the
        layers with the noise eps of z1 (a two-layer model; None: the means)."""
        if self.config.stochastic_layers == 1:
            return self.decode(z_top)
        mu, logvar = self.prior_below(z_top)
        z1 = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z1)

    def prior_sample(self, noise: PriorNoise, temperature: float = 1.0) -> list[torch.Tensor]:
        """Draws of the top layer's prior (n, D) and the lower layers' noise, on the model's
        device, from `prior_noise`; the noise is scaled by the temperature on the CPU."""
        device = next(self.parameters()).device
        eps = [(temperature * e).to(device) for e in noise.eps]
        if self.prior is None:
            return eps
        return [self.prior.draw(self, noise.component.to(device), eps[0]), *eps[1:]]

    def generate_from(self, noise: PriorNoise, temperature: float = 1.0) -> torch.Tensor:
        """Logits of x for a draw from the prior: its top layer's z, then each layer below
        given the one above (ancestral sampling)."""
        return self.generate(*self.prior_sample(noise, temperature))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, *, mean_only: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """(x_logits, mu, logvar, z) of the bottom layer: a reconstruction through every layer,
        with sampled latents, or their means with `mean_only`."""
        mu, logvar = self.encode(x)
        z = mu if mean_only else mu + torch.exp(0.5 * logvar) * self.noise_for(mu, generator)
        if self.config.stochastic_layers == 2:  # up to z2 and back down to z1
            mu2, logvar2 = self.encode_top(z)
            z2 = (
                mu2
                if mean_only
                else mu2 + torch.exp(0.5 * logvar2) * self.noise_for(mu2, generator)
            )
            below, below_logvar = self.prior_below(z2)
            z = (
                below
                if mean_only
                else below + torch.exp(0.5 * below_logvar) * self.noise_for(below, generator)
            )
        return self.decode(z), mu, logvar, z

    @staticmethod
    def noise_for(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def elbo(
        self,
        x: torch.Tensor,
        noise: list[torch.Tensor],
        *,
        beta: float | torch.Tensor = 1.0,
        free_bits: float | torch.Tensor = 0.0,
    ) -> LossParts:
        """The negative ELBO with the reparameterization noise of each layer, noise[l] shaped
        like layer l's latent. One layer: the analytic KL. Two: KL(q(z2|z1) || p(z2))
        analytic at the sampled z1, and log q(z1|x) - log p(z1|z2) at the sampled z1, z2. A
        VampPrior's KL is the single-sample log q - log p (Tomczak & Welling 2018, eq. 6)."""
        mu, logvar = self.encode(x)  # (B, D) each
        z = mu + torch.exp(0.5 * logvar) * noise[0]  # logvar is already clamped by encode
        x_logits = self.decode(z).to(x.dtype)  # float32 (or the pixels' dtype) under autocast
        if self.config.stochastic_layers == 1 and self.prior is None:
            return elbo_loss(
                x, x_logits, mu.to(x.dtype), logvar.to(x.dtype), beta=beta, free_bits=free_bits
            )
        recon = -bernoulli_log_likelihood(x_logits, x)
        lower, top = [], (z, mu, logvar)  # the KL below the top layer (per dim), and the top's
        if self.config.stochastic_layers == 2:
            mu2, logvar2 = self.encode_top(z)
            z2 = mu2 + torch.exp(0.5 * logvar2) * noise[1]
            below, below_logvar = self.prior_below(z2)
            log_q1 = gaussian_log_density_per_dim(z, mu, logvar)
            kl_below = log_q1 - gaussian_log_density_per_dim(z, below, below_logvar)
            lower, top = [kl_below], (z2, mu2, logvar2)
        if self.prior is None:
            kl_dims = torch.cat([*lower, gaussian_kl(*top[1:])], dim=-1).to(x.dtype)
            return elbo_from_parts(recon, kl_dims, beta=beta, free_bits=free_bits)
        floored = isinstance(free_bits, torch.Tensor) or free_bits > 0
        top_dims, joint = self.prior.kl(self, *(t.to(x.dtype) for t in top), floored=floored)
        kl_dims = torch.cat([*(kl.to(x.dtype) for kl in lower), top_dims], dim=-1)
        joint = joint + sum(kl.sum(-1).to(x.dtype) for kl in lower)
        return elbo_from_parts(recon, kl_dims, beta=beta, free_bits=free_bits, kl_joint=joint)

    def log_weights(
        self, x: torch.Tensor, noise: list[torch.Tensor], *, dreg: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w, log p(x|z)) of K samples per image, each (…, K, B): log w = log p(x, z) -
        log q(z|x) over all layers, with noise[l] (…, K, B, D_l). With `dreg`, q's densities
        see its parameters as constants and the gradient reaching each sample is weighted by
        its normalized importance weight: the encoder then gets the doubly reparameterized
        gradient (Tucker et al. 2018, eq. 5), the decoder the usual IWAE one."""
        mu, logvar = (t.unsqueeze(-3) for t in self.encode(x))  # (…, 1, B, D)
        q_mu, q_logvar = (mu.detach(), logvar.detach()) if dreg else (mu, logvar)
        z = mu + torch.exp(0.5 * logvar) * noise[0]  # (…, K, B, D)
        # With DReG, z's own terms go through an alias whose gradient is reweighted; z2, whose
        # gradient is reweighted where it is drawn, reaches z through the raw tensor, so no
        # path is weighted twice.
        z_here = z.view_as(z) if dreg else z
        log_px_z = bernoulli_log_likelihood(self.decode(z_here).to(x.dtype), x.unsqueeze(-3))
        log_q = gaussian_log_density(z_here, q_mu, q_logvar)
        reweighted = [z_here]
        if self.config.stochastic_layers == 1:
            log_prior = self.log_prior(z_here)
        else:
            mu2, logvar2 = self.encode_top(z)
            z2 = mu2 + torch.exp(0.5 * logvar2) * noise[1]
            if dreg:  # q(z2|z1)'s weights as constants, z1 still a function of the encoder
                mu2, logvar2 = self.clamped(*with_constant_weights(self.encoder2, z_here))
            below, below_logvar = self.prior_below(z2)
            log_q = log_q + gaussian_log_density(z2, mu2, logvar2)
            log_prior = gaussian_log_density(z_here, below, below_logvar) + self.log_prior(z2)
            reweighted.append(z2)
        log_w = log_px_z + log_prior - log_q
        if dreg and log_w.requires_grad:
            weights = torch.softmax(log_w.detach(), dim=-2).unsqueeze(-1)  # (…, K, B, 1)
            for latent in reweighted:
                latent.register_hook(lambda grad, weights=weights: grad * weights)
        return log_w, log_px_z

    def iwae(self, x: torch.Tensor, noise: list[torch.Tensor], *, dreg: bool = False) -> LossParts:
        """The negative IWAE bound (Burda et al. 2016) with K samples per image (noise[l]
        (…, K, B, D_l)); recon is the mean over samples of -log p(x|z_k), kl the KL estimate
        (analytic for one layer)."""
        if self.config.stochastic_layers == 1 and not dreg and self.prior is None:
            mu, logvar = self.encode(x)
            return iwae_loss(x, mu, logvar, self.decode, noise[0])
        log_w, log_px_z = self.log_weights(x, noise, dreg=dreg)
        bound = iwae_bound(log_w)
        kl = (log_px_z - log_w).mean(-2)  # E_q[log q(z|x) - log p(z)] per image
        return LossParts(-bound.mean(-1), -log_px_z.mean(-2), kl, kl.mean(-1, keepdim=True))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prior_noise(config: ModelConfig, n: int, generator: torch.Generator) -> PriorNoise:
    """n draws' worth of the prior's randomness, from one CPU generator (the same picture on
    every device): a VampPrior's component for each draw first, then each layer's noise, the
    top layer first."""
    component = None
    if config.prior == "vamp":
        component = torch.randint(config.pseudo_inputs, (n,), generator=generator)
    sizes = latent_dims(config)[::-1]
    return PriorNoise(component, [torch.randn(n, size, generator=generator) for size in sizes])
