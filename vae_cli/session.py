"""Starting or resuming a training run: config precedence, run folder, data, then the trainer.

Everything a `vae train` invocation decides before the loop starts, in the order that refuses
bad input before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_cli.config import (
    FIELDS,
    Config,
    apply_flags,
    count,
    flag_name,
    load_config,
    show_value,
)
from vae_cli.errors import UserError

# Settings a resumed run may change: they affect neither the model nor the data (e.g. an
# IWAE or lower-learning-rate fine-tune of a finished run).
RESUMABLE = {
    "epochs",
    "device",
    "amp",
    "compile",
    "cuda_graph",
    "tensorboard",
    "max_bad_steps",
    "lr",
    "adam_beta2",
    "lr_schedule",
    "final_lr",
    "time_budget",
    "grad_clip",
    "beta",
    "kl_warmup_epochs",
    "free_bits",
    "objective",
    "k",
    "dreg",
}


def build_config(flags: dict[str, Any], config_file: Path | None) -> Config:
    """Built-in defaults < config file < command-line flags."""
    base = load_config(config_file) if config_file is not None else Config()
    return apply_flags(base, flags)


def resume_target(target: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for --resume given a run folder or a checkpoint file; a folder
    that a trainer holds is refused first, naming it (the trainer takes the lock itself)."""
    from vae_cli.lock import check_not_training

    if target.is_dir():
        check_not_training(target)
        checkpoint = target / "checkpoints" / "last.pt"
        if not checkpoint.is_file():
            raise UserError(f"--resume {target}: no checkpoints/last.pt in that folder")
        return target, checkpoint
    if not target.exists():
        raise UserError(f"--resume {target}: no such run folder or checkpoint")
    if target.suffix == ".safetensors":
        raise UserError(
            f"--resume {target}: an export holds the weights only; resume from the run's "
            "checkpoints/last.pt (or its run folder)"
        )
    root = target.parent.parent if target.parent.name == "checkpoints" else target.parent
    check_not_training(root)
    return root, target


# What a resume of a run with [[phases]] may change: how it runs, not what it trains.
RESUMABLE_WITH_PHASES = {"device", "amp", "compile", "cuda_graph", "tensorboard", "max_bad_steps"}


def resumed_config(stored: Config, flags: dict[str, Any]) -> Config:
    """The checkpoint's config with the flags a resume may change; others must agree."""
    given = {key: value for key, value in flags.items() if value is not None}
    current = {key: getattr(getattr(stored, FIELDS[key][0]), key) for key in given}
    for key, value in given.items():
        if stored.phases and key in RESUMABLE - RESUMABLE_WITH_PHASES and value != current[key]:
            raise UserError(
                f"{flag_name(key)}: this run trains in [[phases]] from its config; a resume "
                "continues them as written (start a new run to change them)"
            )
        if key not in RESUMABLE and value != current[key]:
            trained = (
                f"without {flag_name(key)}"
                if current[key] is None
                else f"with {flag_name(key)} {show_value(current[key])}"
            )
            raise UserError(
                f"{flag_name(key)} {show_value(value)}: the resumed run was trained {trained}, "
                "and a resumed run keeps its model and data settings (start a new run with "
                "--name instead)"
            )
    return apply_flags(stored, {key: given[key] for key in given if key in RESUMABLE})


def update_run_config(root: Path, config: Config, command: str, notes: list[str]) -> None:
    """A resume that changed settings rewrites config.toml, keeping the original manifest and
    adding the resume's command and what it changed about the run's numbers."""
    from vae_cli.config import to_toml
    from vae_cli.files import write_atomically
    from vae_cli.runs import read_manifest

    manifest = read_manifest(root)
    for key, added in (("resumed_with", [command]), ("resume_notes", notes)):
        earlier = manifest.get(key)
        if added:
            manifest[key] = [*(earlier if isinstance(earlier, list) else []), *added]
    write_atomically(root / "config.toml", to_toml(config, manifest).encode())


def resume_notes(checkpoint: dict[str, Any], config: Config, device_type: str) -> list[str]:
    """What makes a resumed run differ from an uninterrupted one, for the manifest."""
    from vae_cli.streams import saved_device_type

    step, stored = checkpoint["step"], checkpoint["config"].train
    notes = []
    if (saved := saved_device_type(checkpoint)) != device_type:
        notes.append(
            f"step {step}: {saved} -> {device_type}; the noise and binarization streams were "
            "re-derived from the seed and the step"
        )
    horizon = (config.train.epochs, config.train.time_budget)
    if config.train.lr_schedule == "cosine" and horizon != (stored.epochs, stored.time_budget):
        notes.append(
            f"step {step}: the cosine schedule's horizon changed (epochs {stored.epochs} -> "
            f"{config.train.epochs}, time budget {stored.time_budget} -> "
            f"{config.train.time_budget}); the learning rate from here follows the new one"
        )
    return notes


