"""Every command through the real CLI on a tiny run: files, picture sizes, numbers, bytes."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import (
    REPO,
    assert_labelled_rows,
    png_pixels,
    png_rgb,
    png_size,
    run_vae,
    train_args,
    train_tiny,
)

from vae_cli.pictures.grids import grid_size


def test_train_writes_the_run_layout(trained_run: Path) -> None:
    for name in (
        "config.toml",
        "metrics.jsonl",
        "curves.png",
        "status.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (trained_run / name).is_file(), name
    # A tiny run is far shorter than the redraw interval: only the last epoch is drawn.
    assert png_size(trained_run / "samples/epoch_002.png") == grid_size(64, 8)
    reconstructions = trained_run / "reconstructions/epoch_002.png"
    assert_labelled_rows(reconstructions, rows=4, grid_width=grid_size(32, 8)[0], scale=2)
    assert not (trained_run / "samples/epoch_001.png").exists()
    assert json.loads((trained_run / "status.json").read_text())["status"] == "finished"


def test_metrics_have_one_finite_line_per_epoch(trained_run: Path) -> None:
    lines = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        for key in (
            "train_loss",
            "train_recon",
            "train_kl",
            "test_loss",
            "test_recon",
            "test_kl",
            "seconds",
            "images_per_s",
        ):
            assert math.isfinite(m[key]), key
        assert math.isclose(m["test_loss"], m["test_recon"] + m["test_kl"], rel_tol=1e-6)
        assert m["binarize"] == "none"
        assert m["step"] == 8 * m["epoch"]  # 512 images / batch 64


def test_config_toml_is_resolved_and_has_a_manifest(trained_run: Path) -> None:
    config = tomllib.loads((trained_run / "config.toml").read_text())
    assert config["data"]["limit"] == 512
    assert config["train"]["batch_size"] == 64
    assert config["model"]["latent_dims"] == [32] and "latent_dim" not in config["model"]
    manifest = config["manifest"]
    assert manifest["command"].startswith("vae ")
    assert manifest["torch_version"] == str(torch.__version__)
    # what decides whether another machine's run may agree to the bit
    assert manifest["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert manifest["cpu_threads"] == torch.get_num_threads()
    assert any(
        entry.startswith("train-images-idx3-ubyte:6bbc9ace") for entry in manifest["dataset_md5"]
    )


def test_eval_json_parses_and_names_the_checkpoint(trained_run: Path, data_dir: Path) -> None:
    result = run_vae(
        "eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--limit", 500, "--json"
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checkpoint"].endswith("best.pt")
    assert report["epoch"] == 2 and report["step"] == 16
    assert report["binarize"] == "none" and report["images"] == 500
    assert math.isclose(report["loss"], report["recon"] + report["kl"], rel_tol=1e-6)
    assert len(report["kl_per_dim"]) == 32
    assert report["kl_per_dim"] == sorted(report["kl_per_dim"], reverse=True)


def test_eval_of_best_pt_reproduces_that_epochs_test_loss(
    trained_run: Path, data_dir: Path
) -> None:
    result = run_vae(
        "eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--limit", 512, "--json"
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    metrics = [json.loads(line) for line in (trained_run / "metrics.jsonl").open()]
    logged = metrics[report["epoch"] - 1]  # the same 512 test images as training used
    assert report["loss"] == pytest.approx(logged["test_loss"], rel=1e-9)
    assert report["kl"] == pytest.approx(logged["test_kl"], rel=1e-9)
    assert report["active_units"] == logged["active_units"]


def test_eval_table_by_default(trained_run: Path, data_dir: Path) -> None:
    result = run_vae("eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--limit", 200)
    assert result.code == 0, result.stderr
    assert "checkpoint" in result.stdout and "epoch 2" in result.stdout
    assert "binarize=none" in result.stdout and "active units" in result.stdout


def test_eval_uses_the_latest_run_when_no_checkpoint(trained_run: Path, data_dir: Path) -> None:
    result = run_vae(
        "eval", "--runs-dir", trained_run.parent, "--data-dir", data_dir, "--limit", 100, "--json"
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["checkpoint"] == str(trained_run / "checkpoints/best.pt")


def test_sample_same_seed_same_bytes_other_seed_differs(trained_run: Path, tmp_path: Path) -> None:
    outputs = []
    for seed, name in ((42, "a.png"), (42, "b.png"), (7, "c.png")):
        result = run_vae(
            "sample",
            "--checkpoint",
            trained_run,
            "--seed",
            seed,
            "--out",
            tmp_path / name,
            "--device",
            "cpu",
        )
        assert result.code == 0, result.stderr
        assert str(tmp_path / name) in result.stdout
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]
    assert png_size(tmp_path / "a.png") == grid_size(64, 8)


def test_sample_default_out_is_inside_the_run(trained_run: Path) -> None:
    result = run_vae("sample", "--checkpoint", trained_run, "--n", 16, "--seed", 3)
    assert result.code == 0, result.stderr
    assert png_size(trained_run / "sample_seed3_n16.png") == grid_size(16, 8)


def test_sample_temperature_zero_gives_identical_images(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cold.png"
    assert (
        run_vae(
            "sample", "--checkpoint", trained_run, "--temperature", 0, "--n", 4, "--out", out
        ).code
        == 0
    )
    pixels = png_pixels(out)
    tiles = [pixels[2:30, 2 + i * 30 : 30 + i * 30] for i in range(4)]
    assert all(torch.equal(tiles[0], tile) for tile in tiles[1:])


def test_reconstruct_mean_only_is_deterministic(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    pictures = []
    for name in ("a.png", "b.png"):
        result = run_vae(
            "reconstruct",
            "--checkpoint",
            trained_run,
            "--data-dir",
            data_dir,
            "--mean-only",
            "--out",
            tmp_path / name,
        )
        assert result.code == 0, result.stderr
        pictures.append((tmp_path / name).read_bytes())
    assert pictures[0] == pictures[1]
    # 32 originals over 32 reconstructions, each row named, three times larger
    assert_labelled_rows(tmp_path / "a.png", rows=8, grid_width=grid_size(64, 8)[0], scale=3)


def test_reconstruct_sampled_depends_on_seed(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    pictures = {}
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        out = tmp_path / f"{name}.png"
        assert (
            run_vae(
                "reconstruct",
                "--checkpoint",
                trained_run,
                "--data-dir",
                data_dir,
                "--n",
                8,
                "--seed",
                seed,
                "--out",
                out,
            ).code
            == 0
        )
        pictures[name] = out.read_bytes()
    assert pictures["a"] == pictures["b"] != pictures["c"]


def test_interpolate_writes_a_row(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "line.png"
    result = run_vae(
        "interpolate",
        "--checkpoint",
        trained_run,
        "--data-dir",
        data_dir,
        "--from-index",
        0,
        "--to-index",
        1,
        "--steps",
        6,
        "--out",
        out,
    )
    assert result.code == 0, result.stderr
    assert "(test image 0 -> test image 1)" in result.stdout
    # Original, 6 steps, original, three times larger with a caption under each end ...
    width, height = (3 * side for side in grid_size(8, 8))
    picture = png_rgb(out)
    assert picture.shape[1] == width and picture.shape[0] > height + 10
    captions = picture[height:].max(dim=-1).values
    step = 3 * 30
    assert (captions[:, :step] > 150).any() and (captions[:, -step:] > 150).any()
    assert not (captions[:, 3 * step : 4 * step] > 150).any()
    # ... and a coloured frame around each end, none around the steps between.
    orange = (picture[..., 0] > 200) & (picture[..., 1] > 100) & (picture[..., 2] < 60)
    framed = [bool(orange[:height, i * step + 20 : i * step + 70].any()) for i in range(8)]
    assert framed == [True, False, False, False, False, False, False, True]


def test_latent_picture_has_the_expected_size(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    from vae_cli.pictures.plots import DPI, LATENT_SIZE, STRIP_ROW_HEIGHT

    out = tmp_path / "latent.png"
    result = run_vae(
        "latent",
        "--checkpoint",
        trained_run,
        "--data-dir",
        data_dir,
        "--n-inputs",
        3,
        "--samples-per-input",
        50,
        "--out",
        out,
    )
    assert result.code == 0, result.stderr
    # One row of thumbnails above the plot adds its height.
    height = (LATENT_SIZE[1] + STRIP_ROW_HEIGHT) * DPI
    assert png_size(out) == (LATENT_SIZE[0] * DPI, round(height))


def test_curves_picture_has_the_expected_size(trained_run: Path) -> None:
    from vae_cli.pictures.plots import CURVES_SIZE, DPI

    assert png_size(trained_run / "curves.png") == (
        CURVES_SIZE[0] * DPI,
        round(CURVES_SIZE[1] * DPI),
    )


def test_runs_lists_the_run(trained_run: Path) -> None:
    result = run_vae("runs", "--runs-dir", trained_run.parent)
    assert result.code == 0
    row = next(line for line in result.stdout.splitlines() if "tiny" in line)
    assert "2/2" in row and "finished" in row and "none, 1 layer 32" in row


def test_sample_grid_refuses_latent_dim_not_two(trained_run: Path) -> None:
    result = run_vae("sample", "--checkpoint", trained_run, "--grid")
    assert result.code == 2
    assert result.stderr.startswith("Error: --grid needs a model whose top latent is 2-D")


def test_gradients_of_a_real_model(trained_run: Path, tmp_path: Path) -> None:
    """The lesson of the trick on a model trained on MNIST: the score function is hundreds of
    times noisier than the pathwise gradient, and DReG's encoder SNR is the higher one."""
    out = tmp_path / "g.png"
    result = run_vae(
        "gradients", "--checkpoint", trained_run, "--samples", 300, "--k", "1,8", "--json",
        "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["latent_dim"] == 32 and len(report["estimators"]["stl"]["std_mu"]) == 32
    assert report["estimators"]["score"]["variance_vs_reparam"] > 100
    assert report["naive"]["grad_logvar"] == [0.0] * 32
    assert report["encoder_snr"]["dreg"] > report["encoder_snr"]["iwae"]
    assert png_size(out) == (1400, 450)


def test_real_console_script_runs(trained_run: Path, tmp_path: Path) -> None:
    from conftest import run_vae_process

    out = tmp_path / "s.png"
    result = run_vae_process("sample", "--checkpoint", trained_run, "--out", out)
    assert result.code == 0, result.stderr
    assert png_size(out) == grid_size(64, 8)


@pytest.mark.parametrize(
    "options",
    [
        ("--objective", "iwae", "--k", 4),
        ("--arch", "conv", "--hidden-dim", 64),
        ("--binarize", "dynamic", "--beta", 0.5, "--kl-warmup-epochs", 1, "--free-bits", 0.1),
        ("--lr-schedule", "cosine", "--time-budget", 5, "--activation", "tanh", "--amp"),
    ],
)
def test_training_options_run_end_to_end(options: tuple, tmp_path: Path, data_dir: Path) -> None:
    result = run_vae(
        *train_args(
            tmp_path, data_dir, "--limit", 256, "--epochs", 2, "--batch-size", 64, *options
        ),
        "--quiet",
    )
    assert result.code == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["test_loss"]) for m in lines)
    assert lines[1]["test_loss"] < lines[0]["test_loss"]


