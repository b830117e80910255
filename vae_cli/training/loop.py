"""The training loop: for each phase of the plan, for each epoch, for each batch.

`train()` trains one run, or several that share a shape in lock-step (a stack: a population's
seeds, or a sweep's trials); a single run is a stack of one. All randomness comes from explicit
generators saved in every checkpoint, so a resumed run is bit-identical to an uninterrupted one
on the CPU. The loop holds the loop; the parts it drives live in their own modules: the step
(step.py), the stacked weights (stack.py), progress and member state (state.py), the clock
(clock.py), random streams (streams.py), saving (checkpointer.py), pictures (a callback,
epoch_pictures.py), faults (faults.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

import torch

from vae_cli.config.plan import Phase, build_plan
from vae_cli.config.schedule import kl_weight, learning_rate
from vae_cli.config.settings import Config
from vae_cli.data.dataset import Dataset, prepare_images, to_float
from vae_cli.errors import Terminated, TrainingFailed, TrainingInterrupted, TrainingPruned
from vae_cli.files import OrderedWriter
from vae_cli.model.vae import VAE, start_at_the_data_mean
from vae_cli.runs.best import best_epoch, chosen_on, selection_loss
from vae_cli.runs.metrics import append_metrics, read_metrics, truncate_metrics
from vae_cli.runs.status import write_status
from vae_cli.training.batches import Batches
from vae_cli.training.best_files import keep_best_of_earlier_phase, repair_best
from vae_cli.training.callbacks import CallbackGroup, Callbacks
from vae_cli.training.checkpointer import Checkpointer
from vae_cli.training.clock import TrainingClock
from vae_cli.training.components import (
    KeptSums,
    MemberSettings,
    MemberStreams,
    MemberWeights,
    non_finite_weights,
)
from vae_cli.training.determinism import make_deterministic
from vae_cli.training.epoch import EpochTimer, EvaluationImages, member_metrics
from vae_cli.training.epoch_pictures import RECONSTRUCTED, EpochPictures
from vae_cli.training.events import (
    EpochEnded,
    EpochMetrics,
    MemberStopped,
    PhaseStarted,
    RunStarted,
    StepProgress,
    TrainingFinished,
    TrainingWarning,
)
from vae_cli.training.faults import bad_step_news
from vae_cli.training.graphs import CapturedStep, Graphs, build_step
from vae_cli.training.member import Member
from vae_cli.training.signals import InterruptFlag
from vae_cli.training.stack import Stack
from vae_cli.training.state import Best, MemberState, Progress
from vae_cli.training.statistics import kept, summarize
from vae_cli.training.step import Step
from vae_cli.training.streams import RandomStreams

PROGRESS_EVERY = 25  # steps between reads of the on-device statistics (each read is a sync)


def train(
    members: list[Member],
    *,
    dataset: Dataset,
    device: torch.device,
    callbacks: Callbacks | None = None,
    graphs: Graphs | None = None,
    population: Path | None = None,
) -> list[MemberState]:
    """Train (or continue) `members` in lock-step on `device` (resolved by the caller);
    returns each one's final state. `graphs` stands in for CUDA graphs (tests capture on the
    CPU with it); `population` is the folder whose members they are, whose checkpoints are then
    saved as one step."""
    callbacks = CallbackGroup(EpochPictures(), callbacks or Callbacks())
    trainer = Trainer(members, dataset, device, graphs, callbacks, population)
    callbacks.on_start(run_started(trainer))
    writer = trainer.writer
    try:
        with InterruptFlag() as interrupt:
            trainer.write_statuses("running")  # from here on Ctrl-C saves
            for phase in trainer.plan[trainer.progress.phase :]:
                step = trainer.enter_phase(phase)
                while trainer.stop_reason(phase) is None:
                    run_epoch(trainer, step, phase, interrupt)
                    end_epoch(trainer, phase)
            writer.drain()
    except KeyboardInterrupt as stop:  # a second Ctrl-C or SIGTERM: stop now, at the last save
        writer.close()
        trainer.write_statuses("interrupted", now=True)
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        saved = "the last epoch's checkpoints" if len(members) > 1 else "the last epoch's last.pt"
        raise TrainingInterrupted(trainer.resume_dirs, saved, signum) from None
    except TrainingInterrupted:
        writer.close()
        raise
    except Exception:
        writer.close()
        trainer.write_statuses("failed", now=True)
        raise
    writer.close()
    return trainer.finish()


def run_epoch(
    trainer: Trainer, step: Step | CapturedStep, phase: Phase, interrupt: InterruptFlag
) -> None:
    """The epoch's batches from where training stands; Ctrl-C saves mid-epoch and stops."""
    progress, stats, batches = trainer.progress, trainer.stack.stats, trainer.batches
    orders = batches.orders(trainer.streams)
    last_read = stats.read()
    trainer.clock.start()
    for batch_index in range(progress.position, batches.steps_per_epoch):
        step(batches.batch(orders, batch_index), *trainer.schedules(phase))
        progress.step, progress.position = progress.step + 1, batch_index + 1
        trainer.timer.images += batches.size_at(batch_index)
        if trainer.synchronous:
            trainer.clock.synced()  # a CPU step has finished when it returns
        end_of_epoch = progress.position == batches.steps_per_epoch
        if end_of_epoch or interrupt.requested or progress.position % PROGRESS_EVERY == 0:
            current = stats.read()  # waits for the device: the clock's sync point on a GPU
            trainer.clock.synced()
            check_bad_steps(trainer, current, last_read)
            last_read = current
            trainer.callbacks.on_progress(step_progress(trainer, current))
        if interrupt.requested and not end_of_epoch:
            trainer.save_mid_epoch(current)
            raise TrainingInterrupted(trainer.resume_dirs, trainer.saved, interrupt.signum)
    trainer.clock.stop()


