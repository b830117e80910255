"""Bad input: one `Error:` line on stderr, exit code 2, no traceback, nothing on disk changed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, Result, run_vae, run_vae_process, snapshot, train_args, train_tiny

from vae_cli.data import dataset as data_module


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs never reach the network: the download fails at once."""

    def no_network(root: Path, dataset: str) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(data_module, "download_dataset", no_network)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("train", "--epochs", 0), "--epochs"),
        (("train", "--batch-size", 0), "--batch-size"),
        (("train", "--batch-size", -1), "--batch-size"),
        (("train", "--latent-dim", 0), "--latent-dim"),
        (("train", "--lr", -1), "--lr"),
        (("train", "--lr", "nan"), "--lr"),
        (("train", "--limit", 0), "--limit"),
        (("train", "--grad-clip", -1), "--grad-clip"),
        (("train", "--max-logvar", 0), "--max-logvar"),
        (("train", "--binarize", "sometimes"), "--binarize"),
        (("train", "--epochs", "ten"), "--epochs"),
        (("train", "--no-such-flag"), "--no-such-flag"),
        (("sample", "--n", 0), "--n"),
        (("sample", "--temperature", "inf"), "--temperature"),
        (("sample", "--temperature", 101), "--temperature"),
        (("eval", "--iw-samples", 0), "--iw-samples"),
        (("eval", "--binarize", "half"), "--binarize"),
        (("interpolate", "--steps", 1), "--steps"),
        # Sizes and seeds past what torch can hold, or would exhaust memory, are refused.
        (("train", "--latent-dim", 4097), "--latent-dim"),
        (("train", "--hidden-dim", 10**20), "--hidden-dim"),
        (("train", "--seed", 2**32), "--seed"),
        (("train", "--max-bad-steps", 10**20), "--max-bad-steps"),
        (("train", "--objective", "iwae", "--k", 1001), "--k"),
        (("sample", "--seed", 10**20), "--seed"),
        (("reconstruct", "--seed", 2**32), "--seed"),
        (("latent", "--seed", 2**32), "--seed"),
        (("interpolate", "--seed", 2**32), "--seed"),
        (("tune", "--seed", 2**32), "--seed"),
        (("eval", "--iw-samples", 100_001), "--iw-samples"),
        (("train", "--prior", "cauchy"), "--prior"),
        (("train", "--prior", "vamp", "--pseudo-inputs", 0), "--pseudo-inputs"),
        (("train", "--prior", "vamp", "--pseudo-inputs", -1), "--pseudo-inputs"),
        (("train", "--prior", "vamp", "--pseudo-inputs", 5001), "--pseudo-inputs"),
        (("frobnicate",), "frobnicate"),
    ],
)
def test_absurd_values_are_refused(args: tuple, fragment: str, tmp_path: Path) -> None:
    assert_user_error(
        run_vae(*args, "--runs-dir", tmp_path) if args[0] != "frobnicate" else run_vae(*args),
        fragment,
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_an_unavailable_device_suggests_cpu(device: str, tmp_path: Path, data_dir: Path) -> None:
    import torch

    if (device == "cuda" and torch.cuda.is_available()) or (
        device == "mps" and torch.backends.mps.is_available()
    ):
        pytest.skip(f"{device} is available here")
    result = run_vae("train", "--device", device, "--data-dir", data_dir, "--runs-dir", tmp_path)
    assert_user_error(result, f"--device {device}", "--device cpu")
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint(tmp_path: Path) -> None:
    assert_user_error(run_vae("eval", "--checkpoint", tmp_path / "nope.pt"), "nope.pt", "not found")


def test_folder_without_checkpoints(tmp_path: Path) -> None:
    assert_user_error(run_vae("sample", "--checkpoint", tmp_path), str(tmp_path), "no checkpoint")


def test_no_runs_yet_says_how_to_start(tmp_path: Path) -> None:
    assert_user_error(run_vae("sample", "--runs-dir", tmp_path / "runs"), "no runs", "vae train")


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, b"PK\x03\x04truncated", b"text\n"])
def test_broken_checkpoint_files(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "c.pt").write_bytes(content)
    assert_user_error(run_vae("eval", "--checkpoint", tmp_path / "c.pt"), str(tmp_path / "c.pt"))


def test_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_vae("train", "--data-dir", missing, "--runs-dir", tmp_path / "runs")
    assert_user_error(result, str(missing / "MNIST" / "raw"), "--data-dir", "download failed")
    assert not missing.exists()  # the failed download attempt cleaned up after itself
    assert not (tmp_path / "runs").exists()