def test_eval_can_score_another_binarization(trained_run: Path, data_dir: Path) -> None:
    args = ("eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--limit", 200)
    result = run_vae(*args, "--binarize", "static", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["binarize"] == "static" and report["trained_binarize"] == "none"
    table = run_vae(*args, "--binarize", "static")
    assert "binarize=static, trained on none" in table.stdout


def test_pictures_are_redrawn_once_the_interval_has_passed(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vae_cli.training.epoch_pictures.PICTURE_INTERVAL_SECONDS", 0.0)
    run = train_tiny(tmp_path, "r", data_dir)
    drawn = sorted(p.name for p in (run / "samples").iterdir())
    assert drawn == ["epoch_001.png", "epoch_002.png"]
    assert sorted(p.name for p in (run / "reconstructions").iterdir()) == drawn


def test_curves_of_a_short_run_tick_whole_epochs(trained_run: Path) -> None:
    from vae_cli.pictures.plots import curves_figure
    from vae_cli.runs.folder import RunFolder
    from vae_cli.runs.metrics import read_metrics

    history = read_metrics(RunFolder(trained_run))
    assert [m["epoch"] for m in history] == [1, 2]
    figure = curves_figure(history)
    figure.canvas.draw()
    for axis in figure.axes:
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_pictures_made_with_other_options_do_not_replace_each_other(
    trained_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    commands = [
        ("reconstruct", "--mean-only"),
        ("reconstruct", "--mean-only", "--n", 16),
        ("interpolate", "--from-index", 0, "--to-index", 1),
        ("interpolate", "--from-index", 2, "--to-index", 3),
        ("sample", "--seed", 1),
        ("sample", "--seed", 1, "--temperature", 0.5),
    ]
    written = []
    for command in commands:
        data = ("--data-dir", data_dir) if command[0] != "sample" else ()
        result = run_vae(*command, "--checkpoint", run, *data)
        assert result.code == 0, result.stderr
        written.append(Path(result.stdout.split()[1]))
        assert "replaced" not in result.stdout
    assert len(set(written)) == len(commands) and all(path.is_file() for path in written)
    assert [path.name for path in written[:2]] == [
        "reconstruct_mean.png",
        "reconstruct_mean_n16.png",
    ]
    again = run_vae(*commands[1], "--checkpoint", run, "--data-dir", data_dir)
    assert (
        f"wrote {written[1]} (replaced the earlier one made with the same options)" in again.stdout
    )


CHEAP_CHECK = """
import sys
from vae_cli.cli.app import main
code = main({args!r})
heavy = [name for name in ("torch", "optuna") if name in sys.modules]
print(" and ".join(heavy) + " imported" if heavy else "torch not imported", code)
"""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["sample", "--out", "s.jpg"], "name it *.png"),
        (["reconstruct", "--out", "folder/"], "name it *.png"),
        (["export", "--out", "m.pt"], "name it *.safetensors"),
        (["sample", "--checkpoint", "runs/no-such-run"], "checkpoint not found"),
        (["eval", "--device", "gpu"], "--device: expected one of auto, cpu, cuda, mps"),
        (["gradients", "--k", "0"], "--k: expected sizes from 1 to 10000"),
        (["train", "--device", "gpu"], "--device: expected one of auto, cpu, cuda, mps"),
        (["train", "--latent-dims", "64,x"], "--latent-dims: expected integers"),
        (["train", "--batch-size", "0"], "--batch-size: expected an integer >= 1"),
        (["train", "--config", "no-such.toml"], "config file not found"),
        (["train", "--resume", "no-such-run", "--epochs", "0"], "--epochs: expected an"),
        (["train", "--resume", "no-such-run"], "no such run folder"),
        (["tune", "--config", "no-such.toml"], "config file not found"),
        (["tune", "--config", "configs/tune.toml", "--pruner", "x"], "--pruner: expected"),
        (["interpolate", "--images", "docs/gradients.png"], "between two images, and these hold 1"),
        (["interpolate", "--from-index", "3"], "give both --from-index and --to-index"),
    ],
)
def test_cheap_checks_come_before_torch_loads(
    args: list[str], fragment: str, trained_run: Path
) -> None:
    """Every command refuses a bad value before torch (or Optuna) loads: in a fraction of a
    second, not after the seconds torch's import takes."""
    import subprocess
    import sys

    if args[0] not in ("train", "tune") and "--checkpoint" not in args:
        args = [*args, "--checkpoint", str(trained_run)]
    script = CHEAP_CHECK.format(args=args)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "torch not imported 2", done.stderr
    assert fragment in done.stderr and done.stderr.startswith("Error: ")


