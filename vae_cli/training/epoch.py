"""The end of an epoch in numbers: the training seconds and images/s the clock measured (compile
and capture time apart), and the line of metrics.jsonl with the test pass."""

from __future__ import annotations

import time
from typing import NamedTuple

import torch

from vae_cli.config.settings import Config
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model.vae import VAE
from vae_cli.runs.best import LAST, VALIDATION
from vae_cli.training.clock import TrainingClock
from vae_cli.training.events import EpochMetrics
from vae_cli.training.state import Progress


class EvaluationImages(NamedTuple):
    """Pixels in [0, 1] on the device, each set in its one fixed binarization: the validation
    split ((0, 784) without one) and the test set."""

    validation: torch.Tensor
    test: torch.Tensor


class EpochTimer:
    """This epoch's training seconds and rate per member, from the clock's totals at its start,
    and its wall time."""

    def __init__(self, clock: TrainingClock, progress: Progress) -> None:
        self.clock, self.progress = clock, progress
        self.images = 0  # trained this epoch, per member
        self.measured = time.perf_counter()  # the last epoch's wall time ended here
        self.mark()

    def mark(self) -> None:
        clock = self.clock
        self.seconds0, self.setup0 = self.progress.seconds, dict(clock.setup)
        self.setup_images0 = clock.setup_images

    def epoch_seconds(self) -> float:
        """Wall time since the last epoch's was measured: its pictures and writes, this epoch's
        steps and every member's test pass. Consecutive epochs share no second, so they add
        up to the loop's wall time."""
        now = time.perf_counter()
        seconds, self.measured = now - self.measured, now
        return seconds

    def timing(self) -> dict[str, float]:
        """Compile and capture seconds are each measured once and never subtracted from the
        training time; the images of a step timed as setup are left out of images/s."""
        seconds = self.progress.seconds - self.seconds0
        timing = {"seconds": seconds}
        for key, total in self.clock.setup.items():
            if total > self.setup0[key]:
                timing[key] = total - self.setup0[key]
        images = self.images - (self.clock.setup_images - self.setup_images0)
        timing["images_per_s"] = images / seconds if seconds > 0 else 0.0
        self.images = 0
        self.mark()
        return timing


def member_metrics(
    model: VAE,
    evaluation: EvaluationImages,
    progress: Progress,
    settings: Config,
    phase: int,
    train: dict[str, float],
    timing: dict[str, float],
    lr: float,
) -> EpochMetrics:
    """One member's epoch (its metrics.jsonl line): the training sums, the validation pass
    (what best.pt is chosen on) and the test pass (reported only)."""
    iwae, validating = settings.train.objective == "iwae", len(evaluation.validation) > 0
    # The bound being trained, on the test set and (what picks best.pt) on validation.
    test = evaluate_elbo(model, evaluation.test)
    test_iwae = importance_weighted_nll(model, evaluation.test, settings.train.k) if iwae else None
    held_out = evaluate_elbo(model, evaluation.validation) if validating else None
    val_iwae = (
        importance_weighted_nll(model, evaluation.validation, settings.train.k)
        if iwae and held_out is not None
        else None
    )
    return EpochMetrics(
        epoch=progress.epoch,
        step=progress.step,
        binarize=settings.data.binarize,
        train_loss=train["loss"],
        train_recon=train["recon"],
        train_kl=train["kl"],
        test_loss=test.loss,
        test_recon=test.recon,
        test_kl=test.kl,
        active_units=test.active_units,
        kl_per_dim=test.kl_per_dim,
        clipped_fraction=train["clipped_fraction"],
        mean_grad_norm=train["mean_grad_norm"],
        bad_steps=int(train["bad_steps"]),
        lr=lr,
        phase=phase,
        chosen_on=VALIDATION if held_out is not None else LAST,
        test_iwae=test_iwae.nll if test_iwae is not None else None,
        test_iwae_k=settings.train.k if iwae else None,
        val_loss=held_out.loss if held_out is not None else None,
        val_recon=held_out.recon if held_out is not None else None,
        val_kl=held_out.kl if held_out is not None else None,
        val_iwae=val_iwae.nll if val_iwae is not None else None,
        timing=dict(timing),  # epoch_seconds joins it once every member is tested
    )
