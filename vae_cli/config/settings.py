"""The settings of a run: one dataclass per concern, and every setting's rules in its field.

`setting(...)` holds a field's default, help text and bounds, and what may be done with it:
change on resume, per phase, per member of a population, be searched, size the memory a step
needs. Flags, TOML files, `--help`, checkpoints and every check read them from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Seeds fit 32 bits everywhere: torch generators take more, but Optuna's samplers (numpy) do not.
MAX_SEED = 2**32 - 1
MAX_MEMBERS = 64  # one stacked step holds every member's weights, moments and activations
UNBOUNDED_EPOCHS = 1_000_000  # a phase bounded by its time budget alone
# The VampPrior's default K (docs/quality.md: step cost against IW-NLL), and its bound: every
# step encodes all K, so past a few thousand the prior costs more than the batch.
PSEUDO_INPUTS, MAX_PSEUDO_INPUTS = 50, 5000
MAX_LAYERS = 8  # stochastic layers of a hierarchy

RUNTIME = "it sets how a trial runs, not what it learns"


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple = (),
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    resumable: bool = False,
    runtime: bool = False,
    per_phase: bool = False,
    per_member: bool = False,
    unsearchable: str | None = None,
    sizes_memory: bool = False,
    alias: str | None = None,
    hidden: bool = False,
) -> Any:
    """A config field: its default, a one-line help text, the values it accepts, and its rules:

    - resumable: a resume may change it (a fine-tune), unless the run trains in phases;
    - runtime: it sets how a run runs (device, CUDA graphs, …): a resume may change it even
      in phases;
    - per_phase: a [[phases]] table may set it;
    - per_member: the members of one stacked step may differ in it (it changes numbers, not
      tensor shapes or the code a step runs);
    - unsearchable: why a sweep may not search it (None: it may);
    - sizes_memory: its largest value makes the most demanding step (the memory check);
    - alias: the setting this key is an older name for (a part of it): old files and flags
      still read, the key is folded into that setting on construction and never stored;
    - hidden: its flag works but `--help` does not list it.
    """
    meta = {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
        "resumable": resumable or runtime,
        "runtime": runtime,
        "per_phase": per_phase,
        "per_member": per_member,
        "unsearchable": unsearchable,
        "sizes_memory": sizes_memory,
        "alias": alias,
        "hidden": hidden,
    }
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    arch: str = setting(
        "mlp",
        "Networks of the bottom layer (x <-> z1); the layers above are MLPs.",
        choices=("mlp", "conv"),
    )
    # Upper bounds keep absurd sizes a one-line error instead of an allocation failure.
    latent_dims: tuple[int, ...] = setting(
        (32,),
        "Size of each stochastic layer's latent code, bottom (z1) first: 32, or 64,32,16 for "
        "three layers.",
        minimum=1,
        maximum=4096,
        sizes_memory=True,
    )
    hidden_dims: tuple[int, ...] = setting(
        (256,),
        "Width of each layer's hidden layers, bottom first; one value serves every layer.",
        minimum=1,
        maximum=8192,
        sizes_memory=True,
    )
    wiring: str = setting(
        "chain",
        "How the layers connect (the same for one layer): chain = q(z1|x) q(z2|z1)..., "
        "p(x|z1) (Burda et al. 2016); skip = q(zL|x) ... q(z1|x,z2), p(x|z1..zL) (Tomczak & "
        "Welling 2018's HVAE); ladder = a deterministic pass up, then inference down merging "
        "each layer's Gaussians by precision (Sønderby et al. 2016).",
        choices=("chain", "skip", "ladder"),
    )
    block: str = setting(
        "mlp",
        "The MLPs' hidden layers: mlp = linear then activation; gated = (W1 h + b1) * "
        "sigmoid(W2 h + b2), the VampPrior code's gated dense layer.",
        choices=("mlp", "gated"),
    )
    activation: str = setting(
        "relu", "Hidden-layer nonlinearity (mlp blocks).", choices=("relu", "tanh")
    )
    prior: str = setting(
        "normal",
        "The prior p(z) of the top latent: normal = N(0, I); vamp = the VampPrior (Tomczak & "
        "Welling 2018), a mixture of the encoder's posteriors at learned pseudo-inputs.",
        choices=("normal", "vamp"),
    )
    pseudo_inputs: int = setting(
        PSEUDO_INPUTS,
        "The VampPrior's number K of pseudo-inputs (learned 784-pixel images in [0, 1]); "
        "every step encodes all K.",
        minimum=1,
        maximum=MAX_PSEUDO_INPUTS,
        sizes_memory=True,
    )
    output_bias: str = setting(
        "zero",
        "Initial bias of the decoder's output logits: zero = as initialised; data = the logit "
        "of each pixel's mean over the training images (Burda et al.'s IWAE code), so a new "
        "model starts at the data's marginal.",
        choices=("zero", "data"),
    )
    max_logvar: float = setting(10.0, "logvar is clamped to [-max, +max].", above=0)
    min_std: float = setting(1e-4, "Floor on the posterior std sigma (0 disables).", minimum=0)
    # The keys of one- and two-layer models before latent_dims: read from old files and flags,
    # folded into the lists on construction, never stored (see fold_legacy_sizes).
    latent_dim: int | None = setting(
        None,
        "Size of the bottom latent z1 (the first of --latent-dims).",
        minimum=1,
        maximum=4096,
        sizes_memory=True,
        alias="latent_dims",
    )
    hidden_dim: int | None = setting(
        None,
        "Width of the bottom layer's hidden layers (the first of --hidden-dims).",
        minimum=1,
        maximum=8192,
        sizes_memory=True,
        alias="hidden_dims",
    )
    stochastic_layers: int | None = setting(
        None,
        "Number of stochastic layers (the length of --latent-dims); a second layer gets "
        "latent2_dim 50 and hidden2_dim 100 unless given.",
        minimum=1,
        maximum=MAX_LAYERS,
        sizes_memory=True,
        alias="latent_dims",
        hidden=True,
    )
    latent2_dim: int | None = setting(
        None,
        "Size of z2 (the second of --latent-dims).",
        minimum=1,
        maximum=4096,
        sizes_memory=True,
        alias="latent_dims",
        hidden=True,
    )
    hidden2_dim: int | None = setting(
        None,
        "Width of the layers between z1 and z2 (the second of --hidden-dims).",
        minimum=1,
        maximum=8192,
        sizes_memory=True,
        alias="hidden_dims",
        hidden=True,
    )

    def __post_init__(self) -> None:
        self.latent_dims, self.hidden_dims = fold_legacy_sizes(self)
        for name in LEGACY_SIZES:
            setattr(self, name, None)

    def layer_sizes(self) -> list[tuple[int, int]]:
        """(latent size, hidden width) of each stochastic layer, bottom (z1) first; a single
        width serves every layer."""
        widths = self.hidden_dims
        if len(widths) == 1:
            widths = widths * len(self.latent_dims)
        return list(zip(self.latent_dims, widths, strict=False))


LEGACY_SIZES = ("latent_dim", "hidden_dim", "stochastic_layers", "latent2_dim", "hidden2_dim")
# What a second layer had when stochastic_layers = 2 named no sizes for it.
LEGACY_SECOND_LAYER = (50, 100)


def fold_legacy_sizes(model: ModelConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """latent_dims and hidden_dims with the legacy keys applied: stochastic_layers sets how
    many layers (a new second one gets size 50 and width 100, as it always did), latent_dim and
    hidden_dim the bottom layer's, latent2_dim and hidden2_dim the second's (ignored by a
    one-layer model, as they always were: old files store them for every model)."""
    latents, hiddens = list(model.latent_dims), list(model.hidden_dims)
    one_width = len(hiddens) == 1
    if one_width:
        hiddens = hiddens * len(latents)
    layers = model.stochastic_layers or len(latents)
    while len(latents) < layers:
        grown = LEGACY_SECOND_LAYER if len(latents) == 1 else (latents[-1], hiddens[-1])
        latents.append(grown[0])
        hiddens.append(grown[1])
    del latents[layers:], hiddens[layers:]
    legacy = ((model.latent_dim, model.hidden_dim), (model.latent2_dim, model.hidden2_dim))
    for index, (latent, hidden) in enumerate(legacy[:layers]):
        if latent is not None:
            latents[index] = latent
        if hidden is not None and index < len(hiddens):
            hiddens[index] = hidden
    if one_width and len(set(hiddens)) == 1:  # one width given stays one width
        hiddens = hiddens[:1]
    return tuple(latents), tuple(hiddens)


@dataclass
class DataConfig:
    dataset: str = setting(
        "mnist",
        "Dataset to train on.",
        choices=("mnist", "fashion-mnist"),
        unsearchable="trials on different data cannot be compared",
    )
    binarize: str = setting(
        "none",
        "Pixels: none = continuous in [0,1]; static/dynamic = Bernoulli draws.",
        choices=("none", "static", "dynamic"),
    )
    limit: int | None = setting(
        None,
        "Use only the first N training and test images.",
        minimum=1,
        unsearchable="it changes the test set, so trials could not be compared",
    )
    validation: int = setting(
        0,
        "Training images held out as a validation split (the same images for every run with "
        "this N): best.pt, sweeps and a population's best member are chosen on it, never on "
        "the test set. 0: no split, best.pt is the last epoch.",
        minimum=0,
        unsearchable="trials must be chosen on one split to be compared",
    )


@dataclass
class TrainConfig:
    epochs: int = setting(
        10, "Number of passes over the training set.", minimum=1, resumable=True, per_phase=True
    )
    batch_size: int = setting(128, "Images per optimiser step.", minimum=1, sizes_memory=True)
    # lr 1.2e-3 and beta2 0.99 measured best for 10 epochs with clipping at 1.0: clipped
    # gradients change scale over training and a shorter second-moment memory follows it
    # (docs/quality.md).
    lr: float = setting(
        1.2e-3,
        "Adam learning rate (peak, with a schedule).",
        above=0,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    adam_beta2: float = setting(
        0.99,
        "Adam's second-moment decay rate.",
        above=0,
        below=1,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    lr_schedule: str = setting(
        "constant",
        "Learning-rate schedule.",
        choices=("constant", "cosine"),
        resumable=True,
        per_phase=True,
    )
    final_lr: float = setting(
        1e-4,
        "Learning rate at the end of a cosine schedule.",
        minimum=0,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    time_budget: float | None = setting(
        None,
        "Minutes of training time (the steps' wall time, waits for the device included; not "
        "the test pass, pictures or checkpoints): the cosine schedule follows it and training "
        "stops at the first epoch end past it.",
        above=0,
        resumable=True,
        per_phase=True,
    )
    seed: int = setting(
        0,
        "Seed for weights, data order and noise.",
        minimum=0,
        maximum=MAX_SEED,
        per_member=True,
    )
    grad_clip: float = setting(
        1.0,
        "Max global gradient norm (0 disables clipping).",
        minimum=0,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    max_bad_steps: int = setting(
        20,
        "Stop after this many non-finite steps in a row.",
        minimum=1,
        maximum=1_000_000,
        runtime=True,
        unsearchable="it is a safety stop, not a model setting",
    )
    beta: float = setting(
        1.0,
        "Weight of the KL term.",
        minimum=0,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    kl_warmup_epochs: int = setting(
        0,
        "Epochs over which the KL weight rises 0 -> beta.",
        minimum=0,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    free_bits: float = setting(
        0.0,
        "Per-dimension KL floor in nats (Kingma et al. 2016).",
        minimum=0,
        resumable=True,
        per_phase=True,
        per_member=True,
    )
    ema: float = setting(
        0.0,
        "Decay of an exponential moving average of the weights, e.g. 0.999 (0: none). With "
        "it, evaluation, best.pt, the pictures, export and every command use the averaged "
        "weights; training goes on from its own.",
        minimum=0,
        below=1,
    )
    objective: str = setting(
        "elbo", "Training bound.", choices=("elbo", "iwae"), resumable=True, per_phase=True
    )
    # Training holds all k samples of a batch at once (evaluation chunks them).
    k: int = setting(
        1,
        "Importance samples per image for the IWAE objective.",
        minimum=1,
        maximum=1000,
        resumable=True,
        per_phase=True,
        sizes_memory=True,
    )
    dreg: bool = setting(
        False,
        "IWAE: the encoder's gradient by the doubly reparameterized estimator (Tucker et al. "
        "2018), lower variance at the same cost.",
        resumable=True,
        per_phase=True,
    )
    device: str = setting(
        "auto",
        "auto picks cuda, then mps, then cpu.",
        choices=("auto", "cpu", "cuda", "mps"),
        runtime=True,
        unsearchable=RUNTIME,
    )
    amp: bool = setting(
        False, "bf16 autocast on CUDA (ignored on CPU).", runtime=True, unsearchable=RUNTIME
    )
    compile: bool = setting(
        False,
        "torch.compile the ELBO step (opt-in; slower to start; IWAE runs eagerly).",
        runtime=True,
        unsearchable=RUNTIME,
    )
    cuda_graph: bool = setting(
        True,
        "Capture the training step in a CUDA graph and replay it (CUDA only).",
        runtime=True,
        unsearchable=RUNTIME,
    )
    tensorboard: bool = setting(
        False, "Also write TensorBoard event files to RUN/tensorboard/.", runtime=True
    )


SECTION_TYPES: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Training phases after the first ([train] is the first): each a dict of per-phase
    # settings, applied on top of the phase before it, with its own epochs / time_budget.
    phases: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (None values left out, as TOML has no null; lists as lists)."""
        tables: dict[str, Any] = {
            name: {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(section).items()
                if v is not None
            }
            for name, section in self.sections()
        }
        if self.phases:
            tables["phases"] = [dict(phase) for phase in self.phases]
        return tables

    def sections(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in SECTION_TYPES]

    def value(self, name: str) -> Any:
        """A setting's value by its name (names are unique across sections)."""
        return getattr(getattr(self, FIELDS[name][0]), name)

    def replace(self, values: dict[str, Any]) -> Config:
        """A copy with flat `name -> value` overrides (names as in `FIELDS`)."""
        sections = {name: dataclasses.asdict(section) for name, section in self.sections()}
        for name, value in values.items():
            sections[FIELDS[name][0]][name] = value
        built = {name: SECTION_TYPES[name](**sections[name]) for name in SECTION_TYPES}
        return Config(**built, phases=self.phases)

    def phase(self, index: int) -> Config:
        """The settings training uses in phase `index` (0: the [train] table), without phases.

        Settings carry over from phase to phase; the length (epochs or time_budget) is each
        phase's own. A phase given only a time budget runs until it is spent.
        """
        current = dataclasses.replace(self, phases=())
        for phase in self.phases[:index]:
            length = {"epochs": UNBOUNDED_EPOCHS, "time_budget": None}
            current = current.replace({**length, **phase})
        return current


