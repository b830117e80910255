"""`vae train`: one run, or a population of one member per seed, new or resumed.

Settings come from built-in defaults < a config file < flags; --seeds (or the file's [run]
table) makes a population. Everything is checked, in the order that refuses bad input before
anything is written, then commands.stack trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_cli.config.run_options import RunOptions, seeds_option
from vae_cli.config.settings import Config, flag_name
from vae_cli.config.toml import ConfigFile, read_config
from vae_cli.config.values import apply_flags
from vae_cli.errors import UserError
from vae_cli.runs.folder import RunFolder
from vae_cli.training.callbacks import Callbacks
from vae_cli.training.member import Member


@dataclass
class TrainResult:
    """What a `vae train` invocation trained: each member's final state, and for a population
    its summary (population.json)."""

    members: list[Member]
    states: list[Any]
    population: dict[str, Any] | None = None

    def written(self) -> list[str]:
        if self.population is not None:  # its members' folders, each a run's
            root = self.members[0].folder.root.parent
            return [str(root / "population.json"), *(f"{m.folder.root}/" for m in self.members)]
        return [
            f"{path}/" if path.is_dir() else str(path) for path in self.members[0].folder.written()
        ]


def train_command(
    flags: dict[str, Any],
    *,
    seeds: str | None,
    config_file: Path | None,
    data_dir: Path | None,
    runs_dir: Path,
    name: str | None,
    resume: Path | None,
    overwrite: bool,
    command: str,
    display: Callable[..., Callbacks],
) -> TrainResult:
    """Validate everything, prepare the run folder(s), train: one run, or a population of
    seeds whose members are run folders inside RUNS/NAME/."""
    from vae_cli.commands.stack import train_members
    from vae_cli.runs.manifest import run_data_dir

    if resume is not None:
        if config_file is not None or name is not None or overwrite:
            raise UserError(
                "--resume continues a run with its own config and folder; "
                "drop --config, --name and --overwrite"
            )
        if seeds is not None:
            raise UserError("--seeds: a resume continues the members the population has")
        population, members = resumed_members(resume, flags)
        data_dir = run_data_dir(members[0].folder.root, data_dir)  # as trained
    else:
        population, members = new_members(flags, seeds, config_file, runs_dir, name, overwrite)
    states = train_members(
        members,
        data_dir=data_dir,
        command=command,
        display=display,
        overwrite=overwrite,
        population=population,
    )
    summary = None
    if population is not None:
        from vae_cli.runs.population import read_population

        summary = read_population(population).get("summary")
    return TrainResult(members, states, summary)


def new_members(
    flags: dict[str, Any],
    seeds: str | None,
    config_file: Path | None,
    runs_dir: Path,
    name: str | None,
    overwrite: bool,
) -> tuple[Path | None, list[Member]]:
    """The run (or the population's members) a new `vae train` makes, checked."""
    from vae_cli.runs.folder import check_folder_name, check_new_run, default_run_name
    from vae_cli.runs.population import member_config, member_label

    loaded = read_config(config_file) if config_file is not None else ConfigFile(Config())
    config = apply_flags(loaded.config, flags)
    run = seeds_option(seeds) if seeds is not None else loaded.run
    check_seed_and_seeds(run, flags, loaded, config_file)
    check_phase_lengths(config, flags, config_file)
    if name is not None:
        check_folder_name(name, "--name")
    root = runs_dir / (default_run_name() if name is None else name)
    check_new_run(root, overwrite=overwrite)
    if run.seeds is None:
        return None, [Member(config, RunFolder(root))]
    members = []
    for seed in run.seeds:
        label = member_label(seed)
        members.append(Member(member_config(config, seed), RunFolder(root / label), label=label))
    return root, members


def resumed_members(resume: Path, flags: dict[str, Any]) -> tuple[Path | None, list[Member]]:
    """The run or population --resume continues; a save that a kill cut short is finished
    or undone first, and a folder a trainer holds is refused."""
    from vae_cli.commands.resume import resume_member, resume_population
    from vae_cli.runs.locate import run_dir_of
    from vae_cli.runs.lock import check_not_training
    from vae_cli.runs.population import is_population, settle_checkpoints

    if resume.is_dir() and is_population(resume):
        check_not_training(resume)
        settle_checkpoints(resume)
        return resume, resume_population(resume, flags)
    member_of = (resume if resume.is_dir() else run_dir_of(resume)).parent
    if is_population(member_of):
        check_not_training(member_of)
        settle_checkpoints(member_of)
    return None, [resume_member(resume, flags)]


def check_seed_and_seeds(
    run: RunOptions, flags: dict[str, Any], loaded: ConfigFile, config_file: Path | None
) -> None:
    """A population takes its members' seeds from --seeds: a --seed beside it would be
    silently ignored, so the pair is refused (flags or config file alike)."""
    if run.seeds is None:
        return
    in_file = "seed" in loaded.keys
    if flags.get("seed") is not None or in_file:
        where = "--seed" if flags.get("seed") is not None else f"{config_file}: [train] seed"
        raise UserError(
            f"{where} and --seeds {run.seeds_text}: a population's members take their "
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
