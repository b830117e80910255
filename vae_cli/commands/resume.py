"""`vae train --resume`: which run and checkpoint, which settings a resume may change (each
setting's own rule), what the manifest notes, and whether there is training left to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_cli.config.plan import build_plan
from vae_cli.config.settings import Config, flag_name, resumable, rule
from vae_cli.config.values import count, given_flags, show_value
from vae_cli.errors import UserError
from vae_cli.runs.folder import RunFolder
from vae_cli.training.member import Member


def resume_target(target: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for --resume given a run folder or a checkpoint file; a folder
    that a trainer holds is refused first, naming it (the trainer takes the lock itself)."""
    from vae_cli.runs.lock import check_not_training

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


def resumed_config(stored: Config, flags: dict[str, Any]) -> Config:
    """The checkpoint's config with the flags a resume may change; others must agree."""
    given = given_flags(flags)
    changed = {key: value for key, value in given.items() if stored.replace({key: value}) != stored}
    for key, value in changed.items():
        if stored.phases and resumable(key, phased=False) and not resumable(key, phased=True):
            raise UserError(
                f"{flag_name(key)}: this run trains in [[phases]] from its config; a resume "
                "continues them as written (start a new run to change them)"
            )
        if not resumable(key, phased=False):
            setting = rule(key, "alias") or key  # an older name: the setting it is part of
            current = stored.value(setting)
            trained = (
                f"without {flag_name(setting)}"
                if current is None
                else f"with {flag_name(setting)} {show_value(current)}"
            )
            raise UserError(
                f"{flag_name(key)} {show_value(value)}: the resumed run was trained {trained}, "
                "and a resumed run keeps its model and data settings (start a new run with "
                "--name instead)"
            )
    return stored.replace({key: given[key] for key in given if resumable(key, phased=False)})


def update_run_config(root: Path, config: Config, command: str, notes: list[str]) -> None:
    """A resume that changed settings rewrites config.toml, keeping the original manifest and
    adding the resume's command and what it changed about the run's numbers."""
    from vae_cli.config.toml import to_toml
    from vae_cli.files import write_atomically
    from vae_cli.runs.manifest import read_manifest

    manifest = read_manifest(root)
    for key, added in (("resumed_with", [command]), ("resume_notes", notes)):
        earlier = manifest.get(key)
        if added:
            manifest[key] = [*(earlier if isinstance(earlier, list) else []), *added]
    write_atomically(root / "config.toml", to_toml(config, manifest).encode())


def resume_notes(checkpoint: dict[str, Any], config: Config, device_type: str) -> list[str]:
    """What makes a resumed run differ from an uninterrupted one, for the manifest."""
    from vae_cli.training.streams import saved_device_type

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


def resume_done(config: Config, checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint's run has nothing left to train under `config`'s plan."""
    from vae_cli.training.state import Progress

    progress = Progress.from_state_dict(checkpoint)
    plan = build_plan(config)
    last = plan[min(progress.phase, len(plan) - 1)]
    return progress.phase >= len(plan) - 1 and last.done(progress)


def check_unfinished(
    resume: Path, config: Config, checkpoint: dict[str, Any], flags: dict[str, Any]
) -> None:
    """A resume must have training left to do: epochs, time budget or phases."""
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


def resume_member(target: Path, flags: dict[str, Any]) -> Member:
    """One run to continue from its last.pt (or the checkpoint given), with the flags a resume
    may change."""
    given_flags(flags)  # every flag's value checked before torch loads
    root, checkpoint_path = resume_target(target)
    from vae_cli.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    config = resumed_config(checkpoint["config"], flags)
    check_unfinished(target, config, checkpoint, flags)
    return Member(config, RunFolder(root), checkpoint)


def resume_population(root: Path, flags: dict[str, Any]) -> list[Member]:
    """Every member still training when the population stopped; members that failed or were
    pruned stay as they ended."""
    from vae_cli.runs.population import member_folders
    from vae_cli.runs.status import read_status

    given_flags(flags)  # every flag's value checked before torch loads
    from vae_cli.checkpoint import load_checkpoint

    members = []
    for folder in member_folders(root):
        if read_status(folder) in ("failed", "pruned"):
            continue
        run_root, checkpoint_path = resume_target(folder)
        checkpoint = load_checkpoint(checkpoint_path)
        config = resumed_config(checkpoint["config"], flags)
        members.append(Member(config, RunFolder(run_root), checkpoint, label=folder.name))
    if not members:
        raise UserError(f"--resume {root}: every member failed or was pruned")
    check_same_step(members)
    check_unfinished(root, members[0].config, members[0].checkpoint, flags)
    return members


def check_same_step(members: list[Member]) -> None:
    """The members of a population resume together from one step. Saves are committed as one
    (runs.population.commit_checkpoints), so only a member resumed alone can be elsewhere."""
    from vae_cli.training.state import Progress

    first = members[0]
    for run in members[1:]:
        if Progress.from_state_dict(run.checkpoint) != Progress.from_state_dict(first.checkpoint):
            raise UserError(
                f"{run.folder.root} was saved at epoch {run.checkpoint['epoch']} (step "
                f"{run.checkpoint['step']}), {first.folder.root.name} at epoch "
                f"{first.checkpoint['epoch']} (step {first.checkpoint['step']}): a member was "
                "resumed alone; resume each member to the same epoch first (vae train "
                "--resume MEMBER --epochs N), then the population"
            )