def section_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Flat field name -> (section, dataclasses.Field); names are unique across sections."""
    return {
        f.name: (section, f)
        for section, cls in SECTION_TYPES.items()
        for f in dataclasses.fields(cls)
    }


FIELDS = section_fields()


def rule(name: str, key: str) -> Any:
    """One of a setting's rules (see `setting`), read from its field when it is asked for."""
    return FIELDS[name][1].metadata[key]


def resumable(name: str, *, phased: bool) -> bool:
    """Whether a resume may change the setting; a run in phases continues them as written,
    so only how it runs may change then."""
    return rule(name, "runtime") if phased else rule(name, "resumable")


def phase_keys() -> list[str]:
    """What a [[phases]] table may set, in field order."""
    return [name for name in FIELDS if rule(name, "per_phase")]


def member_keys() -> list[str]:
    """What the members of one stacked step may differ in."""
    return [name for name in FIELDS if rule(name, "per_member")]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def describe_model(model: ModelConfig) -> str:
    """A model's shape in words: "1 layer 32", "3 layers 64-32-16, ladder, gated, VampPrior
    K=50" (the wiring is named where there is more than one layer)."""
    layers = len(model.latent_dims)
    words = [f"{layers} layer{'s' if layers > 1 else ''} {'-'.join(map(str, model.latent_dims))}"]
    if layers > 1:
        words.append(model.wiring)
    if model.arch != "mlp":
        words.append(model.arch)
    if model.block != "mlp":
        words.append(model.block)
    if model.prior == "vamp":
        words.append(f"VampPrior K={model.pseudo_inputs}")
    return ", ".join(words)