def end_epoch(trainer: Trainer, phase: Phase) -> None:
    """Test pass, best choice, metrics line, pictures and checkpoints of every member that
    is still training; a sweep's pruner may stop a member here."""
    progress = trainer.progress
    progress.epoch, progress.position = progress.epoch + 1, 0
    sums = trainer.stack.stats.read()  # the carried streak too: every checkpoint keeps it
    trainer.stack.stats.reset_epoch()
    timing = trainer.timer.timing()
    measured = []
    for member in trainer.members_training():
        settings = trainer.plans[member][phase.number - 1].settings
        metrics = member_metrics(
            trainer.stack.member(member), trainer.evaluation, progress, settings, phase.number,
            summarize(sums[member]), timing, trainer.lrs[member],
        )  # fmt: skip
        measured.append((member, metrics))
    # One wall time for the epoch, read after every test pass and before any writes.
    epoch_seconds = trainer.timer.epoch_seconds()
    for member, metrics in measured:
        metrics.timing["epoch_seconds"] = epoch_seconds
        event = trainer.record(member, metrics, kept(sums[member], mid_epoch=False))
        try:
            trainer.members[member].callbacks.on_epoch(event)
        except TrainingPruned:  # after that epoch's writes were submitted
            trainer.stop_member(member, "pruned")
    trainer.checkpointer.commit()


