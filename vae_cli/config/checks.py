"""Checks across settings: values that are each acceptable but contradict each other, in any
phase. Run before anything is created, by `vae train` and by `vae tune` for its fixed settings."""

from __future__ import annotations

import math

from vae_cli.config.settings import Config
from vae_cli.config.values import count, show_value
from vae_cli.errors import UserError


def check_training_settings(config: Config) -> None:
    """Settings that contradict each other, in any phase."""
    for index in range(len(config.phases) + 1):
        train = config.phase(index).train
        where = f"phase {index + 1}: " if config.phases else ""
        # The KL weight, its warm-up and free bits shape the ELBO only; IWAE has no KL term.
        if train.objective == "iwae" and (
            train.beta != 1.0 or train.kl_warmup_epochs or train.free_bits
        ):
            raise UserError(
                f"{where}--objective iwae trains the importance-weighted bound (Burda et al. "
                "2016), which has no separate KL term: --beta, --kl-warmup-epochs and "
                "--free-bits apply to --objective elbo only (set them to 1, 0 and 0)"
            )
        if train.lr_schedule == "cosine" and train.final_lr > train.lr:
            raise UserError(
                f"{where}--final-lr {train.final_lr:g} is above --lr {train.lr:g}: a cosine "
                "schedule decays from --lr to --final-lr"
            )


def check_posterior_bounds(config: Config) -> None:
    """The floor on sigma must lie below the ceiling that max_logvar puts on it."""
    model = config.model
    ceiling = math.exp(model.max_logvar / 2)
    if model.min_std >= ceiling:
        raise UserError(
            f"--min-std {model.min_std:g} is not below the largest sigma --max-logvar "
            f"{model.max_logvar:g} allows (exp({model.max_logvar:g} / 2) = {ceiling:.4g}); "
            "lower --min-std or raise --max-logvar"
        )


def check_layers(config: Config) -> None:
    """One hidden width per stochastic layer (or one for all); wirings the networks support."""
    model = config.model
    layers = len(model.latent_dims)
    if len(model.hidden_dims) not in (1, layers):
        raise UserError(
            f"--hidden-dims {show_value(model.hidden_dims)}: {len(model.hidden_dims)} widths "
            f"for {count(layers, 'layer')} (--latent-dims {show_value(model.latent_dims)}); "
            "give one width per layer, or one for all"
        )
    if model.wiring == "skip" and model.arch == "conv" and layers > 1:
        raise UserError(
            "--wiring skip joins x with the layer above in z1's posterior, and every layer in "
            "the decoder, which the conv networks do not take; use --arch mlp, or --wiring "
            "chain or ladder with --arch conv"
        )


def check_settings(config: Config) -> None:
    check_training_settings(config)
    check_posterior_bounds(config)
    check_layers(config)
