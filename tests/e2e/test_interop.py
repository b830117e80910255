"""Interop: TensorBoard event files, safetensors export and loading, and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_vae, train_tiny

from vae_cli.checkpoint import load_checkpoint


def test_tensorboard_has_the_epoch_scalars_images_and_hparams(
    tmp_path: Path, data_dir: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_tiny(tmp_path, "r", data_dir, "--tensorboard")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "test/loss", "test/kl", "test/active_units", "train/lr"} <= scalars
    for tag, key in (("test/loss", "test_loss"), ("train/lr", "lr"), ("train/kl", "train_kl")):
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2]
        assert [p.value for p in points] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    (picture,) = events.Images("samples")  # drawn after the last epoch (pictures are throttled)
    assert picture.step == 2 and picture.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    hparams = EventAccumulator(str(run / "tensorboard/hparams"))
    hparams.Reload()
    (best,) = hparams.Scalars("hparam/best_test_loss")
    assert best.value == pytest.approx(min(m["test_loss"] for m in metrics), rel=1e-6)


def test_tensorboard_without_the_package_is_one_error(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    result = run_vae(
        "train", "--tensorboard", "--runs-dir", tmp_path, "--name", "r", "--data-dir", data_dir
    )
    assert result.code == 2
    assert result.stderr == (
        "Error: --tensorboard needs the tensorboard package: pip install tensorboard\n"
    )
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.safetensors"
    result = run_vae("export", "--checkpoint", trained_run, "--out", out)
    assert result.code == 0, result.stderr
    return out


def test_export_holds_the_weights_and_describes_them(trained_run: Path, exported: Path) -> None:
    from safetensors import safe_open

    best = load_checkpoint(trained_run / "checkpoints/best.pt")
    with safe_open(str(exported), framework="pt") as handle:
        metadata = {key: json.loads(value) for key, value in handle.metadata().items()}
        assert set(handle.keys()) == set(best["model"])
        for name, tensor in best["model"].items():
            assert torch.equal(handle.get_tensor(name), tensor), name
    assert metadata["config"] == best["config"].to_dict()
    assert metadata["binarize"] == "none" and metadata["dataset"] == "mnist"
    assert metadata["epoch"] == best["epoch"] and metadata["best"] == best["best"]
    assert metadata["versions"]["torch"] == str(torch.__version__)


def test_sampling_from_the_export_gives_the_same_bytes(
    trained_run: Path, exported: Path, tmp_path: Path
) -> None:
    for source, name in ((trained_run, "run.png"), (exported, "export.png")):
        result = run_vae("sample", "--checkpoint", source, "--seed", 5, "--out", tmp_path / name)
        assert result.code == 0, result.stderr
    assert (tmp_path / "run.png").read_bytes() == (tmp_path / "export.png").read_bytes()


def test_eval_reads_the_export_like_the_checkpoint(
    trained_run: Path, exported: Path, data_dir: Path
) -> None:
    reports = []
    for source in (trained_run, exported):
        result = run_vae(
            "eval", "--checkpoint", source, "--data-dir", data_dir, "--limit", 200, "--json"
        )
        assert result.code == 0, result.stderr
        reports.append(json.loads(result.stdout))
    assert reports[0]["loss"] == reports[1]["loss"] and reports[1]["epoch"] == 2


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not safetensors at all", "not a readable safetensors file"),
        (None, "not one `vae export` wrote"),  # a valid file from another program
        ("truncated", "not a readable safetensors file"),
    ],
)
def test_a_corrupt_or_foreign_safetensors_is_one_error(
    content: bytes | str | None, fragment: str, exported: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    if content is None:
        save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "other"})
    elif content == "truncated":
        path.write_bytes(exported.read_bytes()[:-100])
    else:
        path.write_bytes(content)
    result = run_vae("sample", "--checkpoint", path, "--out", tmp_path / "s.png")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"Error: {path}: ")
    assert fragment in result.stderr and not (tmp_path / "s.png").exists()


def test_resume_needs_a_pt_and_export_needs_the_suffix(
    exported: Path, trained_run: Path, tmp_path: Path
) -> None:
    resumed = run_vae("train", "--resume", exported, "--epochs", 3)
    assert resumed.code == 2 and "an export holds the weights only" in resumed.stderr
    wrong = run_vae("export", "--checkpoint", trained_run, "--out", tmp_path / "model.pt")
    assert wrong.code == 2 and "name it *.safetensors" in wrong.stderr
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("kind", ["run folder", ".pt", ".safetensors"])
def test_the_python_api_loads_each_kind_of_path(
    kind: str, trained_run: Path, exported: Path
) -> None:
    import vae_cli

    path = {
        "run folder": trained_run,
        ".pt": trained_run / "checkpoints/best.pt",
        ".safetensors": exported,
    }[kind]
    vae = vae_cli.load(str(path))
    assert not vae.training and vae.config.latent_dims == (32,)
    assert vae.run_config.data.binarize == "none"
    best = load_checkpoint(trained_run / "checkpoints/best.pt")["model"]
    assert all(torch.equal(t, best[name]) for name, t in vae.state_dict().items())
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 32)
    assert torch.equal(mu, vae.encode(x.view(3, 784))[0])
    assert vae.decode(mu).shape == (3, 784)


def test_importing_vae_cli_does_not_import_torch() -> None:
    code = "import sys, vae_cli; print('torch' in sys.modules, callable(vae_cli.load))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_a_resumed_run_continues_its_tensorboard_curves(tmp_path: Path, data_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_tiny(tmp_path, "r", data_dir, "--tensorboard", "--epochs", 1)
    resumed = run_vae("train", "--resume", run, "--epochs", 3, "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [point.step for point in events.Scalars("test/loss")] == [1, 2, 3]


def test_events_past_the_resumed_checkpoint_are_dropped(tmp_path: Path, data_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_tiny(tmp_path, "r", data_dir, "--tensorboard", "--epochs", 1)
    epoch_one = (run / "checkpoints/last.pt").read_bytes()
    assert run_vae("train", "--resume", run, "--epochs", 2, "--data-dir", data_dir).code == 0
    # As if killed after epoch 2's events but before its checkpoint: resume from epoch 1.
    (run / "checkpoints/last.pt").write_bytes(epoch_one)
    assert run_vae("train", "--resume", run, "--epochs", 2, "--data-dir", data_dir).code == 0
    events = EventAccumulator(str(run / "tensorboard"))  # purges as TensorBoard does
    events.Reload()
    assert [point.step for point in events.Scalars("test/loss")] == [1, 2]


def hparams_records(run: Path) -> list[tuple[dict, float]]:
    """Each hparams record in a run's TensorBoard files: (settings, best test loss)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    records = []
    for path in sorted((run / "tensorboard/hparams").glob("events.out.tfevents.*")):
        settings, best = None, None
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    settings = {
                        name: getattr(v, v.WhichOneof("kind"))
                        for name, v in data.session_start_info.hparams.items()
                    }
                elif value.tag == "hparam/best_test_loss":
                    best = (
                        value.tensor.float_val[0] if value.tensor.float_val else value.simple_value
                    )
        records.append((settings, best))
    return records