class Trainer:
    """What one `train()` call works on, built once: the device and data, the plan, the stack,
    each member's state and random streams, the clock and the checkpointer."""

    def __init__(
        self,
        members: list[Member],
        dataset: Dataset,
        device: torch.device,
        graphs: Graphs | None,
        callbacks: Callbacks,
        population: Path | None,
    ) -> None:
        self.members, self.graphs, self.callbacks = members, graphs, callbacks
        self.dataset, self.population, self.device = dataset, population, device
        self.failure: str | None = None  # why the last member failed, for a stack
        config = members[0].config
        # Whether a step has finished when it returns: on a GPU (or a graph stand-in that may
        # run behind the host) only a read of the statistics waits for the device.
        self.synchronous = self.device.type != "cuda" and graphs is None
        make_deterministic(self.device, compiling=config.train.compile)
        pixels = prepare_images(dataset, config.data.binarize, config.data.validation)
        self.batches = Batches(pixels.train, config.train.batch_size, self.device)
        self.evaluation = EvaluationImages(
            *(to_float(images).to(self.device) for images in (pixels.validation, pixels.test))
        )
        self.plans = [build_plan(run.config) for run in members]
        self.plan = self.plans[0]  # lengths and objectives: the same for every member
        pixel_means = pixels.train.sum(0, dtype=torch.float64) / (255 * len(pixels.train))
        self.stack = Stack(
            [build_model(run.config, self.device, pixel_means) for run in members],
            average=bool(config.train.ema),  # before a resume restores the average
        )
        self.streams = [RandomStreams(run.config.train.seed, self.device) for run in members]
        first = members[0].checkpoint
        self.progress = Progress() if first is None else Progress.from_state_dict(first)
        self.states = [MemberState(self.progress) for _ in members]
        self.writer = OrderedWriter()
        self.checkpointer = Checkpointer(self.writer, population)
        for member in range(len(members)):
            restore_member(self, member)
        self.clock = TrainingClock(self.progress)
        self.lrs = [run.config.train.lr for run in members]  # of the latest step
        self.timer = EpochTimer(self.clock, self.progress)

    @property
    def resume_dirs(self) -> list[str]:
        """What `vae train --resume` takes to continue: a population's folder, or each run's."""
        if self.population is not None:  # a population of one included
            return [str(self.population)]
        return [str(run.folder.root) for run in self.members]

    @property
    def saved(self) -> str:
        return (
            str(self.members[0].folder.last)
            if len(self.members) == 1
            else f"{len(self.members)} runs"
        )

    def members_training(self) -> list[int]:
        return [member for member, state in enumerate(self.states) if state.training]

    def stop_reason(self, phase: Phase) -> str | None:
        """Why the current phase's epochs end here (Lightning's fit_loop.done): every member
        failed or was pruned, or the phase ran its epochs or spent its time budget; None
        while training goes on. Asked at epoch ends only."""
        if not self.members_training():
            return "every member failed or was pruned"
        return phase.done_reason(self.progress)

    def finishing(self) -> bool:
        """Whether the epoch just ended is the plan's last."""
        phase = self.plan[self.progress.phase]
        return phase.number == len(self.plan) and phase.done_reason(self.progress) is not None

    def write_statuses(self, status: str, *, now: bool = False) -> None:
        """Every member still training gets `status` (in order with its other writes, or at
        once when the writer is closed)."""
        for member in self.members_training():
            if status != "running":
                self.states[member].status = status
            folder = self.members[member].folder
            if now:
                write_status(folder, status, self.progress.epoch)
            else:
                self.writer.submit(write_status, folder, status, self.progress.epoch)

    def stop_member(self, member: int, status: str) -> None:
        """A failed or pruned member stops updating (frozen on the device); the rest go on."""
        self.states[member].status = status
        self.stack.freeze(member)
        label = self.members[member].label
        self.callbacks.on_member_stop(MemberStopped(member, label, status))
        self.writer.submit(write_status, self.members[member].folder, status, self.progress.epoch)

    def fail_member(self, member: int, message: str) -> None:
        """A single run stops with the error; a stack's member stops, the rest go on."""
        if len(self.members) == 1:
            raise TrainingFailed(message)
        self.stop_member(member, "failed")
        self.failure = f"every member failed; the last: {message}"
        self.callbacks.on_warning(
            TrainingWarning(f"{self.members[member].label} failed: {message}")
        )

    def finish(self) -> list[MemberState]:
        """Members still training have finished; a single run that failed raises."""
        self.callbacks.on_finish(TrainingFinished(self.progress.epoch))
        for member in self.members_training():
            self.states[member].status = "finished"
            write_status(self.members[member].folder, "finished", self.progress.epoch)
        failed = [s for s in self.states if s.status == "failed"]
        if failed and len(failed) == len(self.states):
            raise TrainingFailed(self.failure or "training failed")
        return self.states

    def enter_phase(self, phase: Phase) -> Step | CapturedStep:
        """The step of `phase`, built from its settings; a new phase starts its schedules
        here, keeps the earlier phase's best and is announced."""
        index = phase.number - 1
        if index > self.progress.phase:
            self.progress.start_phase(index)
            self.writer.drain()  # the earlier phase's best.pt must be on disk to be kept
            for member in self.members_training():
                history, plan = self.states[member].history, self.plans[member][index]
                keep_best_of_earlier_phase(self.members[member].folder, history, plan)
            self.callbacks.on_phase(PhaseStarted(phase.number, len(self.plan), phase.describe()))
        settings = [plan[index].settings for plan in self.plans]
        generators = [streams.generators for streams in self.streams]
        return build_step(self.stack, settings, generators, self.clock, self.graphs)

    def schedules(self, phase: Phase) -> tuple[list[float], list[float]]:
        """Each member's learning rate and KL weight for the next step."""
        index, progress = phase.number - 1, self.progress
        steps = self.batches.steps_per_epoch
        fraction = phase.schedule_progress(progress, steps)
        steps_in_phase = progress.step - progress.phase_start.step
        settings = [plan[index].settings for plan in self.plans]
        self.lrs = [learning_rate(config, fraction) for config in settings]
        betas = [kl_weight(config, steps_in_phase, steps) for config in settings]
        return self.lrs, betas

    def record(self, member: int, metrics: EpochMetrics, kept_sums: dict[str, float]) -> EpochEnded:
        """Best choice, history, the callbacks (pictures, display), the metrics line and the
        epoch's checkpoints; returns the epoch's event."""
        run, state = self.members[member], self.states[member]
        line = metrics.line()
        chosen = best_epoch([*state.history, line])
        if chosen is not None and chosen["epoch"] == metrics.epoch:
            state.best = Best(selection_loss(chosen), metrics.epoch, chosen_on(chosen))
        state.history.append(line)
        event = EpochEnded(
            member, run.label, metrics, state.history, self.stack.member(member), run.config,
            run.folder, final=self.finishing(), training=len(self.members_training()),
        )  # fmt: skip
        self.callbacks.on_epoch(event)
        self.writer.submit(append_metrics, run.folder, dict(line))
        best_now = state.best.epoch == metrics.epoch
        targets = [run.folder.last, run.folder.best] if best_now else [run.folder.last]
        self.save_member(member, targets, kept_sums)
        self.writer.submit(write_status, run.folder, "running", metrics.epoch)  # after it
        return event

    def save_member(self, member: int, targets: list[Path], kept_sums: dict[str, float]) -> None:
        """The member's checkpoint to `targets`; weights that are not finite are never saved:
        the member fails instead."""
        if not torch.isfinite(self.stack.flat[member]).all():  # one check for all weights
            self.fail_member(member, non_finite_weights(self.stack.training_weights(member)))
            return
        settings = self.plans[member][self.progress.phase].settings.train
        components = [
            MemberWeights(self.stack, member, self.lrs[member], settings.adam_beta2),
            MemberSettings(self.members[member].config),
            MemberStreams(self.streams[member], mid_epoch=self.progress.mid_epoch),
            self.progress,
            self.states[member],
            KeptSums(self.stack, member, kept_sums),
        ]
        self.checkpointer.save(components, targets)

    def save_mid_epoch(self, sums: list[dict[str, float]]) -> None:
        """Ctrl-C: every member's last.pt at this step, then the statuses."""
        for member in self.members_training():
            targets = [self.members[member].folder.last]
            self.save_member(member, targets, kept(sums[member], mid_epoch=True))
        self.checkpointer.commit()
        self.writer.drain()
        self.write_statuses("interrupted", now=True)