def check_unfinished(
    resume: Path, config: Config, checkpoint: dict[str, Any], flags: dict[str, Any]
) -> None:
    """A resume must have training left to do: epochs, time budget or phases."""
    from vae_cli.plan import resume_done

    if not resume_done(config, checkpoint):
        return
    if config.phases:
        raise UserError(f"--resume {resume}: the run has finished all its phases")
    done = checkpoint["epoch"]
    further = f"pass --epochs N with N > {done} (the total, not the extra epochs)"
    if config.train.time_budget:
        further += " or a larger --time-budget"
    trained = f"the run has already trained {count(done, 'epoch')}"
    if flags.get("epochs") is not None and flags["epochs"] <= done:
        raise UserError(f"--epochs {flags['epochs']}: {trained}; to train it further, {further}")
    ended = " or spent its time budget" if config.train.time_budget else ""
    raise UserError(f"--resume {resume}: {trained}{ended}; to train it further, {further}")


def check_seed_and_seeds(config: Config, flags: dict[str, Any], config_file: Path | None) -> None:
    """A population takes its members' seeds from --seeds: a --seed beside it would be
    silently ignored, so the pair is refused (flags or config file alike)."""
    from vae_cli.config import read_toml

    if config.train.seeds is None:
        return
    in_file = config_file is not None and "seed" in read_toml(config_file).get("train", {})
    if flags.get("seed") is not None or in_file:
        where = "--seed" if flags.get("seed") is not None else f"{config_file}: [train] seed"
        raise UserError(
            f"{where} and --seeds {config.train.seeds}: a population's members take their "
            "seeds from --seeds; drop one of them"
        )


def check_phase_lengths(config: Config, flags: dict[str, Any], config_file: Path | None) -> None:
    """--epochs and --time-budget set one length; a config in phases has one per phase, and
    changing only the first would hide how long the others still run."""
    given = [key for key in ("epochs", "time_budget") if flags.get(key) is not None]
    if config.phases and given:
        raise UserError(
            f"{flag_name(given[0])}: {config_file} trains in {len(config.phases) + 1} phases, "
            f"each with its own length; to shorten the run, copy the file and lower each "
            "phase's epochs or time_budget"
        )


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


@dataclass
class RunSpec:
    """A run to train: its settings, its folder, the checkpoint it resumes from (None: a new
    run), its name within a stack, and a sweep's pruner for it."""

    config: Config
    root: Path
    checkpoint: dict[str, Any] | None = None
    label: str = ""
    reporter: Any = None


@dataclass
class Trained:
    """What a `vae train` invocation trained: each run's final state, and for a population
    its summary (population.json)."""

    specs: list[RunSpec]
    states: list[Any]
    population: dict[str, Any] | None = None

    def written(self) -> list[str]:
        from vae_cli.run_files import RunPaths

        if self.population is not None:
            return [str(self.specs[0].root.parent / "population.json")]
        paths = RunPaths(self.specs[0].root)
        files = (paths.config, paths.last, paths.best, paths.metrics, paths.curves)
        return [str(p) for p in files if p.exists()]


def start_training(
    flags: dict[str, Any],
    *,
    config_file: Path | None,
    data_dir: Path | None,
    runs_dir: Path,
    name: str | None,
    resume: Path | None,
    overwrite: bool,
    command: str,
    display: Callable[..., Any],
) -> Trained:
    """Validate everything, prepare the run folder(s), train: one run, or a population of
    seeds (--seeds) whose members are run folders inside RUNS/NAME/."""
    from vae_cli.config import parse_seeds
    from vae_cli.population import (
        is_population,
        member_config,
        member_label,
        settle_checkpoints,
    )
    from vae_cli.runs import (
        check_folder_name,
        check_new_run,
        default_run_name,
        run_data_dir,
        run_dir_of,
    )

    population = None
    if resume is not None:
        if config_file is not None or name is not None or overwrite:
            raise UserError(
                "--resume continues a run with its own config and folder; "
                "drop --config, --name and --overwrite"
            )
        if flags.get("seeds") is not None:
            raise UserError("--seeds: a resume continues the members the population has")
        if resume.is_dir() and is_population(resume):
            from vae_cli.lock import check_not_training

            check_not_training(resume)
            settle_checkpoints(resume)  # a save that a kill cut short: finished or undone
            population, specs = resume, resume_population(resume, flags)
        else:
            member_of = (resume if resume.is_dir() else run_dir_of(resume)).parent
            if is_population(member_of):
                from vae_cli.lock import check_not_training

                check_not_training(member_of)
                settle_checkpoints(member_of)
            specs = [resume_run(resume, flags)]
        data_dir = run_data_dir(specs[0].root, data_dir)  # as trained, like every command
    else:
        config = build_config(flags, config_file)
        check_seed_and_seeds(config, flags, config_file)
        check_phase_lengths(config, flags, config_file)
        if name is not None:
            check_folder_name(name, "--name")
        root = runs_dir / (default_run_name() if name is None else name)
        check_new_run(root, overwrite=overwrite)
        if config.train.seeds is None:
            specs = [RunSpec(config, root)]
        else:
            population = root
            specs = [
                RunSpec(
                    member_config(config, seed), root / member_label(seed), label=member_label(seed)
                )
                for seed in parse_seeds(config.train.seeds)
            ]
    states = train_stack(
        specs,
        data_dir=data_dir,
        command=command,
        display=display,
        overwrite=overwrite,
        population=population,
    )
    summary = None
    if population is not None:
        from vae_cli.population import read_population

        summary = read_population(population).get("summary")
    return Trained(specs, states, summary)


