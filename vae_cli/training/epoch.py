"""The end of an epoch in numbers: the training seconds and images/s the clock measured (compile
and capture time apart), and the line of metrics.jsonl with the test pass."""

from __future__ import annotations

import time
from typing import Any

from vae_cli.config.settings import Config
from vae_cli.model.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.model.vae import VAE
from vae_cli.training.clock import TrainingClock
from vae_cli.training.state import Progress


class EpochTimer:
    """This epoch's training seconds and rate per member, from the clock's totals at its start."""

    def __init__(self, clock: TrainingClock, progress: Progress) -> None:
        self.clock, self.progress = clock, progress
        self.images = 0  # trained this epoch, per member
        self.mark()

    def mark(self) -> None:
        clock = self.clock
        self.seconds0, self.setup0 = self.progress.seconds, dict(clock.setup)
        self.setup_images0, self.started = clock.setup_images, time.perf_counter()

    def timing(self) -> dict[str, float]:
        """Compile and capture seconds are each measured once and never subtracted from the
        training time; the images of a step timed as setup are left out of images/s."""
        seconds = self.progress.seconds - self.seconds0
        timing = {"seconds": seconds, "started": self.started}
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
    test_x: Any,
    progress: Progress,
    settings: Config,
    phase: int,
    train: dict[str, float],
    timing: dict[str, float],
    lr: float,
) -> dict[str, Any]:
    """One line of metrics.jsonl: the epoch's training sums and the test pass."""
    test = evaluate_elbo(model, test_x)
    metrics = {
        "epoch": progress.epoch,
        "step": progress.step,
        "binarize": settings.data.binarize,
        "train_loss": train["loss"],
        "train_recon": train["recon"],
        "train_kl": train["kl"],
        "test_loss": test.loss,
        "test_recon": test.recon,
        "test_kl": test.kl,
        "active_units": test.active_units,
        "kl_per_dim": test.kl_per_dim,
        "clipped_fraction": train["clipped_fraction"],
        "mean_grad_norm": train["mean_grad_norm"],
        "bad_steps": int(train["bad_steps"]),
        "lr": lr,
        "phase": phase,
    }
    if settings.train.objective == "iwae":
        # The bound being trained, on the test set: what picks best.pt.
        bound = importance_weighted_nll(model, test_x, settings.train.k)
        metrics.update(test_iwae=bound.nll, test_iwae_k=settings.train.k)
    metrics.update({key: value for key, value in timing.items() if key != "started"})
    metrics["epoch_seconds"] = time.perf_counter() - timing["started"]
    return metrics
