"""The training loop: for each phase of the plan, for each epoch, for each batch.

`train()` trains one run, or several that share a shape in lock-step (a population: seeds, or
a sweep's trials); a single run is the population of one. All randomness comes from explicit
generators saved in every checkpoint, so a resumed run is bit-identical to an uninterrupted one
on the CPU. What each part does lives in its own module: the step (step.py), the plan of phases
(plan.py), progress (state.py), the clock (clock.py), schedules (schedule.py), random streams
(streams.py), a run folder's files (run_files.py).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vae_cli import images, plots
from vae_cli.callbacks import Callbacks
from vae_cli.checkpoint import serialize_checkpoint
from vae_cli.clock import TrainingClock
from vae_cli.config import Config
from vae_cli.data import Dataset, prepare_images, to_float
from vae_cli.device import flush_denormals, make_deterministic, resolve_device
from vae_cli.errors import Terminated, TrainingFailed, TrainingInterrupted, TrainingPruned
from vae_cli.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.files import OrderedWriter, write_atomically
from vae_cli.interrupt import InterruptFlag
from vae_cli.members import Population
from vae_cli.model import VAE, latent_dims
from vae_cli.plan import Phase, build_plan
from vae_cli.population import commit_checkpoints, pending_path
from vae_cli.run_files import (
    RunPaths,
    append_metrics,
    read_metrics,
    truncate_metrics,
    write_status,
)
from vae_cli.schedule import kl_weight, learning_rate
from vae_cli.selection import best_epoch, criterion, selection_criterion, selection_loss
from vae_cli.state import Best, Progress, TrainState
from vae_cli.statistics import CARRIED, saved_sums, summarize
from vae_cli.step import CapturedStep, Graphs, TrainStep, build_step
from vae_cli.streams import make_generators, restore_streams, stream_states

SAMPLE_GRID = 64  # 8x8 samples per epoch, from one fixed z
RECONSTRUCTED = 16  # test images shown over their reconstructions per epoch
PROGRESS_EVERY = 25  # steps between reads of the on-device statistics (each read is a sync)
# Pictures and curves.png are redrawn at most this often per member (and after the last
# epoch): drawing them every epoch would cost more than a fast epoch itself.
PICTURE_INTERVAL_SECONDS = 20.0


@dataclass
class Run:
    """One run to train: its config, its folder, the checkpoint it resumes from (None: a new
    run), its own hooks (TensorBoard, a sweep's reporter) and its name among its population."""

    config: Config
    paths: RunPaths
    checkpoint: dict[str, Any] | None = None
    callbacks: Callbacks = field(default_factory=Callbacks)
    label: str = ""


def train(
    runs: list[Run],
    *,
    dataset: Dataset,
    callbacks: Callbacks | None = None,
    graphs: Graphs | None = None,
    population: Path | None = None,
) -> list[TrainState]:
    """Train (or continue) `runs` in lock-step; returns each run's final state. `graphs`
    stands in for CUDA graphs (tests capture on the CPU with it); `population` is the folder
    whose members `runs` are, whose checkpoints are then saved as one step."""
    callbacks = callbacks or Callbacks()
    training = Training(runs, dataset, graphs, callbacks, population)
    callbacks.on_start(training.start_info())
    writer = OrderedWriter()
    try:
        with InterruptFlag() as interrupt:
            training.write_statuses(writer, "running")  # from here on Ctrl-C saves
            for phase in training.plan[training.progress.phase :]:
                step = training.enter_phase(phase, writer, callbacks)
                while training.any_training() and not phase.done(training.progress):
                    run_epoch(training, step, phase, interrupt, writer, callbacks)
                    end_epoch(training, step, phase, writer, callbacks)
            writer.drain()
    except KeyboardInterrupt as stop:  # a second Ctrl-C or SIGTERM: stop now, at the last save
        writer.close()
        training.write_statuses(None, "interrupted")
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        saved = "the last epoch's checkpoints" if len(runs) > 1 else "the last epoch's last.pt"
        raise TrainingInterrupted(training.resume_dirs, saved, signum) from None
    except TrainingInterrupted:
        writer.close()
        raise
    except Exception:
        writer.close()
        training.write_statuses(None, "failed")
        raise
    writer.close()
    return training.finish()


def run_epoch(
    training: Training,
    step: TrainStep | CapturedStep,
    phase: Phase,
    interrupt: InterruptFlag,
    writer: OrderedWriter,
    callbacks: Callbacks,
) -> None:
    """The epoch's batches from where training stands; Ctrl-C saves mid-epoch and stops."""
    progress, stats = training.progress, training.population.stats
    orders = training.draw_orders()
    last_read = stats.read()
    training.clock.start()
    for batch_index in range(progress.position, training.steps_per_epoch):
        step(training.batch(orders, batch_index), *training.schedules(phase))
        progress.step, progress.position = progress.step + 1, batch_index + 1
        training.images_this_epoch += training.batch_size_at(batch_index)
        if training.synchronous:
            training.clock.synced()  # a CPU step has finished when it returns
        end_of_epoch = progress.position == training.steps_per_epoch
        if end_of_epoch or interrupt.requested or progress.position % PROGRESS_EVERY == 0:
            current = stats.read()  # waits for the device: the clock's sync point on a GPU
            training.clock.synced()
            training.check_bad_steps(current, last_read, writer)
            last_read = current
            callbacks.on_progress(
                progress.epoch, progress.position, training.steps_per_epoch,
                training.progress_stats(current),
            )  # fmt: skip
        if interrupt.requested and not end_of_epoch:
            training.save_mid_epoch(writer, current)
            raise TrainingInterrupted(training.resume_dirs, training.saved, interrupt.signum)
    training.clock.stop()


def end_epoch(
    training: Training,
    step: TrainStep | CapturedStep,
    phase: Phase,
    writer: OrderedWriter,
    callbacks: Callbacks,
) -> None:
    """Test pass, best choice, metrics line, pictures and checkpoints of every member that
    is still training; a sweep's pruner may stop a member here."""
    progress = training.progress
    progress.epoch, progress.position = progress.epoch + 1, 0
    sums = training.population.stats.read()  # the carried streak too: every checkpoint keeps it
    training.population.stats.reset_epoch()
    timing = training.epoch_timing()
    last = phase.number == len(training.plan) and phase.done(progress)
    interval = PICTURE_INTERVAL_SECONDS * len(training.members_training())
    draw = last or time.perf_counter() - training.last_drawn >= interval
    for member in training.members_training():
        metrics = training.member_metrics(member, phase, step, summarize(sums[member]), timing)
        training.record(member, metrics, draw, writer, carried(sums[member]))
        callbacks.on_epoch({**metrics, "member": training.runs[member].label})
        try:
            training.runs[member].callbacks.on_epoch(metrics)
        except TrainingPruned:  # after that epoch's writes were submitted
            training.stop_member(member, "pruned", writer)
    training.commit_saves(writer)
    if draw:
        training.last_drawn = time.perf_counter()


class Training:
    """Everything one `train()` call works on, built once: the device and data, the plan,
    the population, each run's state and random streams, the clock and the pictures' z."""

    def __init__(
        self,
        runs: list[Run],
        dataset: Dataset,
        graphs: Graphs | None,
        callbacks: Callbacks,
        population_root: Path | None = None,
    ) -> None:
        self.runs, self.graphs, self.callbacks = runs, graphs, callbacks
        self.population_root = population_root
        self.pending: list[Path] = []  # a population's files saved since the last commit
        # Per member: (epoch, CPU weights) of its last epoch when its pictures were not drawn
        # (throttled), drawn when it stops early (failed, pruned) so every run ends with them.
        self.owed_pictures: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        # Whether a step has finished when it returns: on a GPU (or a graph stand-in that may
        # run behind the host) only a read of the statistics waits for the device.
        self.failure: str | None = None  # why the last member failed, for a population
        config = runs[0].config
        self.device = resolve_device(config.train.device)
        self.synchronous = self.device.type != "cuda" and graphs is None
        make_deterministic(self.device, compiling=config.train.compile)
        flush_denormals(self.device)
        train_images, test_images = prepare_images(dataset, config.data.binarize)
        self.dataset = dataset
        self.train_images = train_images.to(self.device)  # (N, 784) uint8, indexed per batch
        self.test_x = to_float(test_images).to(self.device)
        self.batch_size = config.train.batch_size
        self.steps_per_epoch = -(-len(train_images) // self.batch_size)
        self.plans = [build_plan(run.config) for run in runs]
        self.plan = self.plans[0]  # lengths and objectives: the same for every member
        self.population = Population([build_model(run.config, self.device) for run in runs])
        self.generators = [make_generators(run.config.train.seed, self.device) for run in runs]
        self.fixed_z = [sample_grid_z(run.config) for run in runs]
        first = runs[0].checkpoint
        self.progress = Progress() if first is None else Progress.from_checkpoint(first)
        self.states = [TrainState(self.progress) for _ in runs]
        for member, run in enumerate(runs):
            self.restore(member, run)
        self.clock = TrainingClock(self.progress)
        self.epoch_start_orders = [g["data_order"].get_state() for g in self.generators]
        self.lrs = [run.config.train.lr for run in runs]  # of the latest step, per member
        self.last_drawn = time.perf_counter()
        self.images_this_epoch, self.epoch_mark = 0, self.epoch_marks()

    # -- the runs' folders and states ---------------------------------------------------------

    @property
    def resume_dirs(self) -> list[str]:
        """What `vae train --resume` takes to continue these runs: a population's folder, or
        each run's own."""
        if self.population_root is not None:  # a population of one included
            return [str(self.population_root)]
        return [str(run.paths.root) for run in self.runs]

    @property
    def saved(self) -> str:
        return str(self.runs[0].paths.last) if len(self.runs) == 1 else f"{len(self.runs)} runs"

    def restore(self, member: int, run: Run) -> None:
        """A resumed run's weights, Adam moments, streams, mid-epoch sums, history and best;
        a new run's history starts empty."""
        state, checkpoint = self.states[member], run.checkpoint
        if checkpoint is None:
            state.history = read_metrics(run.paths)
            return
        if Progress.from_checkpoint(checkpoint) != self.progress:  # session checks it first
            raise TrainingFailed(f"{run.paths.root}: the members were saved at different steps")
        self.population.load_member_weights(member, checkpoint["model"])
        population = self.population
        population.adam.load_member(member, checkpoint["optimizer"], population.stack_layout)
        restore_streams(checkpoint, self.generators[member], run.config.train.seed)
        if checkpoint.get("epoch_stats") is not None:  # mid-epoch sums, or the carried streak
            self.population.stats.load_member(member, saved_sums(checkpoint["epoch_stats"]))
        state.best = Best(**checkpoint["best"])
        repair_best(run.paths, checkpoint)
        state.history = truncate_metrics(run.paths, self.progress.epoch)
        keep_best_of_earlier_phase(
            run.paths, state.history, self.plans[member][self.progress.phase]
        )

    def write_statuses(self, writer: OrderedWriter | None, status: str) -> None:
        """Every member still training gets `status` (in order with its other writes)."""
        for member in self.members_training():
            if status != "running":
                self.states[member].status = status
            paths = self.runs[member].paths
            if writer is None:
                write_status(paths, status, self.progress.epoch)
            else:
                writer.submit(write_status, paths, status, self.progress.epoch)

    def members_training(self) -> list[int]:
        return [member for member, state in enumerate(self.states) if state.training]

    def any_training(self) -> bool:
        return bool(self.members_training())

    def stop_member(self, member: int, status: str, writer: OrderedWriter) -> None:
        """A failed or pruned member stops updating (frozen on the device) and gets the
        pictures of its last epoch if they were not drawn; the rest go on."""
        self.states[member].status = status
        self.population.freeze(member)
        self.draw_owed_pictures(member)
        writer.submit(write_status, self.runs[member].paths, status, self.progress.epoch)

    def draw_owed_pictures(self, member: int) -> None:
        if member not in self.owed_pictures:
            return
        epoch, weights = self.owed_pictures.pop(member)
        with torch.device("meta"):
            model = VAE(self.runs[member].config.model)
        model.load_state_dict(weights, assign=True)  # the CPU copy of that epoch's weights
        paths = self.runs[member].paths
        originals = self.test_x[:RECONSTRUCTED].cpu()
        save_epoch_pictures(model.eval(), paths, epoch, self.fixed_z[member], originals)
        plots.save_curves(self.states[member].history, paths.curves)

    def finish(self) -> list[TrainState]:
        """Members still training have finished; a single run that failed raises."""
        for member in list(self.owed_pictures):
            self.draw_owed_pictures(member)
        for member in self.members_training():
            self.states[member].status = "finished"
            write_status(self.runs[member].paths, "finished", self.progress.epoch)
        failed = [s for s in self.states if s.status == "failed"]
        if failed and len(failed) == len(self.states):
            raise TrainingFailed(self.failure or "training failed")
        return self.states

    # -- phases, batches and schedules --------------------------------------------------------

    def enter_phase(
        self, phase: Phase, writer: OrderedWriter, callbacks: Callbacks
    ) -> TrainStep | CapturedStep:
        """The step of `phase`, built from its settings; a new phase starts its schedules
        here, keeps the earlier phase's best and is announced."""
        index = phase.number - 1
        if index > self.progress.phase:
            self.progress.start_phase(index)
            writer.drain()  # the earlier phase's best.pt must be on disk to be kept
            for member in self.members_training():
                run = self.runs[member]
                keep_best_of_earlier_phase(
                    run.paths, self.states[member].history, self.plans[member][index]
                )
            callbacks.on_phase(
                {"number": phase.number, "of": len(self.plan), "plan": phase.describe()}
            )
        settings = [plan[index].settings for plan in self.plans]
        return build_step(self.population, settings, self.generators, self.clock, self.graphs)

    def draw_orders(self) -> torch.Tensor:
        """Each member's permutation of the training set for this epoch, (M, N), drawn from
        its own stream (whose state before the draw a checkpoint keeps)."""
        self.epoch_start_orders = [g["data_order"].get_state() for g in self.generators]
        n = len(self.train_images)
        orders = [torch.randperm(n, generator=g["data_order"]) for g in self.generators]
        return torch.stack(orders).to(self.device)

    def batch(self, orders: torch.Tensor, index: int) -> torch.Tensor:
        """Batch `index` of every member, (M, B, 784) uint8 (the last may be smaller)."""
        rows = orders[:, index * self.batch_size : (index + 1) * self.batch_size]
        # index_select: a third of the time of train_images[rows] for uint8 rows.
        picked = self.train_images.index_select(0, rows.reshape(-1))
        return picked.view(len(rows), rows.shape[1], -1)

    def batch_size_at(self, index: int) -> int:
        return min(self.batch_size, len(self.train_images) - index * self.batch_size)

    def schedules(self, phase: Phase) -> tuple[list[float], list[float]]:
        """Each member's learning rate and KL weight for the next step."""
        index, progress = phase.number - 1, self.progress
        fraction = phase.schedule_progress(progress, self.steps_per_epoch)
        steps_in_phase = progress.step - progress.phase_start.step
        settings = [plan[index].settings for plan in self.plans]
        self.lrs = [learning_rate(config, fraction) for config in settings]
        betas = [kl_weight(config, steps_in_phase, self.steps_per_epoch) for config in settings]
        return self.lrs, betas

    def progress_stats(self, sums: list[dict[str, float]]) -> dict[str, float]:
        """What the progress bar shows: the mean over the members still training."""
        shown = [summarize(sums[member]) for member in self.members_training()] or [
            summarize(sums[0])
        ]
        return {key: sum(s[key] for s in shown) / len(shown) for key in shown[0]}

    # -- faults -------------------------------------------------------------------------------

    def check_bad_steps(
        self,
        current: list[dict[str, float]],
        last_read: list[dict[str, float]],
        writer: OrderedWriter,
    ) -> None:
        """Warn about skipped non-finite steps; a member stops after --max-bad-steps of them
        in a row (a single run: training stops with an error)."""
        progress = self.progress
        for member in self.members_training():
            run, now = self.runs[member], current[member]
            who = f"{run.label}: " if run.label else ""
            skipped = int(now["bad_steps"] - last_read[member]["bad_steps"])
            if skipped > 0:
                self.callbacks.on_warning(
                    f"{who}skipped {skipped} step(s) with a non-finite loss or gradient "
                    f"(epoch {progress.epoch + 1}, step {progress.step})"
                )
            limit = run.config.train.max_bad_steps
            if now["halted"] or now["bad_streak"] >= limit:
                self.fail_member(
                    member,
                    f"{limit} non-finite steps in a row (--max-bad-steps {limit}); training "
                    f"stopped, {run.paths.last} holds the last good epoch (try a lower --lr)",
                    writer,
                )

    def fail_member(self, member: int, message: str, writer: OrderedWriter) -> None:
        """A single run stops with the error; a population's member stops, the rest go on."""
        if len(self.runs) == 1:
            raise TrainingFailed(message)
        self.stop_member(member, "failed", writer)
        self.failure = f"every member failed; the last: {message}"
        self.callbacks.on_warning(f"{self.runs[member].label} failed: {message}")

    # -- the end of an epoch ------------------------------------------------------------------

    def epoch_marks(self) -> tuple[float, dict[str, float], float, float]:
        clock = self.clock
        return self.progress.seconds, dict(clock.setup), clock.setup_images, time.perf_counter()

    def epoch_timing(self) -> dict[str, float]:
        """This epoch's training seconds and rate per member; compile and capture seconds
        apart (each measured once, never subtracted from the training time)."""
        seconds0, setup0, setup_images0, started = self.epoch_mark
        seconds = self.progress.seconds - seconds0
        timing = {"seconds": seconds, "started": started}
        for key, total in self.clock.setup.items():
            if total > setup0[key]:
                timing[key] = total - setup0[key]
        images = self.images_this_epoch - (self.clock.setup_images - setup_images0)
        timing["images_per_s"] = images / seconds if seconds > 0 else 0.0
        self.images_this_epoch, self.epoch_mark = 0, self.epoch_marks()
        return timing

    def member_metrics(
        self,
        member: int,
        phase: Phase,
        step: TrainStep | CapturedStep,
        train: dict[str, float],
        timing: dict[str, float],
    ) -> dict[str, Any]:
        """One line of metrics.jsonl: the epoch's training sums and the test pass."""
        settings = self.plans[member][phase.number - 1].settings
        model = self.population.member(member)
        test = evaluate_elbo(model, self.test_x)
        metrics = epoch_metrics(self.progress, settings, train, test, self.lrs[member])
        metrics["phase"] = phase.number
        if settings.train.objective == "iwae":
            # The bound being trained, on the test set: what picks best.pt.
            bound = importance_weighted_nll(model, self.test_x, settings.train.k)
            metrics.update(test_iwae=bound.nll, test_iwae_k=settings.train.k)
        metrics.update({key: value for key, value in timing.items() if key != "started"})
        metrics["epoch_seconds"] = time.perf_counter() - timing["started"]
        return metrics

    def record(
        self,
        member: int,
        metrics: dict[str, Any],
        draw: bool,
        writer: OrderedWriter,
        carried_sums: dict[str, float],
    ) -> None:
        """Best choice, history, pictures, the metrics line and the epoch's checkpoints."""
        state, paths = self.states[member], self.runs[member].paths
        chosen = best_epoch([*state.history, metrics])
        if chosen is not None and chosen["epoch"] == metrics["epoch"]:
            state.best = Best(selection_loss(chosen), metrics["epoch"])
        state.history.append(metrics)
        if draw:
            model = self.population.member(member)
            save_epoch_pictures(
                model, paths, metrics["epoch"], self.fixed_z[member], self.test_x[:RECONSTRUCTED]
            )
            plots.save_curves(state.history, paths.curves)
            self.owed_pictures.pop(member, None)
        writer.submit(append_metrics, paths, dict(metrics))
        targets = [paths.last, paths.best] if state.best.epoch == metrics["epoch"] else [paths.last]
        order = self.generators[member]["data_order"].get_state()  # the next epoch's start
        saved = self.save(member, targets, order, writer, carried_sums)
        if saved is not None and not draw:
            self.owed_pictures[member] = (metrics["epoch"], saved["model"])
        writer.submit(write_status, paths, "running", metrics["epoch"])  # after its checkpoint

    def save_mid_epoch(self, writer: OrderedWriter, sums: list[dict[str, float]]) -> None:
        """Ctrl-C: every member's last.pt at this step, then the statuses."""
        for member in self.members_training():
            paths = self.runs[member].paths
            order = self.epoch_start_orders[member]
            self.save(member, [paths.last], order, writer, epoch_sums=sums[member])
        self.commit_saves(writer)
        writer.drain()
        self.write_statuses(None, "interrupted")

    def save(
        self,
        member: int,
        targets: list[Path],
        epoch_start_order: torch.Tensor,
        writer: OrderedWriter,
        epoch_sums: dict[str, float] | None = None,
    ) -> dict[str, Any] | None:
        """Everything needed to continue exactly here, copied to the CPU so that training
        goes on while a background thread writes it (a population's: pending until
        commit_saves); never non-finite weights. Returns what it saves (None: refused)."""
        run, population = self.runs[member], self.population
        if not torch.isfinite(population.flat[member]).all():  # one check for all weights
            self.fail_member(member, non_finite_weights(population.member(member)), writer)
            return None
        settings = self.plans[member][self.progress.phase].settings.train
        state = {
            "model": snapshot(population.member_weights(member)),
            "optimizer": snapshot(
                population.adam.member_state_dict(
                    member,
                    lr=self.lrs[member],
                    beta2=settings.adam_beta2,
                    layout=population.single_layout,
                )
            ),
            "config": run.config.to_dict(),
            "rng": stream_states(self.generators[member], epoch_start_order, self.device),
            **self.states[member].to_checkpoint(),
        }
        if epoch_sums is not None:  # mid-epoch: the sums so far; at an epoch end: the streak
            state["epoch_stats"] = epoch_sums
        if self.population_root is not None:
            targets = [pending_path(target) for target in targets]
            self.pending += targets
        writer.submit(write_checkpoints, state, targets)
        return state

    def commit_saves(self, writer: OrderedWriter) -> None:
        """A population's checkpoints saved since the last commit become the members' files
        in one step (population.commit_checkpoints), after all of them are written."""
        if self.population_root is not None and self.pending:
            writer.submit(commit_checkpoints, self.population_root, self.pending)
            self.pending = []

    def start_info(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "model": self.population.member(0),
            "dataset": self.dataset,
            "steps_per_epoch": self.steps_per_epoch,
            "resumed_epoch": self.progress.epoch,
            "resumed_position": self.progress.position,
            "plan": [phase.describe() for phase in self.plan],
            "phase": self.progress.phase + 1,
            "members": [run.label for run in self.runs],
        }


def build_model(config: Config, device: torch.device) -> VAE:
    """The VAE with weights drawn from the config's seed, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = VAE(config.model)
    return model.to(device)


def sample_grid_z(config: Config) -> list[torch.Tensor]:
    """The fixed noise of the per-epoch sample pictures (from the run's seed): the top
    layer's z, then each lower layer's noise."""
    generator = torch.Generator().manual_seed(config.train.seed)
    sizes = latent_dims(config.model)[::-1]  # the top first, then down
    return [torch.randn(SAMPLE_GRID, size, generator=generator) for size in sizes]


def snapshot(value: Any) -> Any:
    """A CPU copy of every tensor in a nested state dict (training mutates the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value


def carried(sums: dict[str, float]) -> dict[str, float]:
    """What an epoch-end checkpoint keeps of the running sums: the bad-step streak and the
    halt, which span epoch ends (a streak across one must not be forgotten on resume)."""
    return {name: sums[name] for name in CARRIED}


def repair_best(paths: RunPaths, checkpoint: dict[str, Any]) -> None:
    """After a crash between an epoch's two writes (last.pt, then best.pt) best.pt is an
    earlier epoch's while last.pt says that epoch was the best: last.pt is the truth, and its
    bytes are that epoch's best.pt."""
    from vae_cli.checkpoint import load_checkpoint

    best = checkpoint["best"]
    if checkpoint.get("position") or best["epoch"] != checkpoint["epoch"] or not best["epoch"]:
        return
    if paths.best.is_file() and load_checkpoint(paths.best)["epoch"] == best["epoch"]:
        return
    write_atomically(paths.best, paths.last.read_bytes())


def non_finite_weights(model: VAE) -> str:
    """Why a model's weights may not be saved: the first parameter that is not finite."""
    name = next(n for n, p in model.named_parameters() if not torch.isfinite(p).all())
    return f"parameter {name} is not finite; refusing to save it (try a lower --lr)"


def write_checkpoints(state: dict[str, Any], paths: list[Path]) -> None:
    """Serialise once and write the same bytes to each path (last.pt, and best.pt)."""
    data = serialize_checkpoint(state)
    for path in paths:
        write_atomically(path, data)


def keep_best_of_earlier_phase(
    paths: RunPaths, history: list[dict[str, Any]], phase: Phase
) -> None:
    """A phase (or resume) that changes the objective (or k) starts a new best.pt; the earlier
    phase's best stays as best-<criterion>.pt (e.g. best-elbo.pt) instead of being overwritten."""
    if not history or not paths.best.is_file():
        return
    earlier = selection_criterion(history[-1])
    train = phase.settings.train
    if earlier != criterion(train.objective, train.k):
        write_atomically(paths.checkpoints / f"best-{earlier}.pt", paths.best.read_bytes())


def epoch_metrics(
    progress: Progress, config: Config, train: dict[str, float], test: Any, lr: float
) -> dict[str, Any]:
    """One line of metrics.jsonl (timing fields are added by the caller)."""
    return {
        "epoch": progress.epoch,
        "step": progress.step,
        "binarize": config.data.binarize,
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
    }


@torch.no_grad()
def save_epoch_pictures(
    model: VAE, paths: RunPaths, epoch: int, fixed_z: list[torch.Tensor], originals: torch.Tensor
) -> None:
    model.eval()
    device = next(model.parameters()).device
    samples = torch.sigmoid(model.generate(*(z.to(device) for z in fixed_z)))
    images.save_grid(samples, paths.sample_picture(epoch), nrow=8)
    reconstructions = torch.sigmoid(model(originals, mean_only=True)[0])
    images.save_grid(
        images.interleave_rows(originals, reconstructions, 8),
        paths.reconstruction_picture(epoch),
        nrow=8,
    )
