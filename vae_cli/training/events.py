"""What the training loop tells its callbacks, one dataclass per event: the start, a phase
change, progress within an epoch, an epoch's metrics, a warning, a member that stopped early and
the end. Callbacks read fields, so a renamed metric fails where it is read, not silently on a
terminal. Imports no torch (the terminal layer reads these without paying for it): the model,
device and images are typed for checkers only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from vae_cli.config.settings import Config
    from vae_cli.data.dataset import Dataset
    from vae_cli.model.vae import VAE
    from vae_cli.runs.folder import RunFolder


@dataclass(frozen=True)
class RunStarted:
    """Training is about to take its first step (of this call: a resume starts mid-run)."""

    device: torch.device
    model: VAE  # the first member's, for the start panel's description
    dataset: Dataset
    steps_per_epoch: int
    train_images: int
    batch_size: int
    validation_images: int
    resumed_epoch: int  # 0 for a new run
    resumed_position: int  # steps into that epoch
    plan: list[str]  # each phase described
    phase: int  # the phase training starts in, from 1
    members: list[str]  # their labels ("" for a single run)
    pictured: torch.Tensor  # the test images the pictures show over their reconstructions


@dataclass(frozen=True)
class PhaseStarted:
    number: int  # from 1
    of: int
    plan: str  # the phase described


@dataclass(frozen=True)
class StepProgress:
    """The running means of the epoch so far, over the members still training."""

    epoch: int  # finished epochs
    step: int  # steps into this epoch
    steps: int  # steps per epoch
    images: float  # images seen this epoch (per member)
    loss: float
    recon: float
    kl: float


@dataclass(frozen=True)
class EpochMetrics:
    """One member's epoch: the line metrics.jsonl gets, field for field (a field that is None
    has no key there). The test pass reports; the validation pass, when held out, chooses."""

    epoch: int
    step: int
    binarize: str
    train_loss: float
    train_recon: float
    train_kl: float
    test_loss: float
    test_recon: float
    test_kl: float
    active_units: int
    kl_per_dim: list[float]
    clipped_fraction: float
    mean_grad_norm: float
    bad_steps: int
    lr: float
    phase: int
    chosen_on: str
    test_iwae: float | None = None  # an IWAE phase: the bound it trains, with its k
    test_iwae_k: int | None = None
    val_loss: float | None = None
    val_recon: float | None = None
    val_kl: float | None = None
    val_iwae: float | None = None
    timing: dict[str, float] = field(default_factory=dict)  # images_per_s, seconds, ...

    @property
    def images_per_s(self) -> float:
        return self.timing["images_per_s"]

    @property
    def seconds(self) -> float:
        return self.timing["seconds"]

    def line(self) -> dict[str, Any]:
        """The metrics.jsonl line, in its documented key order."""
        values = asdict(self)
        timing = values.pop("timing")
        return {key: value for key, value in values.items() if value is not None} | timing


@dataclass(frozen=True)
class EpochEnded:
    """A member's epoch is recorded (before its checkpoint is written)."""

    member: int  # its index in the stack
    label: str  # "" for a single run
    metrics: EpochMetrics
    history: list[dict[str, Any]]  # every metrics line so far, this one last
    model: VAE  # the member's weights as they are now (a view into the stack)
    config: Config
    folder: RunFolder
    final: bool  # the plan's last epoch
    training: int  # members still training


@dataclass(frozen=True)
class TrainingWarning:
    message: str


@dataclass(frozen=True)
class MemberStopped:
    """A member of a stack stopped early, the rest go on."""

    member: int
    label: str
    status: str  # failed or pruned


@dataclass(frozen=True)
class TrainingFinished:
    """The plan is done (not sent on Ctrl-C or an error)."""

    epoch: int