def check_bad_steps(
    trainer: Trainer, current: list[dict[str, float]], last_read: list[dict[str, float]]
) -> None:
    """Warn about the steps skipped since the last read; a member stops after
    --max-bad-steps of them in a row (a single run: training stops with an error)."""
    for member in trainer.members_training():
        run = trainer.members[member]
        warning, failure = bad_step_news(run, current[member], last_read[member], trainer.progress)
        if warning is not None:
            trainer.callbacks.on_warning(TrainingWarning(warning))
        if failure is not None:
            trainer.fail_member(member, failure)


def step_progress(trainer: Trainer, sums: list[dict[str, float]]) -> StepProgress:
    """What the progress bar shows: the means over the members still training."""
    training = trainer.members_training() or [0]
    shown = [summarize(sums[member]) for member in training]
    mean = {
        key: sum(s[key] for s in shown) / len(shown) for key in ("images", "loss", "recon", "kl")
    }
    progress = trainer.progress
    return StepProgress(progress.epoch, progress.position, trainer.batches.steps_per_epoch, **mean)


def restore_member(trainer: Trainer, member: int) -> None:
    """A resumed member's weights, Adam moments, streams, kept sums, best and history,
    and its folder's best files made consistent; a new member's history starts empty (or
    as a damaged folder left it)."""
    run, state = trainer.members[member], trainer.states[member]
    if run.checkpoint is None:
        state.history = read_metrics(run.folder)
        return
    components = [
        MemberWeights(trainer.stack, member, run.config.train.lr, run.config.train.adam_beta2),
        MemberStreams(trainer.streams[member]),
        KeptSums(trainer.stack, member, {}),
        state,
    ]
    Checkpointer.restore(components, run.checkpoint)
    repair_best(run.folder, run.checkpoint)
    state.history = truncate_metrics(run.folder, trainer.progress.epoch)
    plan = trainer.plans[member][trainer.progress.phase]
    keep_best_of_earlier_phase(run.folder, state.history, plan)


def run_started(trainer: Trainer) -> RunStarted:
    return RunStarted(
        device=trainer.device,
        model=trainer.stack.member(0),
        dataset=trainer.dataset,
        steps_per_epoch=trainer.batches.steps_per_epoch,
        train_images=len(trainer.batches.images),
        batch_size=trainer.batches.batch_size,
        validation_images=len(trainer.evaluation.validation),
        resumed_epoch=trainer.progress.epoch,
        resumed_position=trainer.progress.position,
        plan=[phase.describe() for phase in trainer.plan],
        phase=trainer.progress.phase + 1,
        members=[run.label for run in trainer.members],
        pictured=trainer.evaluation.test[:RECONSTRUCTED],
    )


def build_model(
    config: Config, device: torch.device, pixel_means: torch.Tensor | None = None
) -> VAE:
    """The VAE with weights drawn from the config's seed, without touching global RNG state;
    with output_bias = "data", its decoder starts at the training images' pixel means."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = VAE(config.model)
    if config.model.output_bias == "data" and pixel_means is not None:
        start_at_the_data_mean(model, pixel_means)
    return model.to(device)