def test_the_hparams_record_holds_the_settings_and_the_true_best_after_a_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    run = train_tiny(tmp_path, "r", data_dir, "--tensorboard", "--epochs", 1, "--beta", 0.5)
    ((settings, best),) = hparams_records(run)
    assert settings["train.beta"] == 0.5 and settings["train.lr"] == pytest.approx(1.2e-3)
    assert settings["model.latent_dims"] == "32" and settings["data.binarize"] == "none"
    assert settings["phases"] == 1
    resumed = run_vae("train", "--resume", run, "--epochs", 3, "--data-dir", data_dir, "--quiet")
    assert resumed.code == 0, resumed.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    ((settings, best),) = hparams_records(run)  # one record, not one per invocation
    assert best == pytest.approx(min(m["test_loss"] for m in metrics), rel=1e-6)
    assert settings["train.epochs"] == 3


def test_a_pruned_trials_last_epoch_reaches_tensorboard(tmp_path: Path, data_dir: Path) -> None:
    """The pruner stops a run after an epoch's hooks ran: TensorBoard must have seen it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vae_cli.commands.stack import train_members
    from vae_cli.config.settings import Config
    from vae_cli.errors import TrainingPruned
    from vae_cli.runs.folder import RunFolder
    from vae_cli.training.callbacks import Callbacks
    from vae_cli.training.events import EpochEnded
    from vae_cli.training.loop import Member

    class PruneAtEpochTwo(Callbacks):
        def on_epoch(self, event: EpochEnded) -> None:
            if event.metrics.epoch == 2:
                raise TrainingPruned("pruned after epoch 2")

    config = Config().replace(
        {"limit": 256, "epochs": 4, "batch_size": 64, "tensorboard": True, "device": "cpu"}
    )
    member = Member(config, RunFolder(tmp_path / "trial"), callbacks=PruneAtEpochTwo())
    (state,) = train_members(
        [member], data_dir=data_dir, command="vae tune", display=lambda **_: Callbacks()
    )
    assert state.status == "pruned"
    events = EventAccumulator(str(tmp_path / "trial/tensorboard"))
    events.Reload()
    assert [point.step for point in events.Scalars("test/loss")] == [1, 2]
    assert json.loads((tmp_path / "trial/status.json").read_text())["status"] == "pruned"


def test_the_python_api_loads_the_best_epoch_not_the_last(tmp_path: Path, data_dir: Path) -> None:
    import vae_cli

    run = train_tiny(tmp_path, "r", data_dir, "--epochs", 1, "--validation", 100)
    # A second epoch at an absurd learning rate: worse, so best.pt stays epoch 1.
    worse = run_vae("train", "--resume", run, "--epochs", 2, "--lr", 0.5, "--data-dir", data_dir)
    assert worse.code == 0, worse.stderr
    best, last = (load_checkpoint(run / "checkpoints" / n) for n in ("best.pt", "last.pt"))
    assert (best["epoch"], last["epoch"]) == (1, 2)
    vae = vae_cli.load(run)
    assert all(torch.equal(t, best["model"][name]) for name, t in vae.state_dict().items())
    assert not all(torch.equal(t, last["model"][name]) for name, t in vae.state_dict().items())