def test_empty_data_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = run_vae("train", "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs")
    assert_user_error(result, str(tmp_path / "data" / "MNIST" / "raw"))
    assert list((tmp_path / "data").iterdir()) == []


def copy_mnist(data_dir: Path, target: Path) -> Path:
    raw = target / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"):
        shutil.copy(data_dir / "MNIST/raw" / name, raw / name)
    return raw


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("magic", "wrong magic number"),
        ("truncate", "truncated"),
        ("flip", "MD5"),
    ],
)
def test_corrupt_idx_files_are_named(
    damage: str, fragment: str, tmp_path: Path, data_dir: Path
) -> None:
    raw = copy_mnist(data_dir, tmp_path)
    images = (data_dir / "MNIST/raw/train-images-idx3-ubyte").read_bytes()
    if damage == "magic":
        images = b"\x00\x00\x08\x01" + images[4:]
    elif damage == "truncate":
        images = images[:-1000]
    else:
        images = images[:5000] + bytes([images[5000] ^ 0xFF]) + images[5001:]
    (raw / "train-images-idx3-ubyte").write_bytes(images)
    before = snapshot(tmp_path)
    result = run_vae("train", "--data-dir", tmp_path, "--runs-dir", tmp_path / "runs")
    assert_user_error(result, str(raw / "train-images-idx3-ubyte"), fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "config file not found"),
        ("this is = = not toml", "not valid TOML"),
        ("[train]\nepoch = 3\n", "[train] epoch: unknown key (did you mean epochs?)"),
        ('[train]\nepochs = "three"\n', "[train] epochs: expected an integer"),
        ("[model]\nlatent_dim = 0\n", "[model] latent_dim: expected an integer >= 1"),
        ("[optimizer]\nlr = 1.0\n", "unknown section [optimizer]"),
        ("epoch = 3\n", "epoch = ...: unknown key (did you mean epochs, under [train]?)"),
        (
            "latent_dim = 4\n",
            "latent_dim = ...: a setting outside its table; write it under [model]",
        ),
        ("seeds = '0-3'\n", "seeds = ...: a setting outside its table; write it under [run]"),
        ("colour = 1\n", "colour = ...: unknown key; settings go in tables ([model], [data]"),
        ("lr = [1, 2]\n", "lr = ...: a setting outside its table; write it under [train]"),
        ("[train]\nlatent_dim = 4\n", "[train] latent_dim: belongs in [model], not [train]"),
    ],
)
def test_config_file_errors_name_file_and_key(
    text: str | None, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    if text is not None:
        path.write_text(text)
    result = run_vae("train", "--config", path, "--runs-dir", tmp_path / "runs")
    assert_user_error(result, str(path), fragment)
    assert not (tmp_path / "runs").exists()


def test_out_folder_is_created(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "s.png"
    assert run_vae("sample", "--checkpoint", trained_run, "--out", out).code == 0
    assert out.is_file()


def test_out_without_png_suffix_is_refused(trained_run: Path, tmp_path: Path) -> None:
    assert_user_error(
        run_vae("sample", "--checkpoint", trained_run, "--out", tmp_path / "s.jpg"), "s.jpg", ".png"
    )
    assert list(tmp_path.iterdir()) == []


def test_out_that_cannot_be_written(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    result = run_vae("sample", "--checkpoint", trained_run, "--out", tmp_path / "file/s.png")
    assert_user_error(result, "file/s.png")


def test_a_cosine_schedule_that_would_rise_is_refused(tmp_path: Path, data_dir: Path) -> None:
    flags = ("--lr-schedule", "cosine", "--lr", 1e-3, "--final-lr", 1)
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, *flags))
    assert_user_error(result, "--final-lr 1 is above --lr 0.001: a cosine schedule decays")
    assert list(tmp_path.iterdir()) == []
    # A constant schedule never reaches final_lr: nothing to contradict.
    assert run_vae(*train_args(tmp_path, data_dir, *TINY, "--final-lr", 1)).code == 0


def test_a_sigma_floor_above_the_logvar_ceiling_is_refused(tmp_path: Path, data_dir: Path) -> None:
    # exp(10 / 2) = 148.4: a floor of 1000 would pin every logvar to the ceiling.
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, "--min-std", 1000))
    assert_user_error(result, "--min-std 1000 is not below the largest sigma --max-logvar 10")
    assert list(tmp_path.iterdir()) == []
    assert run_vae(*train_args(tmp_path, data_dir, *TINY, "--min-std", 100)).code == 0


