"""A user's images as the model reads them (data/images.py): made in the test as real files
(PNG, RGBA, JPEG, .npy, IDX), preprocessed pixel for pixel where the answer is known, and every
hostile or damaged file refused in one UserError."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx
from PIL import Image, ImageDraw

from vae_cli.data.images import INK, count_images, read_images
from vae_cli.errors import UserError


def canvas_with(box: tuple[int, int, int, int], size: int = 200) -> Image.Image:
    """Black ink filling `box` on a white canvas, as someone draws on paper."""
    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).rectangle(box, fill=0)
    return image


def saved(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


def test_a_square_is_fitted_exactly_as_mnists_digits_were(tmp_path: Path) -> None:
    """A 60x60 square near a corner of a 200x200 page: inverted, its box scaled to 20x20, its
    centre of mass (13.5, 13.5) put at the 28x28 canvas's centre: rows and columns 4 to 23."""
    read = read_images([saved(canvas_with((10, 20, 69, 79)), tmp_path / "square.png")])
    expected = torch.zeros(28, 28)
    expected[4:24, 4:24] = 1.0
    assert torch.equal(read.pixels.reshape(28, 28), expected)
    assert read.names == [str(tmp_path / "square.png")]
    assert read.said.startswith("read 1 image: grey, 1 inverted (light background), 1 fitted")


def test_the_aspect_is_kept_and_the_mass_centred(tmp_path: Path) -> None:
    """A bar twice as tall as wide becomes 20 by 10, centred: rows 4-23, columns 9-18."""
    read = read_images([saved(canvas_with((50, 20, 89, 99)), tmp_path / "bar.png")])
    ink = (read.pixels.reshape(28, 28) > 0.5).nonzero()
    assert (ink[:, 0].min(), ink[:, 0].max()) == (4, 23)
    assert (ink[:, 1].min(), ink[:, 1].max()) == (9, 18)


def test_rgba_on_a_transparent_page_and_jpeg_read_as_the_grey_png(tmp_path: Path) -> None:
    page = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(page).line([(60, 40), (140, 40), (90, 170)], fill=0, width=14)
    grey = read_images([saved(page, tmp_path / "seven.png")]).pixels
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(60, 40), (140, 40), (90, 170)], fill=(0, 0, 0, 255), width=14)
    assert torch.equal(read_images([saved(rgba, tmp_path / "seven_rgba.png")]).pixels, grey)
    jpeg = read_images([saved(page.convert("RGB"), tmp_path / "seven.jpg", quality=95)]).pixels
    assert (jpeg - grey).abs().mean() < 0.02  # compression noise only


def test_inversion_follows_the_background_or_the_flag(tmp_path: Path) -> None:
    dark = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(dark).rectangle((10, 4, 17, 23), fill=255)  # white ink on black already
    path = saved(dark, tmp_path / "dark.png")
    as_is = read_images([path], fit="resize")
    assert torch.equal(
        as_is.pixels, torch.from_numpy(np.asarray(dark) / 255).float().reshape(1, -1)
    )
    assert "0 inverted" in as_is.said and "resized to 28x28" in as_is.said
    forced = read_images([path], invert="yes", fit="resize").pixels
    assert torch.allclose(forced, 1 - as_is.pixels)
    light = saved(canvas_with((10, 10, 60, 60)), tmp_path / "light.png")
    assert read_images([light], invert="no", fit="resize").pixels.mean() > 0.8  # paper kept


def test_arrays_folders_and_idx_files(tmp_path: Path) -> None:
    images = (np.random.default_rng(0).random((3, 28, 28)) > 0.7).astype(np.uint8) * 255
    np.save(tmp_path / "flat.npy", images.reshape(3, 784))
    np.save(tmp_path / "floats.npy", images.astype(np.float32) / 255)
    write_idx(tmp_path / "digits-idx3-ubyte", torch.from_numpy(images), 0x803)
    folder = tmp_path / "drawn"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        saved(canvas_with((40, 40, 120, 160)), folder / name)
    paths = [tmp_path / "flat.npy", tmp_path / "floats.npy", tmp_path / "digits-idx3-ubyte",
             folder]  # fmt: skip
    read = read_images(paths, invert="no", fit="resize")
    assert len(read.pixels) == 11 and read.names[:2] == [f"{paths[0]}[0]", f"{paths[0]}[1]"]
    assert read.names[-2:] == [str(folder / "a.png"), str(folder / "b.png")]  # sorted
    as_given = torch.from_numpy(images / 255).float().reshape(3, -1)
    for start in (0, 3, 6):  # the same images three ways
        torch.testing.assert_close(read.pixels[start : start + 3], as_given)


