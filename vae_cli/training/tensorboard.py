"""TensorBoard event files for a run (`--tensorboard`): per-epoch scalars, the picture grids,
and the run's settings as hparams. metrics.jsonl stays the source of truth."""

from __future__ import annotations

from typing import Any

from vae_cli.config.settings import Config
from vae_cli.errors import UserError
from vae_cli.runs.best import best_epoch, selection_loss, test_loss
from vae_cli.runs.folder import RunFolder
from vae_cli.runs.metrics import read_metrics
from vae_cli.training.callbacks import Callbacks
from vae_cli.training.events import EpochEnded

# TensorBoard tag -> the epoch's metric (an EpochMetrics field, or one of its timings).
SCALARS = {
    "train/loss": "train_loss",
    "train/recon": "train_recon",
    "train/kl": "train_kl",
    "test/loss": "test_loss",
    "test/recon": "test_recon",
    "test/kl": "test_kl",
    "test/active_units": "active_units",
    "test/iwae": "test_iwae",
    "validation/loss": "val_loss",
    "validation/recon": "val_recon",
    "validation/kl": "val_kl",
    "validation/iwae": "val_iwae",
    "train/lr": "lr",
    "train/clipped_fraction": "clipped_fraction",
    "train/images_per_s": "images_per_s",
}


def check_tensorboard_installed() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None


class TensorBoardLogger(Callbacks):
    """Writes RUN/tensorboard/; a resumed run drops the events past its checkpoint's epoch."""

    def __init__(self, paths: RunFolder, config: Config, resumed_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.paths, self.config = paths, config
        self.writer = SummaryWriter(
            log_dir=str(paths.root / "tensorboard"),
            purge_step=resumed_epoch + 1 if resumed_epoch else None,
        )

    def on_epoch(self, event: EpochEnded) -> None:
        import numpy as np
        from PIL import Image

        metrics = event.metrics
        epoch = metrics.epoch
        for tag, name in SCALARS.items():
            value = getattr(metrics, name)
            if value is not None:
                self.writer.add_scalar(tag, value, epoch)
        pictures = {
            "samples": self.paths.sample_picture(epoch),
            "reconstructions": self.paths.reconstruction_picture(epoch),
        }
        for tag, picture in pictures.items():
            if picture.is_file():  # drawn this epoch (pictures are throttled)
                with Image.open(picture) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self.writer.add_image(tag, pixels, epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        """The run's settings and its true best as its one hparams record: a resumed run's
        earlier record (with the best of its time) is replaced, not kept beside it."""
        best = best_epoch(read_metrics(self.paths))
        if best is not None:
            folder = self.paths.root / "tensorboard" / "hparams"
            earlier = list(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
            chosen = {"hparam/best_test_loss": test_loss(best)}  # at the chosen epoch
            if "val_loss" in best:
                chosen["hparam/best_val_loss"] = selection_loss(best)
            self.writer.add_hparams(hparams(self.config), chosen, run_name="hparams")
            for path in earlier:
                path.unlink(missing_ok=True)
        self.writer.close()


def hparams(config: Config) -> dict[str, Any]:
    """The run's settings as TensorBoard hparams (`section.field`; unset ones left out)."""
    settings = {  # TensorBoard takes numbers and strings: a per-layer list as "64,32"
        f"{section}.{key}": ",".join(map(str, value)) if isinstance(value, list) else value
        for section, values in config.to_dict().items()
        if section != "phases"
        for key, value in values.items()
    }
    return {**settings, "phases": len(config.phases) + 1}