@pytest.mark.parametrize("name", [".", "..", "../escape", "a/b", "-x", "", "ABSOLUTE"])
def test_a_run_name_must_be_one_folder_inside_the_runs_dir(
    name: str, tmp_path: Path, data_dir: Path
) -> None:
    runs = tmp_path / "runs"
    (runs / "kept").mkdir(parents=True)
    (runs / "kept/config.toml").write_text("an earlier run")
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    # --overwrite too: `--name .` used to point it at the whole runs folder.
    result = run_vae(*train_args(runs, data_dir, *TINY, "--overwrite", name=name))
    assert_user_error(result, f"--name {name!r}: use letters, digits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert [p.name for p in runs.iterdir()] == ["kept"]
    assert (runs / "kept/config.toml").read_text() == "an earlier run"


def test_overwrite_replaces_a_run_and_nothing_else(
    trained_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "old")
    (runs / "study/trial-0000").mkdir(parents=True)
    (runs / "study/study.db").write_bytes(b"a sweep's results")
    (runs / "file").write_text("not a folder")
    refusals = {"study": "not a run folder (no config.toml)", "file": "exists and is not a folder"}
    for name, fragment in refusals.items():
        before = snapshot(runs)
        result = run_vae(*train_args(runs, data_dir, *TINY, "--overwrite", name=name))
        assert_user_error(result, f"{runs / name}: {fragment}")
        assert snapshot(runs) == before
    result = run_vae(*train_args(runs, data_dir, *TINY, "--epochs", 1, "--overwrite", name="old"))
    assert result.code == 0, result.stderr
    assert [json.loads(line)["epoch"] for line in (runs / "old/metrics.jsonl").open()] == [1]
    assert not (runs / "old/samples/epoch_002.png").exists()  # the old run's files are gone


@pytest.mark.parametrize("command", ["sample --out", "sample --checkpoint", "tune --study"])
def test_a_file_name_too_long_is_one_error(command: str, trained_run: Path, tmp_path: Path) -> None:
    long = "a" * 300  # past the 255 bytes a file name may have
    args = {
        "sample --out": ("sample", "--checkpoint", trained_run, "--out", tmp_path / f"{long}.png"),
        "sample --checkpoint": ("sample", "--checkpoint", tmp_path / f"{long}.pt"),
        "tune --study": ("tune", "--config", tmp_path / "s.toml", "--study", long),
    }[command]
    (tmp_path / "s.toml").write_text("[search]\nlr = { low = 1e-4, high = 1e-3 }\n")
    result = run_vae(*args, "--runs-dir", tmp_path / "runs")
    assert_user_error(result, long, "too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_run_folder_that_cannot_be_made(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    runs = tmp_path / "file/runs"
    result = run_vae(*train_args(runs, data_dir, *TINY, name="r"))
    assert_user_error(result, f"{runs / 'r'}: cannot create run folder")
    assert (tmp_path / "file").read_text() == "a file, not a folder"


def test_existing_run_name_is_refused(trained_run: Path, data_dir: Path) -> None:
    before = snapshot(trained_run)
    result = run_vae(
        "train",
        "--data-dir",
        data_dir,
        "--runs-dir",
        trained_run.parent,
        "--name",
        trained_run.name,
    )
    assert_user_error(result, "already exists", "--resume", "--overwrite")
    assert snapshot(trained_run) == before


def test_resume_with_a_different_latent_dim_is_refused(trained_run: Path, data_dir: Path) -> None:
    before = snapshot(trained_run)
    result = run_vae(
        "train", "--resume", trained_run, "--latent-dim", 16, "--epochs", 5, "--data-dir", data_dir
    )
    assert_user_error(result, "--latent-dim 16", "32")
    assert snapshot(trained_run) == before


def test_disk_full_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vae_cli import files as files_module

    run = tmp_path / "r"
    train_tiny(tmp_path, "r", data_dir, "--epochs", 1)
    before = (run / "checkpoints/last.pt").read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", disk_full)
    result = run_vae("train", "--resume", run, "--epochs", 2, "--data-dir", data_dir, "--quiet")
    assert result.code == 2
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert "No space left on device" in result.stderr and "unchanged" in result.stderr
    assert (run / "checkpoints/last.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "Interrupted."), (signal.SIGTERM, 143, "Terminated.")],
)
def test_a_stop_signal_while_sample_writes_its_png_leaves_no_partial_file(
    signum: int,
    code: int,
    said: str,
    trained_run: Path,
    tmp_path: Path,
    start_blocking_write: Callable[..., subprocess.Popen],
) -> None:
    out_dir, marker = tmp_path / "out", tmp_path / "inside-the-write"
    process = start_blocking_write(
        "big.png", 1, marker, "sample", "--checkpoint", trained_run, "--out", out_dir / "big.png"
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert Path(marker.read_text()).exists()  # the PNG's bytes are in its temporary file
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.strip() == said
    assert list(out_dir.iterdir()) == []  # neither the PNG nor its temporary file


def test_unexpected_errors_keep_their_traceback(tmp_path: Path) -> None:
    # A corrupted installation is not the user's fault: it must show a traceback, exit 1.
    script = (
        "import sys, vae_cli.commands.load as i\n"
        "def broken(*a, **k): raise ZeroDivisionError('bug')\n"
        "i.load_model = broken\n"
        "from vae_cli.cli.app import main\n"
        f"sys.exit(main(['sample', '--checkpoint', {str(tmp_path)!r}]))\n"
    )
    (tmp_path / "best.pt").write_bytes(b"x")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr


def test_real_script_reports_a_user_error_in_one_line(tmp_path: Path) -> None:
    result = run_vae_process("train", "--epochs", 0, "--runs-dir", tmp_path)
    assert_user_error(result, "--epochs")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("train", "--epochs", 0), "--epochs: expected an integer >= 1, got 0"),
        (("eval", "--iw-samples", 0), "--iw-samples: expected an integer >= 1, got 0"),
        (("sample", "--n", 0), "--n: expected an integer >= 1, got 0"),
        (("sample", "--temperature", 200), "--temperature: expected a number <= 100, got 200"),
        (("latent", "--n-inputs", 21), "--n-inputs: expected an integer <= 20, got 21"),
        (("train", "--lr", 0), "--lr: expected a number > 0, got 0"),
        (
            ("train", "--pseudo-inputs", 5001),
            "--pseudo-inputs: expected an integer <= 5000, got 5001",
        ),
        (("train", "--prior", "cauchy"), "--prior: expected one of normal, vamp, got 'cauchy'"),
        (("train", "--epochs", "ten"), "--epochs: expected an integer, got 'ten'"),
        (("sample", "--n", "ten"), "--n: expected an integer, got 'ten'"),
    ],
)
def test_every_bad_flag_value_reads_the_same_way(args: tuple, said: str, tmp_path: Path) -> None:
    result = run_vae(*args, "--runs-dir", tmp_path)
    assert_user_error(result)
    assert result.stderr == f"Error: {said}\n"


