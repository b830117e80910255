"""The pictures each run folder gets as it trains (samples from one fixed z, test images over
their reconstructions, curves.png): a callback the loop calls, drawing at most every
PICTURE_INTERVAL_SECONDS per member and after the last epoch, and for a member that stops early
the pictures of its last epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from vae_cli.config.settings import Config
from vae_cli.model.priors import PriorNoise
from vae_cli.model.vae import VAE, prior_noise
from vae_cli.pictures import grids, plots
from vae_cli.runs.folder import RunFolder
from vae_cli.training.callbacks import Callbacks
from vae_cli.training.checkpointer import snapshot
from vae_cli.training.events import (
    EpochEnded,
    MemberStopped,
    RunStarted,
    TrainingFinished,
)

SAMPLE_GRID = 64  # 8x8 samples per epoch, from one fixed z
RECONSTRUCTED = 16  # test images shown over their reconstructions per epoch
PSEUDO_INPUTS_SHOWN = 100  # a VampPrior's first pseudo-inputs in pseudo_inputs.png
# Drawing pictures and curves.png every epoch would cost more than a fast epoch itself.
PICTURE_INTERVAL_SECONDS = 20.0


@dataclass
class Owed:
    """A member's last epoch that was not drawn, kept to draw if it stops there."""

    epoch: int
    weights: dict[str, torch.Tensor]  # CPU copies
    config: Config
    folder: RunFolder
    history: list[dict[str, Any]]


class EpochPictures(Callbacks):
    def __init__(self) -> None:
        self.last_drawn = time.perf_counter()
        self.decided: tuple[int, bool] | None = None  # (epoch, draw?) for the epoch at hand
        self.owed: dict[int, Owed] = {}  # per member
        self.fixed_z: dict[int, PriorNoise] = {}
        self.originals: torch.Tensor | None = None

    def on_start(self, event: RunStarted) -> None:
        self.originals = event.pictured

    def drawing(self, event: EpochEnded) -> bool:
        """Whether this epoch is drawn: the plan's last, or the interval (per member) passed."""
        epoch = event.metrics.epoch
        if self.decided is None or self.decided[0] != epoch:
            interval = PICTURE_INTERVAL_SECONDS * event.training
            draw = event.final or time.perf_counter() - self.last_drawn >= interval
            self.decided = (epoch, draw)
        return self.decided[1]

    def on_epoch(self, event: EpochEnded) -> None:
        epoch = event.metrics.epoch
        if self.drawing(event):
            self.draw(event.member, event.config, event.folder, event.history, epoch, event.model)
            self.owed.pop(event.member, None)
            self.last_drawn = time.perf_counter()
        else:
            weights = snapshot(dict(event.model.named_parameters()))
            self.owed[event.member] = Owed(
                epoch, weights, event.config, event.folder, event.history
            )

    def on_member_stop(self, event: MemberStopped) -> None:
        owed = self.owed.pop(event.member, None)
        if owed is not None:
            with torch.device("meta"):
                model = VAE(owed.config.model)
            model.load_state_dict(owed.weights, assign=True)  # that epoch's weights, on the CPU
            self.draw(
                event.member, owed.config, owed.folder, owed.history, owed.epoch, model.eval()
            )

    def on_finish(self, event: TrainingFinished) -> None:
        for member in list(self.owed):
            self.on_member_stop(MemberStopped(member, "", "finished"))

    def draw(
        self,
        member: int,
        config: Config,
        folder: RunFolder,
        history: list[dict[str, Any]],
        epoch: int,
        model: VAE,
    ) -> None:
        if member not in self.fixed_z:
            self.fixed_z[member] = sample_grid_noise(model, config.train.seed)
        assert self.originals is not None, "on_start comes first"
        save_epoch_pictures(model, folder, epoch, self.fixed_z[member], self.originals)
        plots.save_curves(history, folder.curves)


def sample_grid_noise(model: VAE, seed: int) -> PriorNoise:
    """The fixed prior noise of the per-epoch sample pictures, from the run's seed."""
    return prior_noise(model, SAMPLE_GRID, torch.Generator().manual_seed(seed))


@torch.no_grad()
def save_epoch_pictures(
    model: VAE, folder: RunFolder, epoch: int, fixed: PriorNoise, originals: torch.Tensor
) -> None:
    """Samples from the fixed prior noise, test images over their reconstructions, and a
    VampPrior's pseudo-inputs as they are now."""
    model.eval()
    device = next(model.parameters()).device
    samples = torch.sigmoid(model.generate_from(fixed))
    grids.save_grid(samples, folder.sample_picture(epoch), nrow=8)
    originals = originals.to(device)
    reconstructions = torch.sigmoid(model(originals, mean_only=True)[0])
    grids.save_labelled_grid(
        grids.interleave_rows(originals, reconstructions, nrow=8),
        folder.reconstruction_picture(epoch),
        nrow=8,
        row_labels=["test image", "reconstructed"],
        scale=2,
    )
    learned = model.prior.learned_inputs()
    if learned is not None:  # a VampPrior's pseudo-inputs
        shown = grids.contrast_stretched(learned[:PSEUDO_INPUTS_SHOWN])
        grids.save_grid(shown, folder.pseudo_inputs, nrow=10, scale=2)