def test_eval_of_continuous_pixels_says_it_is_not_a_likelihood(
    trained_run: Path, data_dir: Path
) -> None:
    args = ("eval", "--checkpoint", trained_run, "--data-dir", data_dir, "--limit", 100)
    report = json.loads(run_vae(*args, "--iw-samples", 4, "--json").stdout)
    assert report["binarize"] == "none" and report["likelihood"] is False
    assert "not -log p(x)" in report["caveat"] and "--binarize dynamic" in report["caveat"]
    assert len(report["caveat"]) < 160  # one short line, not a paragraph
    binarized = json.loads(run_vae(*args, "--binarize", "dynamic", "--json").stdout)
    assert binarized["likelihood"] is True and "caveat" not in binarized


def test_the_continuous_pixels_note_wraps_between_words_at_a_terminal(
    trained_run: Path, data_dir: Path
) -> None:
    """Through a real terminal 120 columns wide (and at 80 through COLUMNS), the note is
    wrapped by the program, between words, never by the terminal in the middle of one."""
    from conftest import run_in_terminal

    shown = run_in_terminal("eval", "--checkpoint", trained_run, "--data-dir", data_dir,
                            "--limit", 50)  # fmt: skip
    lines = [line.rstrip() for line in shown.stdout.replace("\r", "").splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Note: continuous"))
    note = lines[start : start + 2]
    assert all(len(line) <= 120 for line in note)
    words = " ".join(note).split()
    assert "cross-entropy," in words and "likelihoods" in words
