"""The per-step schedules of a phase: the learning rate and the KL weight."""

from __future__ import annotations

import math

from vae_cli.config.settings import Config


def learning_rate(config: Config, progress: float) -> float:
    """Constant, or cosine decay from lr to final_lr as progress goes 0 -> 1."""
    train = config.train
    if train.lr_schedule == "constant":
        return train.lr
    return train.final_lr + 0.5 * (train.lr - train.final_lr) * (1 + math.cos(math.pi * progress))


def kl_weight(config: Config, step: int, steps_per_epoch: int) -> float:
    """beta, reached linearly over the warm-up epochs."""
    warmup_steps = config.train.kl_warmup_epochs * steps_per_epoch
    return config.train.beta * min(1.0, step / warmup_steps) if warmup_steps else config.train.beta