def test_seeds_with_a_seed_is_refused(tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(*train_args(tmp_path, data_dir, *TINY, "--seeds", "0-3", "--seed", 5))
    assert_user_error(result, "--seed", "--seeds 0-3")
    config = tmp_path / "seeded.toml"
    config.write_text("[train]\nseed = 5\n")
    result = run_vae(*train_args(tmp_path, data_dir, "--config", config, "--seeds", "0-1"))
    assert_user_error(result, f"{config}: [train] seed", "--seeds 0-1")
    assert not (tmp_path / "r").exists()


def test_a_resume_with_fewer_epochs_than_done_says_so_plainly(
    trained_run: Path, data_dir: Path
) -> None:
    before = snapshot(trained_run)
    result = run_vae("train", "--resume", trained_run, "--epochs", 1, "--data-dir", data_dir)
    assert_user_error(result, "--epochs 1: the run has already trained 2 epochs", "N > 2")
    assert "of 1 epochs" not in result.stderr
    result = run_vae("train", "--resume", trained_run, "--data-dir", data_dir)
    assert_user_error(result, "already trained 2 epochs", "--epochs N with N > 2")
    assert snapshot(trained_run) == before


def test_messages_never_show_python_values(
    trained_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    from vae_cli.checkpoint import load_checkpoint, save_checkpoint

    result = run_vae(
        "train", "--resume", trained_run, "--limit", 256, "--epochs", 3, "--data-dir", data_dir
    )
    assert_user_error(result, "--limit 256: the resumed run was trained with --limit 512")
    unlimited = tmp_path / "unlimited"
    shutil.copytree(trained_run, unlimited)
    state = load_checkpoint(unlimited / "checkpoints/last.pt")
    state["config"] = state["config"].replace({"limit": None}).to_dict()
    save_checkpoint(unlimited / "checkpoints/last.pt", state)
    result = run_vae("train", "--resume", unlimited, "--limit", 256, "--data-dir", data_dir)
    assert_user_error(result, "--limit 256: the resumed run was trained without --limit")
    config = trained_run.parent / "no-limit.toml"
    config.write_text("[train]\nepochs = 1\n[data]\nbinarize = true\n")
    result = run_vae("train", "--config", config, "--runs-dir", trained_run.parent)
    assert_user_error(result, "expected a string, got true")
    assert "None" not in result.stderr and "True" not in result.stderr