def resume_run(target: Path, flags: dict[str, Any]) -> RunSpec:
    """One run to continue from its last.pt (or the checkpoint given), with the flags a resume
    may change."""
    from vae_cli.checkpoint import load_checkpoint

    root, checkpoint_path = resume_target(target)
    checkpoint = load_checkpoint(checkpoint_path)
    config = resumed_config(checkpoint["config"], flags)
    check_unfinished(target, config, checkpoint, flags)
    return RunSpec(config, root, checkpoint)


def resume_population(root: Path, flags: dict[str, Any]) -> list[RunSpec]:
    """Every member still training when the population stopped; members that failed or were
    pruned stay as they ended."""
    from vae_cli.checkpoint import load_checkpoint
    from vae_cli.population import member_folders
    from vae_cli.run_files import read_status

    specs = []
    for folder in member_folders(root):
        if read_status(folder) in ("failed", "pruned"):
            continue
        member, checkpoint_path = resume_target(folder)
        checkpoint = load_checkpoint(checkpoint_path)
        config = resumed_config(checkpoint["config"], flags)
        specs.append(RunSpec(config, member, checkpoint, label=folder.name))
    if not specs:
        raise UserError(f"--resume {root}: every member failed or was pruned")
    check_same_step(specs)
    check_unfinished(root, specs[0].config, specs[0].checkpoint, flags)
    return specs


def check_same_step(specs: list[RunSpec]) -> None:
    """The members of a population resume together from one step. Saves are committed as one
    (population.commit_checkpoints), so only a member resumed alone can be elsewhere."""
    from vae_cli.state import Progress

    first = specs[0]
    for spec in specs[1:]:
        if Progress.from_checkpoint(spec.checkpoint) != Progress.from_checkpoint(first.checkpoint):
            raise UserError(
                f"{spec.root} was saved at epoch {spec.checkpoint['epoch']} (step "
                f"{spec.checkpoint['step']}), {first.root.name} at epoch "
                f"{first.checkpoint['epoch']} (step {first.checkpoint['step']}): a member was "
                "resumed alone; resume each member to the same epoch first (vae train "
                "--resume MEMBER --epochs N), then the population"
            )


