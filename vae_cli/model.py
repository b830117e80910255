"""The VAE: encoder/decoder modules, the reparameterization trick and the loss.

Pure maths on tensors: nothing here knows about files, devices or the command line.
Notation follows Kingma & Welling (2014): x, x_logits, mu, logvar, z, kl.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vae_cli.config import ModelConfig

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
LOG_2PI = math.log(2 * math.pi)


def clamp_logvar(
    logvar: torch.Tensor, *, max_logvar: float = 10.0, min_std: float = 1e-4
) -> torch.Tensor:
    """logvar limited to [-max_logvar, +max_logvar] and to sigma >= min_std.

    Both bounds are passed by name: the widely copied `clamp(logvar, max=-m, min=m)` pins every
    value to +m. A floor on sigma is a floor on logvar = 2·log(sigma).
    """
    lower = -max_logvar
    if min_std > 0:
        lower = max(lower, 2 * math.log(min_std))
    return logvar.clamp(min=lower, max=max_logvar)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    max_logvar: float = 10.0,
    min_std: float = 1e-4,
) -> torch.Tensor:
    """z = mu + sigma·eps, eps ~ N(0, I) from `generator` (Kingma & Welling 2014, §2.4)."""
    std = torch.exp(0.5 * clamp_logvar(logvar, max_logvar=max_logvar, min_std=min_std))
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + std * eps


def posterior_samples(
    mu: torch.Tensor, logvar: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k draws of z ~ q(z|x) per row, shape (k, B, D), from an already clamped logvar."""
    return reparameterize(
        mu.expand(k, *mu.shape),
        logvar.expand(k, *logvar.shape),
        generator,
        max_logvar=math.inf,
        min_std=0.0,
    )


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma²) || N(0, 1)) per dimension (Kingma & Welling 2014, App. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def bernoulli_log_likelihood(x_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) summed over pixels, for a Bernoulli decoder given by its logits.

    x broadcasts against x_logits, e.g. (B, 784) images against (K, B, 784) logits."""
    x = x.expand_as(x_logits)
    if x_logits.device.type == "cpu":
        return -CpuBernoulliNLL.apply(x_logits, x)
    return -F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").sum(-1)


class CpuBernoulliNLL(torch.autograd.Function):
    """Σ_pixels BCE-with-logits, the same value as F.binary_cross_entropy_with_logits summed.

    On the CPU, torch's log_sigmoid and log1p are scalar loops: ~0.5 ms for one (128, 784)
    batch, a tenth of a whole training step. exp and log are vectorised, and
    log(1 + e^-|l|) differs from log1p by under 1e-7 nats per pixel.
    """

    @staticmethod
    def forward(ctx, x_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x_logits, x)
        # BCE(l, x) = softplus(l) - l·x = max(l, 0) + log(1 + e^-|l|) - l·x
        nll = torch.exp(-x_logits.abs()).add_(1).log_()
        nll += x_logits.clamp(min=0) - x_logits * x
        return nll.sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_logits, x = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = (torch.sigmoid(x_logits) - x) * grad if ctx.needs_input_grad[0] else None
        grad_x = -x_logits * grad if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return gaussian_log_density_per_dim(z, mu, logvar).sum(-1)


def gaussian_log_density_per_dim(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log N(z_d; mu_d, exp(logvar_d)) of each dimension d."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


class LossParts(NamedTuple):
    loss: torch.Tensor  # scalar objective to minimise (mean over the batch)
    recon: torch.Tensor  # (B,) -log p(x|z) in nats
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)) in nats
    kl_per_dim: torch.Tensor  # (D,) batch mean of the KL of each latent dimension


def elbo_loss(
    x: torch.Tensor,
    x_logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    beta: float | torch.Tensor = 1.0,
    free_bits: float | torch.Tensor = 0.0,
) -> LossParts:
    """Negative ELBO per image: Bernoulli reconstruction term plus beta·KL (analytic).

    A population's tensors carry the member dimension first, (M, B, …): beta and free_bits
    may then be (M,) tensors, one value per member, and the loss is (M,).
    """
    recon = -bernoulli_log_likelihood(x_logits, x)  # (B,)
    return elbo_from_parts(recon, gaussian_kl(mu, logvar), beta=beta, free_bits=free_bits)


def elbo_from_parts(
    recon: torch.Tensor,
    kl_dims: torch.Tensor,
    *,
    beta: float | torch.Tensor = 1.0,
    free_bits: float | torch.Tensor = 0.0,
) -> LossParts:
    """recon (B,) plus beta times the KL of each latent dimension, kl_dims (B, D). With free
    bits (Kingma et al. 2016, §C.8) each dimension's batch-mean KL counts at least `free_bits`
    nats in the objective; the reported KL stays the true one."""
    kl_per_dim = kl_dims.mean(-2)
    kl_term = kl_per_dim.sum(-1)
    if isinstance(free_bits, torch.Tensor):  # per member; a floor of 0 leaves the KL as it is
        floored = torch.maximum(kl_per_dim, free_bits.unsqueeze(-1)).sum(-1)
        kl_term = torch.where(free_bits > 0, floored, kl_term)
    elif free_bits > 0:
        kl_term = kl_per_dim.clamp(min=free_bits).sum(-1)
    loss = recon.mean(-1) + beta * kl_term
    return LossParts(loss, recon, kl_dims.sum(-1), kl_per_dim)


def log_importance_weights(
    log_px_z: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """log p(x|z) + log p(z) - log q(z|x) for samples z of shape (K, B, D); returns (K, B)."""
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    log_qz_x = gaussian_log_density(z, mu, logvar)
    return log_px_z + log_pz - log_qz_x


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k per image, from (…, K, B) log weights (Burda et al. 2016, eq. 8)."""
    return torch.logsumexp(log_weights, dim=-2) - math.log(log_weights.shape[-2])


def iwae_noise(mu: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k standard-normal draws per row of mu, (k, B, D): the noise of iwae_loss."""
    return torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)


def iwae_loss(
    x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, decode, eps: torch.Tensor
) -> LossParts:
    """Negative IWAE bound (Burda et al. 2016) with the K samples z = mu + sigma·eps per image,
    eps (K, B, D); `loss` is the bound's batch mean. For a population every tensor has the
    member dimension first (eps (M, K, B, D)) and the loss is (M,).

    recon is the mean over samples of -log p(x|z_k) and kl the analytic KL, for reporting.
    """
    mu_k, logvar_k = mu.unsqueeze(-3), logvar.unsqueeze(-3)  # broadcast over the K samples
    z = mu_k + torch.exp(0.5 * logvar_k) * eps  # (K, B, D); logvar is clamped by encode
    log_px_z = bernoulli_log_likelihood(decode(z), x.unsqueeze(-3))  # (K, B)
    bound = iwae_bound(log_importance_weights(log_px_z, z, mu_k, logvar_k))
    kl_dims = gaussian_kl(mu, logvar)
    return LossParts(-bound.mean(-1), -log_px_z.mean(-2), kl_dims.sum(-1), kl_dims.mean(-2))


class Linear(nn.Linear):
    """nn.Linear that also runs M models at once (a population, see members.py): with its
    weight stacked as (M, in, out) and its bias as (M, out), an input (M, ..., in) goes through
    one batched product, member m's rows meeting member m's weights only.

    Stacked, each member's weight is stored transposed: the batched product's weight gradient
    then comes out in the weight's own layout (stored as (M, out, in), autograd copied every
    weight gradient into place, a sixth of a CPU step). For one member the values and
    gradients are bit for bit those of F.linear (a test checks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        if x.dim() == 3:  # (M, R, in), the trainer's batches
            return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)
        rows = x.reshape(len(self.weight), -1, x.shape[-1])  # e.g. IWAE's (M, K, B, in)
        out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def member_convolution(
    convolve, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, **options
) -> torch.Tensor:
    """M members' convolutions of x (M, ..., C, H, W) as one grouped convolution (group m:
    member m's channels and filters)."""
    members, lead = len(weight), x.shape[1:-3]
    images = x.reshape(members, -1, *x.shape[-3:]).transpose(0, 1).flatten(1, 2)  # (R, M·C, H, W)
    out = convolve(images, weight.flatten(0, 1), bias.flatten(), groups=members, **options)
    out = out.unflatten(1, (members, -1)).transpose(0, 1)  # (M, R, out, H', W')
    return out.reshape(members, *lead, *out.shape[-3:])


class Conv2d(nn.Conv2d):
    """nn.Conv2d that also runs M models at once (weight (M, out, in, kh, kw))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        return member_convolution(
            F.conv2d, x, self.weight, self.bias, stride=self.stride, padding=self.padding
        )


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d that also runs M models at once (weight (M, in, out, kh, kw))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        return member_convolution(
            F.conv_transpose2d, x, self.weight, self.bias, stride=self.stride, padding=self.padding
        )


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Tanh()


class GaussianMLP(nn.Module):
    """in -> hidden -> hidden -> (mu, logvar) of a diagonal Gaussian: the MLP encoder of x, and
    in a two-layer model q(z2|z1) and p(z1|z2) (Burda et al. 2016, App. C)."""

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Linear(in_dim, hidden_dim),
            _activation(activation),
            Linear(hidden_dim, hidden_dim),
            _activation(activation),
        )
        self.mu = Linear(hidden_dim, out_dim)
        self.logvar = Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, H)
        return self.mu(h), self.logvar(h)


class MLPEncoder(GaussianMLP):
    def __init__(self, *, latent_dim: int, hidden_dim: int, activation: str) -> None:
        super().__init__(
            in_dim=IMAGE_PIXELS, hidden_dim=hidden_dim, out_dim=latent_dim, activation=activation
        )


class MLPDecoder(nn.Module):
    def __init__(self, *, latent_dim: int, hidden_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Linear(latent_dim, hidden_dim),
            _activation(activation),
            Linear(hidden_dim, hidden_dim),
            _activation(activation),
            Linear(hidden_dim, IMAGE_PIXELS),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)  # (B, 784) logits


class ConvEncoder(nn.Module):
    """Two strided convolutions 28 -> 14 -> 7, then a linear bottleneck."""

    def __init__(self, *, latent_dim: int, hidden_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Unflatten(-1, (1, IMAGE_SIDE, IMAGE_SIDE)),
            Conv2d(1, 32, 4, stride=2, padding=1),
            _activation(activation),
            Conv2d(32, 64, 4, stride=2, padding=1),
            _activation(activation),
            nn.Flatten(-3),
            Linear(64 * 7 * 7, hidden_dim),
            _activation(activation),
        )
        self.mu = Linear(hidden_dim, latent_dim)
        self.logvar = Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class ConvDecoder(nn.Module):
    def __init__(self, *, latent_dim: int, hidden_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Linear(latent_dim, hidden_dim),
            _activation(activation),
            Linear(hidden_dim, 64 * 7 * 7),
            _activation(activation),
            nn.Unflatten(-1, (64, 7, 7)),
            ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            _activation(activation),
            ConvTranspose2d(32, 1, 4, stride=2, padding=1),
            nn.Flatten(-3),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


def latent_dims(config: ModelConfig) -> list[int]:
    """The size of each stochastic layer of a model with these settings, bottom (z1) first."""
    if config.stochastic_layers == 2:
        return [config.latent_dim, config.latent2_dim]
    return [config.latent_dim]


class VAE(nn.Module):
    """q(z|x) and p(x|z) with a standard-normal prior; with two stochastic layers, Burda et
    al.'s hierarchy q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1). The commands use `encode` and
    `decode` (the bottom layer, z or z1), `generate` (ancestral samples from the top) and the
    objectives `elbo`, `iwae` and `log_weights`: none of them asks how deep the model is."""

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
        analytic at the sampled z1, and log q(z1|x) - log p(z1|z2) at the sampled z1, z2."""
        mu, logvar = self.encode(x)  # (B, D) each
        z = mu + torch.exp(0.5 * logvar) * noise[0]  # logvar is already clamped by encode
        x_logits = self.decode(z).to(x.dtype)  # float32 (or the pixels' dtype) under autocast
        if self.config.stochastic_layers == 1:
            return elbo_loss(
                x, x_logits, mu.to(x.dtype), logvar.to(x.dtype), beta=beta, free_bits=free_bits
            )
        mu2, logvar2 = self.encode_top(z)
        z2 = mu2 + torch.exp(0.5 * logvar2) * noise[1]
        below, below_logvar = self.prior_below(z2)
        kl_below = gaussian_log_density_per_dim(z, mu, logvar) - gaussian_log_density_per_dim(
            z, below, below_logvar
        )
        kl_dims = torch.cat([kl_below, gaussian_kl(mu2, logvar2)], dim=-1).to(x.dtype)
        recon = -bernoulli_log_likelihood(x_logits, x)
        return elbo_from_parts(recon, kl_dims, beta=beta, free_bits=free_bits)

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
            log_prior = gaussian_log_density(z_here, torch.zeros_like(z), torch.zeros_like(z))
        else:
            mu2, logvar2 = self.encode_top(z)
            z2 = mu2 + torch.exp(0.5 * logvar2) * noise[1]
            if dreg:  # q(z2|z1)'s weights as constants, z1 still a function of the encoder
                mu2, logvar2 = self.clamped(*self.constant_encoder_top(z_here))
            below, below_logvar = self.prior_below(z2)
            log_q = log_q + gaussian_log_density(z2, mu2, logvar2)
            log_prior = gaussian_log_density(z_here, below, below_logvar) + gaussian_log_density(
                z2, torch.zeros_like(z2), torch.zeros_like(z2)
            )
            reweighted.append(z2)
        log_w = log_px_z + log_prior - log_q
        if dreg and log_w.requires_grad:
            weights = torch.softmax(log_w.detach(), dim=-2).unsqueeze(-1)  # (…, K, B, 1)
            for latent in reweighted:
                latent.register_hook(lambda grad, weights=weights: grad * weights)
        return log_w, log_px_z

    def constant_encoder_top(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z2|z1)'s network with its weights detached (gradients reach z1 only)."""
        from torch.func import functional_call

        weights = {name: p.detach() for name, p in self.encoder2.named_parameters()}
        return functional_call(self.encoder2, weights, (z1,))

    def iwae(self, x: torch.Tensor, noise: list[torch.Tensor], *, dreg: bool = False) -> LossParts:
        """The negative IWAE bound (Burda et al. 2016) with K samples per image (noise[l]
        (…, K, B, D_l)); recon is the mean over samples of -log p(x|z_k), kl the KL estimate
        (analytic for one layer)."""
        if self.config.stochastic_layers == 1 and not dreg:
            mu, logvar = self.encode(x)
            return iwae_loss(x, mu, logvar, self.decode, noise[0])
        log_w, log_px_z = self.log_weights(x, noise, dreg=dreg)
        bound = iwae_bound(log_w)
        kl = (log_px_z - log_w).mean(-2)  # E_q[log q(z|x) - log p(z)] per image
        return LossParts(-bound.mean(-1), -log_px_z.mean(-2), kl, kl.mean(-1, keepdim=True))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
