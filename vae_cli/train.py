"""The training loop: data order, optimisation, per-epoch evaluation, checkpoints and pictures.

`train()` reads top to bottom; all randomness comes from explicit generators saved in every
checkpoint, so a resumed run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import hashlib
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import torch

from vae_cli import images, plots
from vae_cli.callbacks import Callbacks
from vae_cli.checkpoint import serialize_checkpoint
from vae_cli.config import Config
from vae_cli.data import Dataset, prepare_images, to_float
from vae_cli.device import make_deterministic, resolve_device
from vae_cli.errors import TrainingFailed, TrainingInterrupted, TrainingPruned
from vae_cli.evaluate import evaluate_elbo, importance_weighted_nll
from vae_cli.files import OrderedWriter, write_atomically
from vae_cli.model import VAE
from vae_cli.plan import build_plan
from vae_cli.run_files import (
    RunPaths,
    append_metrics,
    read_metrics,
    truncate_metrics,
    write_status,
)
from vae_cli.selection import best_epoch, criterion, selection_criterion, selection_loss
from vae_cli.step import CapturedStep, TrainStep, build_step, summarize

SAMPLE_GRID = 64  # 8x8 samples per epoch, from one fixed z
RECONSTRUCTED = 16  # test images shown over their reconstructions per epoch
PROGRESS_EVERY = 25  # steps between reads of the on-device statistics (each read is a sync)
# Pictures and curves.png are redrawn at most this often (and after the last epoch): drawing
# them every epoch would cost more than a fast epoch itself.
PICTURE_INTERVAL_SECONDS = 20.0
DEVICE_STREAMS = ("noise", "binarize")  # generators that live on the training device


def build_model(config: Config, device: torch.device) -> VAE:
    """The VAE with weights drawn from the config's seed, without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = VAE(config.model)
    return model.to(device)


def learning_rate(config: Config, progress: float) -> float:
    """Constant, or cosine decay from lr to final_lr as progress goes 0 -> 1."""
    train = config.train
    if train.lr_schedule == "constant":
        return train.lr
    return train.final_lr + 0.5 * (train.lr - train.final_lr) * (1 + math.cos(math.pi * progress))


def kl_weight(config: Config, step: int, steps_per_epoch: int) -> float:
    """beta, reached linearly over the warm-up epochs."""
    warmup_steps = config.train.kl_warmup_epochs * steps_per_epoch
    return config.train.beta * min(1.0, step / warmup_steps) if warmup_steps else config.train.beta


def make_generators(config: Config, device: torch.device) -> dict[str, torch.Generator]:
    """Separate streams, so that e.g. changing the batch size leaves the weights' init alone."""
    seed = config.train.seed
    return {
        "data_order": torch.Generator().manual_seed(seed),  # CPU: same order on every device
        "noise": torch.Generator(device=device).manual_seed(seed + 1),
        "binarize": torch.Generator(device=device).manual_seed(seed + 2),
    }


def saved_device_type(checkpoint: dict[str, Any]) -> str:
    """The device type whose generators a checkpoint's noise and binarization states are.

    Older checkpoints do not say: a CPU generator's state is 5,056 bytes, a CUDA one's 16."""
    rng = checkpoint["rng"]
    if "device_type" in rng:
        return rng["device_type"]
    return "cpu" if rng["noise"].numel() == torch.Generator().get_state().numel() else "cuda"


def reseeded_stream(seed: int, name: str, step: int) -> int:
    """A seed for a device stream re-derived at `step` (e.g. a CUDA run resumed on a CPU)."""
    digest = hashlib.sha256(f"{seed}:{name}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def restore_generators(
    checkpoint: dict[str, Any], generators: dict[str, torch.Generator], config: Config
) -> None:
    """Every stream as saved; the device streams are re-derived from the seed and the step
    when the device type changed, since a generator takes only its own type's state."""
    rng = checkpoint["rng"]
    generators["data_order"].set_state(rng["data_order"])
    same_device = saved_device_type(checkpoint) == generators["noise"].device.type
    for name in DEVICE_STREAMS:
        if same_device:
            generators[name].set_state(rng[name])
        else:
            generators[name].manual_seed(
                reseeded_stream(config.train.seed, name, checkpoint["step"])
            )