def test_counting_reads_names_and_headers_only(tmp_path: Path) -> None:
    images = np.zeros((3, 784), dtype=np.uint8)
    np.save(tmp_path / "three.npy", images)
    write_idx(tmp_path / "five-idx3-ubyte", torch.zeros(5, 28, 28, dtype=torch.uint8), 0x803)
    folder = tmp_path / "drawn"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not decoded: counting reads no pixels")
    picture = saved(canvas_with((40, 40, 120, 160)), tmp_path / "one.png")
    paths = [tmp_path / "three.npy", tmp_path / "five-idx3-ubyte", folder, picture]
    assert count_images(paths) == 3 + 5 + 2 + 1
    assert count_images([picture, picture]) == 2
    # Where only reading can say what is wrong, counting leaves it to reading.
    np.save(tmp_path / "one-row.npy", images[0])
    (tmp_path / "cut-idx3-ubyte").write_bytes((0x803).to_bytes(4, "big") + b"\x00\x00")
    for unreadable in ("one-row.npy", "cut-idx3-ubyte"):
        assert count_images([tmp_path / unreadable]) is None, unreadable
    assert count_images([pickled_array(tmp_path / "objects.npy")]) is None


def pickled_array(path: Path) -> Path:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return path


def truncated_png(path: Path) -> Path:
    saved(canvas_with((10, 10, 50, 50)), path)
    path.write_bytes(path.read_bytes()[:100])
    return path


def bomb(path: Path) -> Path:
    """A PNG of 20,000 x 20,000 one-bit pixels: a few kilobytes, past Pillow's pixel limit."""
    Image.new("1", (20_000, 20_000)).save(path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png",
         "not an image Pillow can read"),
        (lambda d: truncated_png(d / "cut.png"), "a damaged image"),
        (lambda d: (d / "empty.png").write_bytes(b"") or d / "empty.png", "an empty file"),
        (lambda d: bomb(d / "bomb.png"), "more pixels than Pillow's limit"),
        (lambda d: saved(Image.new("I;16", (28, 28)), d / "deep.png"), "a 16-bit image"),
        (lambda d: saved(Image.new("P", (28, 28)), d / "palette.png"), "a palette image"),
        (lambda d: pickled_array(d / "objects.npy"), "never unpickled"),
        (lambda d: np.save(d / "shape.npy", np.zeros((2, 20, 20))) or d / "shape.npy",
         "expected (N, 28, 28) or (N, 784)"),
        (lambda d: np.save(d / "ints.npy", np.zeros((2, 784), np.int32)) or d / "ints.npy",
         "a int32 array"),
        (lambda d: np.save(d / "big.npy", np.full((1, 784), 2.0)) or d / "big.npy",
         "floats outside [0, 1]"),
        (lambda d: (d / "none").mkdir() or d / "none", "no images in this folder"),
        (lambda d: d / "missing.png", "no such file or folder"),
    ],
)  # fmt: skip
def test_every_bad_file_is_one_error_naming_it(make, message: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(UserError, match=re.escape(message)) as refused:
        read_images([path])
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_a_folder_holding_other_files_is_refused_naming_them(tmp_path: Path) -> None:
    saved(canvas_with((40, 40, 120, 160)), tmp_path / "seven.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"not images \(notes.txt\); move them out"):
        read_images([tmp_path])


def test_ink_threshold_makes_the_box() -> None:
    assert 0 < INK < 0.5  # anti-aliased edges count as ink, faint paper noise does not
