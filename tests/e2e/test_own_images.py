"""Your own images through every command that reads images, on a model trained on MNIST: what
the model reads of a digit drawn on a page, its codes, its score, and bad files refused with
nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_labelled_rows, png_size, run_vae, snapshot
from PIL import Image, ImageDraw

from vae_cli.data.images import read_images
from vae_cli.pictures.grids import grid_size


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 7 drawn in black on a 200x200 white page, as PNG, RGBA on a transparent page and
    JPEG; an .npy of two MNIST-like arrays; a pickled .npy."""
    folder = tmp_path_factory.mktemp("drawn")
    page = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(page).line([(60, 40), (140, 40), (90, 170)], fill=0, width=14)
    page.save(folder / "seven.png")
    page.convert("RGB").save(folder / "seven.jpg", quality=95)
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(100, 30), (100, 170)], fill=(0, 0, 90, 255), width=16)
    rgba.save(folder / "one.png")
    arrays = (np.random.default_rng(0).random((2, 28, 28)) > 0.8).astype(np.uint8) * 255
    np.save(folder / "two.npy", arrays)
    np.save(folder / "hostile.npy", np.array([print], dtype=object), allow_pickle=True)
    return {p.stem if p.suffix != ".jpg" else "jpeg": p for p in folder.iterdir()}


def test_encode_gives_the_encoders_mu_of_what_the_model_read(
    trained_run: Path, drawn: dict[str, Path], tmp_path: Path
) -> None:
    import vae_cli

    out = tmp_path / "codes.npy"
    paths = [drawn["seven"], drawn["one"], drawn["jpeg"]]
    result = run_vae("encode", "--checkpoint", trained_run, "--out", out,
                     *(arg for path in paths for arg in ("--images", path)))  # fmt: skip
    assert result.code == 0, result.stderr
    assert "read 3 images: grey, 3 inverted (light background), 3 fitted" in result.stdout
    codes = np.load(out, allow_pickle=False)  # the one line the README shows
    assert codes.dtype.names == ("name", "mu_z", "logvar_z")
    assert list(codes["name"]) == [str(path) for path in paths]
    model = vae_cli.load(trained_run)
    with torch.no_grad():  # continuous pixels: the model reads the fitted images as they are
        mu, logvar = model.encode(read_images(paths).pixels)
    np.testing.assert_allclose(codes["mu_z"], mu.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(codes["logvar_z"], logvar.numpy(), rtol=1e-6, atol=1e-6)


def test_encode_covers_a_split_with_its_labels_as_csv(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "codes.csv"
    result = run_vae("encode", "--checkpoint", trained_run, "--data-dir", data_dir,
                     "--out", out)  # fmt: skip
    assert result.code == 0 and "(10,000 images)" in result.stdout, result.stderr
    table = np.genfromtxt(out, delimiter=",", names=True)  # numpy reads it back in one line
    assert len(table) == 10_000 and table.dtype.names[:2] == ("label", "mu_z_0")
    assert set(np.unique(table["label"]).astype(int)) == set(range(10))


def test_a_test_images_score_is_evals_iw_nll_of_it(
    trained_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    common = ("--checkpoint", trained_run, "--data-dir", data_dir)
    scored = run_vae("score", *common, "--limit", 1, "--iw-samples", 30, "--json",
                     "--out", tmp_path / "s.png")  # fmt: skip
    assert scored.code == 0, scored.stderr
    report = json.loads(scored.stdout)
    evaluated = json.loads(
        run_vae("eval", *common, "--limit", 1, "--iw-samples", 30, "--json").stdout
    )
    assert report["images"][0]["nll"] == pytest.approx(evaluated["iw"]["nll"], abs=1e-9)
    test_set = report["test_set"]
    assert test_set["images"] == 10_000 and not test_set["cached"]
    again = json.loads(run_vae("score", *common, "--limit", 2, "--iw-samples", 30, "--json",
                               "--out", tmp_path / "s.png").stdout)  # fmt: skip
    assert again["test_set"]["cached"] and again["test_set"]["cache"] == test_set["cache"]
    assert again["images"][0] == report["images"][0]
    share = np.mean(np.load(test_set["cache"]) < report["images"][0]["nll"])
    assert report["images"][0]["higher_than_test"] == pytest.approx(100 * share)


def test_score_ranks_your_images_and_pictures_the_extremes(
    trained_run: Path, drawn: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    picture, table = tmp_path / "score.png", tmp_path / "scores.csv"
    result = run_vae("score", "--checkpoint", trained_run, "--data-dir", data_dir,
                     "--images", drawn["seven"], "--images", drawn["two"], "--iw-samples", 30,
                     "--out", picture, "--csv", table)  # fmt: skip
    assert result.code == 0, result.stderr
    assert "% of test" in result.stdout and f"wrote {picture}" in result.stdout
    rows = list(np.genfromtxt(table, delimiter=",", names=True, dtype=None, encoding=None))
    assert [Path(row["image"]).name for row in rows] == ["seven.png", "two.npy[0]",
                                                         "two.npy[1]"]  # fmt: skip
    assert_labelled_rows(picture, rows=2, grid_width=grid_size(3, 3)[0], scale=3)


def test_reconstruct_shows_each_image_what_the_model_read_and_its_reconstruction(
    trained_run: Path, drawn: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.png"
    result = run_vae("reconstruct", "--checkpoint", trained_run, "--mean-only", "--out", out,
                     "--images", drawn["seven"], "--images", drawn["one"])  # fmt: skip
    assert result.code == 0, result.stderr
    assert_labelled_rows(out, rows=3, grid_width=grid_size(2, 2)[0], scale=3)


def test_interpolate_and_latent_take_your_images(
    trained_run: Path, drawn: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    ends = ("--images", drawn["seven"], "--images", drawn["one"])
    line = run_vae("interpolate", "--checkpoint", trained_run, "--steps", 4, *ends,
                   "--out", tmp_path / "i.png")  # fmt: skip
    assert line.code == 0 and "(seven.png -> one.png)" in line.stdout, line.stderr
    assert png_size(tmp_path / "i.png")[0] == 3 * grid_size(6, 6)[0]
    view = run_vae("latent", "--checkpoint", trained_run, "--data-dir", data_dir, *ends,
                   "--samples-per-input", 20, "--out", tmp_path / "l.png")  # fmt: skip
    assert view.code == 0 and (tmp_path / "l.png").is_file(), view.stderr
    three = run_vae("interpolate", "--checkpoint", trained_run, *ends, "--images",
                    drawn["jpeg"], "--out", tmp_path / "x.png")  # fmt: skip
    assert three.code == 2 and "between two images, and these hold 3" in three.stderr


@pytest.mark.parametrize("command", ["encode", "score", "reconstruct", "eval"])
def test_a_hostile_array_is_refused_and_nothing_written(
    command: str, trained_run: Path, drawn: dict[str, Path], tmp_path: Path
) -> None:
    before = snapshot(trained_run)
    result = run_vae(command, "--checkpoint", trained_run, "--images", drawn["hostile"])
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: --images {drawn['hostile']}: holds Python objects")
    assert snapshot(trained_run) == before