class InterruptFlag:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step and save; a
    second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptFlag:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self.previous = {}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested, self.signum = True, signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # The CLI's own SIGTERM handler (it raises Terminated), else the default: terminate.
        previous = self.previous.get(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


def checkpoint_state(
    model: VAE,
    train_step: TrainStep | CapturedStep,
    config: Config,
    generators: dict[str, torch.Generator],
    epoch_start_order: torch.Tensor,
    device: torch.device,
) -> dict[str, Any]:
    """Everything needed to continue exactly where training stands, copied to the CPU so that
    training can go on while the copy is written."""
    rng = {name: g.get_state() for name, g in generators.items()}
    rng["data_order"] = epoch_start_order  # the epoch's permutation is redrawn from here
    rng["device_type"] = device.type
    rng["torch"] = torch.get_rng_state()
    rng["python"] = random.getstate()
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    optimizer = train_step.optimizer.state_dict(0, train_step.lr_value)
    return {
        "model": snapshot(model.state_dict()),
        "optimizer": snapshot(optimizer),
        "config": config.to_dict(),
        "rng": rng,
    }


def snapshot(value: Any) -> Any:
    """A CPU copy of every tensor in a nested state dict (training mutates the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value


def check_finite_weights(model: VAE, flat: torch.Tensor) -> None:
    if torch.isfinite(flat).all():  # one check (and one sync) for all parameters
        return
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingFailed(
                f"parameter {name} is not finite; refusing to save it (try a lower --lr)"
            )


def write_checkpoints(state: dict[str, Any], paths: list[Path]) -> None:
    """Serialise once and write the same bytes to each path (last.pt, and best.pt)."""
    data = serialize_checkpoint(state)
    for path in paths:
        write_atomically(path, data)


def train(
    config: Config,
    paths: RunPaths,
    *,
    dataset: Dataset,
    resume: dict[str, Any] | None = None,
    callbacks: Callbacks | None = None,
) -> list[dict[str, Any]]:
    """Train (or continue) the run in `paths`; returns all epochs' metrics."""
    callbacks = callbacks or Callbacks()
    device = resolve_device(config.train.device)
    make_deterministic(device, compiling=config.train.compile)
    train_images, test_images = prepare_images(dataset, config.data.binarize)
    train_images = train_images.to(device)  # (N, 784) uint8, indexed per batch
    test_x = to_float(test_images).to(device)
    model = build_model(config, device)
    generators = make_generators(config, device)
    # The phase (0: [train]; then each [[phases]] table) and where it began.
    phase, phase_start = 0, {"epoch": 0, "step": 0, "elapsed": 0.0}
    if resume is not None and "phase" in resume:
        phase, phase_start = resume["phase"], resume["phase_start"]
    active = config.phase(phase)  # the settings training uses now
    train_step = build_step(model, active, generators)
    fixed_z = torch.randn(
        SAMPLE_GRID,
        config.model.latent_dim,
        generator=torch.Generator().manual_seed(config.train.seed),
    )
    n_train, batch_size = len(train_images), config.train.batch_size
    steps_per_epoch = math.ceil(n_train / batch_size)

    # What a checkpoint carries; a resume overwrites it.
    epoch, step, position, elapsed = 0, 0, 0, 0.0
    best = {"loss": math.inf, "epoch": 0}
    setup_reported: dict[str, float] = {}  # setup seconds already left out of images/s
    history = read_metrics(paths)
    if resume is not None:
        restore(resume, model, train_step, generators, device)
        epoch, step, position = resume["epoch"], resume["step"], resume["position"]
        elapsed, best = resume["elapsed"], resume["best"]
        history = truncate_metrics(paths, epoch)
        keep_best_of_earlier_phase(paths, history, active)

    # Checkpoints and metrics lines are written in order on a background thread: a metrics
    # line always lands before the checkpoint of its epoch, so a resume never lacks one.
    writer = OrderedWriter()

    def save(targets: list[Path], epoch_start_order: torch.Tensor, **progress: Any) -> None:
        check_finite_weights(model, train_step.flat)
        state = checkpoint_state(model, train_step, config, generators, epoch_start_order, device)
        state.update(epoch=epoch, step=step, elapsed=elapsed, best=best, **progress)
        state.update(phase=phase, phase_start=dict(phase_start))
        writer.submit(write_checkpoints, state, targets)

    plan = build_plan(config)
    callbacks.on_start(
        {
            "device": device,
            "model": model,
            "dataset": dataset,
            "steps_per_epoch": steps_per_epoch,
            "resumed_epoch": epoch,
            "resumed_position": position,
            "plan": [phase_.describe() for phase_ in plan],
            "phase": phase + 1,
        }
    )
    last_drawn = time.perf_counter()
    try:
        with InterruptFlag() as interrupt:
            write_status(paths, "running", epoch)  # inside: from here on Ctrl-C saves a checkpoint
            while True:
                if position == 0 and phase_done(active, phase_start, epoch, elapsed):
                    if phase == len(config.phases):
                        break
                    # The next phase starts here, with its own settings and schedule.
                    phase, phase_start = (
                        phase + 1,
                        {"epoch": epoch, "step": step, "elapsed": elapsed},
                    )
                    active = config.phase(phase)
                    train_step.apply_phase(active)
                    callbacks.on_phase(
                        {"number": phase + 1, "of": len(plan), "plan": plan[phase].describe()}
                    )
                    writer.drain()  # the earlier phase's best.pt must be on disk to be kept
                    keep_best_of_earlier_phase(paths, history, active)
                    continue
                budget_seconds = active.train.time_budget * 60 if active.train.time_budget else None
                phase_steps = steps_per_epoch * active.train.epochs
                epoch_start_order = generators["data_order"].get_state()
                order = torch.randperm(n_train, generator=generators["data_order"]).to(device)
                epoch_started = time.perf_counter()
                images_before = last_read = summarize(train_step.stats.tolist())
                for position in range(position, steps_per_epoch):  # noqa: B020 - resumes mid-epoch
                    step_started = time.perf_counter()
                    batch = order[position * batch_size : (position + 1) * batch_size]
                    progress = (
                        min(1.0, (elapsed - phase_start["elapsed"]) / budget_seconds)
                        if budget_seconds
                        else (step - phase_start["step"]) / phase_steps
                    )
                    # index_select: a third of the time of train_images[batch] for uint8 rows.
                    train_step(
                        train_images.index_select(0, batch),
                        learning_rate(active, progress),
                        kl_weight(active, step - phase_start["step"], steps_per_epoch),
                    )
                    step += 1
                    elapsed += time.perf_counter() - step_started

                    # The host reads the on-device sums only every PROGRESS_EVERY steps.
                    end_of_epoch = position + 1 == steps_per_epoch
                    if end_of_epoch or interrupt.requested or (position + 1) % PROGRESS_EVERY == 0:
                        current = summarize(train_step.stats.tolist())
                        check_bad_steps(current, last_read, active, paths, epoch, step, callbacks)
                        last_read = current
                        callbacks.on_progress(epoch, position + 1, steps_per_epoch, current)
                    if interrupt.requested and not end_of_epoch:
                        save(
                            [paths.last],
                            epoch_start_order,
                            position=position + 1,
                            mid_epoch=True,
                            epoch_stats=train_step.stats.cpu(),
                        )
                        writer.drain()
                        write_status(paths, "interrupted", epoch)
                        raise TrainingInterrupted(
                            str(paths.root), str(paths.last), interrupt.signum
                        )

                # End of epoch: evaluate, save, log, draw.
                epoch, position = epoch + 1, 0
                train_seconds = time.perf_counter() - epoch_started
                epoch_stats = summarize(train_step.stats.tolist())
                train_step.reset_epoch_sums()
                test = evaluate_elbo(model, test_x)
                metrics = epoch_metrics(epoch, step, active, epoch_stats, test, train_step)
                metrics["phase"] = phase + 1
                if active.train.objective == "iwae":
                    # The bound being trained, on the test set: what picks best.pt.
                    bound = importance_weighted_nll(model, test_x, active.train.k)
                    metrics.update(test_iwae=bound.nll, test_iwae_k=active.train.k)
                chosen = best_epoch([*history, metrics])
                if chosen is not None and chosen["epoch"] == epoch:
                    best = {"loss": selection_loss(chosen), "epoch": epoch}
                # Compile, warm-up and capture are reported apart, outside this epoch's rate.
                for key, total in setup_seconds(train_step).items():
                    if total > setup_reported.get(key, 0.0):
                        metrics[key] = total - setup_reported.get(key, 0.0)
                        train_seconds -= metrics[key]
                        setup_reported[key] = total
                metrics["seconds"] = train_seconds
                metrics["images_per_s"] = (
                    epoch_stats["images"] - images_before["images"]
                ) / train_seconds
                history.append(metrics)
                last_epoch = phase == len(config.phases) and phase_done(
                    active, phase_start, epoch, elapsed
                )
                if last_epoch or time.perf_counter() - last_drawn >= PICTURE_INTERVAL_SECONDS:
                    save_epoch_pictures(model, paths, epoch, fixed_z, test_x[:RECONSTRUCTED])
                    plots.save_curves(history, paths.curves)
                    last_drawn = time.perf_counter()
                metrics["epoch_seconds"] = time.perf_counter() - epoch_started
                writer.submit(append_metrics, paths, dict(metrics))
                targets = [paths.last, paths.best] if best["epoch"] == epoch else [paths.last]
                save(targets, generators["data_order"].get_state(), position=0, mid_epoch=False)
                callbacks.on_epoch(metrics)
                if last_epoch:
                    break
            writer.drain()
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: stop now; last.pt is the last epoch's
        writer.close()
        write_status(paths, "interrupted", epoch)
        raise
    except TrainingInterrupted:
        writer.close()
        raise
    except TrainingPruned:  # raised by on_epoch, after that epoch's writes were submitted
        writer.drain()
        writer.close()
        write_status(paths, "pruned", epoch)
        raise
    except Exception:
        writer.close()
        write_status(paths, "failed", epoch)
        raise
    writer.close()
    write_status(paths, "finished", epoch)
    return history


def phase_done(active: Config, start: dict[str, Any], epoch: int, elapsed: float) -> bool:
    """Whether a phase that began at `start` has run its epochs or spent its time budget."""
    if epoch - start["epoch"] >= active.train.epochs:
        return True
    budget = active.train.time_budget
    return bool(budget and elapsed - start["elapsed"] >= budget * 60)


def setup_seconds(train_step: TrainStep | CapturedStep) -> dict[str, float]:
    """Seconds spent so far compiling, and warming up and capturing CUDA graphs."""
    return {
        "compile_seconds": train_step.compile_seconds or 0.0,
        "capture_seconds": getattr(train_step, "capture_seconds", 0.0),
    }


def keep_best_of_earlier_phase(
    paths: RunPaths, history: list[dict[str, Any]], config: Config
) -> None:
    """A resume that changes the objective (or k) starts a new best.pt; the earlier phase's
    best stays as best-<criterion>.pt (e.g. best-elbo.pt) instead of being overwritten."""
    if not history or not paths.best.is_file():
        return
    earlier = selection_criterion(history[-1])
    if earlier != criterion(config.train.objective, config.train.k):
        write_atomically(paths.checkpoints / f"best-{earlier}.pt", paths.best.read_bytes())


def restore(
    checkpoint: dict[str, Any],
    model: VAE,
    train_step: TrainStep | CapturedStep,
    generators: dict[str, torch.Generator],
    device: torch.device,
) -> None:
    """Weights, optimiser, every RNG stream and a mid-epoch's running sums."""
    model.load_state_dict(checkpoint["model"])
    train_step.optimizer.load_state_dict(0, checkpoint["optimizer"])
    restore_generators(checkpoint, generators, train_step.config)
    torch.set_rng_state(checkpoint["rng"]["torch"])
    random.setstate(checkpoint["rng"]["python"])
    if device.type == "cuda" and "cuda" in checkpoint["rng"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    if checkpoint["position"]:
        saved = checkpoint["epoch_stats"]  # older checkpoints hold fewer slots
        train_step.stats[: len(saved)].copy_(saved)


def check_bad_steps(
    current: dict[str, float],
    last_read: dict[str, float],
    config: Config,
    paths: RunPaths,
    epoch: int,
    step: int,
    callbacks: Callbacks,
) -> None:
    """Warn about skipped non-finite steps; stop after --max-bad-steps of them in a row."""
    skipped = int(current["bad_steps"] - last_read["bad_steps"])
    if skipped > 0:
        callbacks.on_warning(
            f"skipped {skipped} step(s) with a non-finite loss or gradient "
            f"(epoch {epoch + 1}, step {step})"
        )
    if current["halted"] or current["bad_streak"] >= config.train.max_bad_steps:
        raise TrainingFailed(
            f"{config.train.max_bad_steps} non-finite steps in a row (--max-bad-steps "
            f"{config.train.max_bad_steps}); training stopped, {paths.last} holds the last "
            "good epoch (try a lower --lr)"
        )


def epoch_metrics(
    epoch: int,
    step: int,
    config: Config,
    train: dict[str, float],
    test: Any,
    train_step: TrainStep | CapturedStep,
) -> dict[str, Any]:
    """One line of metrics.jsonl (timing fields are added by the caller)."""
    return {
        "epoch": epoch,
        "step": step,
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
        "lr": train_step.lr_value,
    }


@torch.no_grad()
def save_epoch_pictures(
    model: VAE, paths: RunPaths, epoch: int, fixed_z: torch.Tensor, originals: torch.Tensor
) -> None:
    model.eval()
    device = next(model.parameters()).device
    samples = torch.sigmoid(model.decode(fixed_z.to(device)))
    images.save_grid(samples, paths.sample_picture(epoch), nrow=8)
    reconstructions = torch.sigmoid(model(originals, mean_only=True)[0])
    images.save_grid(
        images.interleave_rows(originals, reconstructions, 8),
        paths.reconstruction_picture(epoch),
        nrow=8,
    )
    model.train()