def train_stack(
    specs: list[RunSpec],
    *,
    data_dir: Path | None,
    command: str,
    display: Callable[..., Any],
    overwrite: bool = False,
    dataset: Any = None,
    population: Path | None = None,
) -> list[Any]:
    """Train runs that share a shape in one stacked step: new runs (checkpoint None) get
    their folders, resumed ones continue; `dataset` is read from `data_dir` unless given.
    Everything is checked before any folder is made."""
    from vae_cli.callbacks import CallbackGroup, Callbacks
    from vae_cli.config import to_toml
    from vae_cli.data import load_dataset, resolve_data_dir
    from vae_cli.device import device_description, flush_denormals, resolve_device
    from vae_cli.files import write_atomically
    from vae_cli.memory import check_step_fits
    from vae_cli.run_files import RunPaths
    from vae_cli.runs import build_manifest
    from vae_cli.train import Run, train

    first = specs[0].config
    for spec in specs:
        check_training_settings(spec.config)
        check_posterior_bounds(spec.config)
    if first.train.tensorboard:
        from vae_cli.board import check_tensorboard_installed

        check_tensorboard_installed()
    device = resolve_device(first.train.device)
    flush_denormals(device)  # before reading the data starts torch's worker threads
    if dataset is None:
        dataset = load_dataset(resolve_data_dir(data_dir), first.data.dataset, first.data.limit)
    check_step_fits(first, device, len(dataset.train_images), members=len(specs))
    new = [spec for spec in specs if spec.checkpoint is None]
    manifest = None
    if new:
        manifest = build_manifest(
            command, device_description(device), resolve_data_dir(data_dir), dataset.md5
        )
    locks = claim_folders(specs, population, overwrite=overwrite, command=command)
    try:
        if population is not None and new:
            write_population_record(population, specs, command)
        for spec in specs:
            if spec.checkpoint is None:
                write_atomically(spec.root / "config.toml", to_toml(spec.config, manifest).encode())
                continue
            notes = resume_notes(spec.checkpoint, spec.config, device.type)
            if spec.config != spec.checkpoint["config"] or notes:
                update_run_config(spec.root, spec.config, command, notes)
        epochs = None if first.phases else first.train.epochs  # phases may end by time budget
        shown = population or specs[0].root
        progress = display(run_dir=str(shown), epochs=epochs, binarize=first.data.binarize)
        runs = []
        for spec in specs:
            paths = RunPaths(spec.root)
            hooks: list[Callbacks] = []  # the run's own: TensorBoard first, to see a pruned epoch
            if spec.config.train.tensorboard:
                from vae_cli.board import TensorBoardLogger

                resumed = spec.checkpoint["epoch"] if spec.checkpoint else 0
                hooks.append(TensorBoardLogger(paths, spec.config, resumed))
            if spec.reporter is not None:
                hooks.append(spec.reporter)
            runs.append(Run(spec.config, paths, spec.checkpoint, CallbackGroup(*hooks), spec.label))
        try:
            states = train(runs, dataset=dataset, callbacks=progress, population=population)
        finally:
            for run in runs:
                run.callbacks.close()
            progress.close()
            for folder in populations_of(specs, population):
                finish_population(folder)
    finally:
        locks.release()
    return states


def populations_of(specs: list[RunSpec], population: Path | None) -> list[Path]:
    """The populations whose members were trained: the one trained, or the one a member
    resumed alone belongs to (its population.json then shows the member's new state)."""
    from vae_cli.population import is_population

    if population is not None:
        return [population]
    return sorted({spec.root.parent for spec in specs if is_population(spec.root.parent)})


def claim_folders(
    specs: list[RunSpec], population: Path | None, *, overwrite: bool, command: str
) -> Any:
    """Every folder this invocation trains, made (a new run's) and locked before anything is
    written into it: one trainer per run folder. --overwrite replaces a folder only when no
    trainer holds it or any run inside it."""
    from vae_cli.files import make_folder
    from vae_cli.lock import RunLocks, check_not_training
    from vae_cli.runs import check_new_run, replace_folder

    top = population if population is not None else specs[0].root
    creating = any(spec.checkpoint is None for spec in specs)
    if creating and overwrite and top.is_dir():
        for folder in [top, *(child for child in top.iterdir() if child.is_dir())]:
            check_not_training(folder)
        replace_folder(top)
    roots = [spec.root for spec in specs]
    if population is not None:
        roots.insert(0, population)
        make_folder(population, "population folder")
    for spec in specs:
        if spec.checkpoint is None:
            check_new_run(spec.root, overwrite=False)
            make_folder(spec.root, "run folder")
    locks = RunLocks(roots)
    locks.acquire(command)
    return locks


def write_population_record(root: Path, specs: list[RunSpec], command: str) -> None:
    """population.json, listing the members before any trains."""
    from vae_cli.population import write_population

    seeds = [spec.config.train.seed for spec in specs]
    write_population(
        root, {"command": command, "seeds": seeds, "members": [spec.root.name for spec in specs]}
    )


def finish_population(root: Path) -> None:
    """population.json gains the members' statuses and best test losses, with their mean and
    standard deviation (also after Ctrl-C or a failure: what the members reached so far)."""
    from vae_cli.population import (
        member_folders,
        read_population,
        summarize_members,
        write_population,
    )

    record = read_population(root)
    record["summary"] = summarize_members(root, member_folders(root))
    write_population(root, record)


def run_training(
    config: Config,
    root: Path,
    checkpoint: dict[str, Any] | None,
    *,
    data_dir: Path | None,
    command: str,
    display: Callable[..., Any],
    overwrite: bool = False,
    dataset: Any = None,
    reporter: Any = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Train one run (a sweep's trial): its metrics and the paths written; a pruned run
    raises TrainingPruned."""
    from vae_cli.errors import TrainingPruned

    spec = RunSpec(config, root, checkpoint, reporter=reporter)
    (state,) = train_stack(
        [spec],
        data_dir=data_dir,
        command=command,
        display=display,
        overwrite=overwrite,
        dataset=dataset,
    )
    if state.status == "pruned":
        raise TrainingPruned(f"pruned after epoch {state.progress.epoch}")
    return state.history, Trained([spec], [state]).written()
