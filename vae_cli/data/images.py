"""A user's own images as the model reads MNIST: image files (anything Pillow opens), folders
of them, .npy arrays and IDX files, made grey, white ink on black, and fitted into 28x28 the
way MNIST's digits were (LeCun et al.: the ink's bounding box scaled into 20x20, keeping its
aspect, then centred by its centre of mass). Every command's --images means this.

Untrusted files stay untrusted: Pillow's pixel limit is kept (a decompression bomb is refused,
never decoded), .npy files are read with allow_pickle=False, and every problem is one
UserError naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vae_cli.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

SIDE, BOX = 28, 20  # MNIST's canvas, and the box its digits are scaled into
INK = 0.1  # a pixel at least this bright (on black) is ink, for the bounding box
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
REFUSED_MODES = {
    "P": "a palette image",
    "PA": "a palette image",
    "I;16": "a 16-bit image",
    "I;16B": "a 16-bit image",
    "I;16L": "a 16-bit image",
    "I": "a 32-bit integer image",
    "F": "a floating-point image",
}


@dataclass
class UserImages:
    """Images as the model reads them, (N, 784) in [0, 1], with each one's name (its file, or
    FILE[i] for an array's item), the input as given shrunk to 28x28 for pictures, and one
    line saying what was done to them."""

    pixels: torch.Tensor
    names: list[str]
    shown: torch.Tensor  # (N, 784): each input grey, at 28x28, before inversion and fitting
    said: str


def check_image_options(paths: list[Path], invert: str, fit: str) -> None:
    """The cheap checks, before torch loads: the choices, and that every path exists."""
    if invert not in ("auto", "yes", "no"):
        raise UserError(f"--invert: expected one of auto, yes, no, got {invert!r}")
    if fit not in ("mnist", "resize"):
        raise UserError(f"--fit: expected one of mnist, resize, got {fit!r}")
    for path in paths:
        if not path.exists():
            raise UserError(f"--images {path}: no such file or folder")


def count_images(paths: list[Path]) -> int | None:
    """How many images the paths hold, from names and headers alone (nothing decoded, no
    torch), or None where only reading them can tell (an unreadable array: reading says why)."""
    count = 0
    for path in paths:
        if path.is_dir():
            count += len(image_files(path))
        elif path.suffix.lower() == ".npy":
            import numpy as np

            try:
                shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            except (ValueError, OSError, EOFError):
                return None
            if len(shape) not in (2, 3):  # reading names the shape it expected
                return None
            count += shape[0]
        elif is_idx(path):
            with path.open("rb") as handle:
                header = handle.read(8)
            if len(header) < 8:  # truncated: reading says so
                return None
            count += int.from_bytes(header[4:], "big")
        else:
            count += 1
    return count


def read_images(paths: list[Path], *, invert: str = "auto", fit: str = "mnist") -> UserImages:
    """Every image the paths hold, in order (a folder's in sorted order), preprocessed."""
    import numpy as np
    import torch

    check_image_options(paths, invert, fit)
    greys, names = [], []
    for path in paths:
        for name, grey in read_path(path):
            greys.append(grey)
            names.append(name)
    inverted = fitted = 0
    pixels, shown = [], []
    for grey in greys:
        shown.append(resized(grey))
        if invert == "yes" or (invert == "auto" and light_background(grey)):
            grey, inverted = 1.0 - grey, inverted + 1
        if fit == "mnist":
            grey, fitted = mnist_fit(grey), fitted + 1
        else:
            grey = resized(grey)
        pixels.append(grey)
    said = (
        f"read {len(pixels)} image{'s' if len(pixels) != 1 else ''}: grey, "
        f"{inverted} inverted (light background), "
        + (
            f"{fitted} fitted as MNIST's digits (ink box into 20x20, centred by mass in 28x28)"
            if fit == "mnist"
            else "resized to 28x28"
        )
    )
    as_rows = [torch.from_numpy(np.ascontiguousarray(p)).float().reshape(-1) for p in pixels]
    shown_rows = [torch.from_numpy(np.ascontiguousarray(s)).float().reshape(-1) for s in shown]
    return UserImages(torch.stack(as_rows), names, torch.stack(shown_rows), said)


def read_path(path: Path) -> list[tuple[str, np.ndarray]]:
    """(name, grey image in [0, 1] as a float array (H, W)) of each image a path holds."""
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        raise UserError(f"--images {path}: no such file or folder")
    if path.suffix.lower() == ".npy":
        return read_array(path)
    if is_idx(path):
        return read_idx_images(path)
    return [(str(path), read_picture(path))]


def read_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    """Every image file of a folder, by name."""
    return [(str(p), read_picture(p)) for p in image_files(folder)]


def image_files(folder: Path) -> list[Path]:
    """A folder's image files, sorted by name; a folder holding other files is refused, with
    their names (a stray file is more often a mistake than something to skip)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        raise UserError(f"--images {folder}: no images in this folder (PNG, JPEG, ...)")
    if others:
        listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(
            f"--images {folder}: holds files that are not images ({listed}); move them out, "
            "or give the image files themselves"
        )
    return images


def read_picture(path: Path) -> np.ndarray:
    """An image file as grey values in [0, 1]: RGB averaged as Pillow's L mode does, an alpha
    channel composited on white (a transparent canvas reads as paper)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise UserError(f"--images {path}: an empty file, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                if mode in REFUSED_MODES:
                    raise UserError(
                        f"--images {path}: {REFUSED_MODES[mode]}, which is not read; save it "
                        "as 8-bit greyscale or RGB"
                    )
                if mode in ("RGBA", "LA"):
                    paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(paper, image.convert("RGBA"))
                grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"--images {path}: more pixels than Pillow's limit ({Image.MAX_IMAGE_PIXELS:,}); "
            "refused unread, as a decompression bomb would be"
        ) from None
    except UnidentifiedImageError:
        raise UserError(f"--images {path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserError(f"--images {path}: a damaged image ({reason})") from None
    return grey


def read_array(path: Path) -> list[tuple[str, np.ndarray]]:
    """A .npy array of images, (N, 28, 28) or (N, 784), uint8 or floats in [0, 1]; never
    unpickled."""
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise UserError(
                f"--images {path}: holds Python objects, which are never unpickled; save "
                "the images as a numeric array"
            ) from None
        raise UserError(f"--images {path}: not a readable .npy file ({error})") from None
    except (OSError, EOFError) as error:
        raise UserError(f"--images {path}: not a readable .npy file ({error})") from None
    if array.ndim == 2 and array.shape[1] == SIDE * SIDE:
        array = array.reshape(-1, SIDE, SIDE)
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE) or not len(array):
        raise UserError(
            f"--images {path}: an array of shape {array.shape}; expected (N, 28, 28) or "
            "(N, 784) images"
        )
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise UserError(f"--images {path}: floats outside [0, 1]; scale them to [0, 1]")
        array = array.astype(np.float32)
    else:
        raise UserError(
            f"--images {path}: a {array.dtype} array; expected uint8 or floats in [0, 1]"
        )
    return [(f"{path}[{index}]", image) for index, image in enumerate(array)]


def is_idx(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == (0x803).to_bytes(4, "big")


def read_idx_images(path: Path) -> list[tuple[str, np.ndarray]]:
    """An IDX images file (MNIST's format), checked as the dataset's are."""
    import numpy as np

    from vae_cli.data.idx import check_idx_file, read_idx

    check_idx_file(path, "images")
    images = read_idx(path, 16, None).numpy().reshape(-1, SIDE, SIDE).astype(np.float32) / 255
    return [(f"{path}[{index}]", image) for index, image in enumerate(images)]


def light_background(grey: np.ndarray) -> bool:
    """Whether an image is dark ink on light paper: its border is brighter than mid-grey."""
    import numpy as np

    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(border.mean()) > 0.5


def resized(grey: np.ndarray, size: int = SIDE) -> np.ndarray:
    """The whole image squeezed into size x size (antialiased)."""
    import numpy as np
    from PIL import Image

    picture = Image.fromarray((grey * 255).round().astype(np.uint8), mode="L")
    return np.asarray(picture.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255.0


def mnist_fit(grey: np.ndarray) -> np.ndarray:
    """White ink on black placed as MNIST's digits are: the ink's bounding box scaled to fit
    20x20 keeping its aspect, then moved so that its centre of mass is the 28x28 canvas's
    centre (LeCun et al.'s description of the dataset). An image without ink is resized."""
    import numpy as np
    from PIL import Image

    ink = np.argwhere(grey >= INK)
    if not len(ink):
        return resized(grey)
    (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
    box = grey[top:bottom, left:right]
    scale = BOX / max(box.shape)
    height, width = (max(1, round(side * scale)) for side in box.shape)
    picture = Image.fromarray((box * 255).round().astype(np.uint8), mode="L")
    small = np.asarray(picture.resize((width, height), Image.LANCZOS), dtype=np.float32) / 255
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    mass = small.sum()
    rows, columns = np.indices(small.shape)
    centre_row = (rows * small).sum() / mass if mass > 0 else (height - 1) / 2
    centre_column = (columns * small).sum() / mass if mass > 0 else (width - 1) / 2
    top = round(float((SIDE - 1) / 2 - centre_row))
    left = round(float((SIDE - 1) / 2 - centre_column))
    top, left = min(max(top, 0), SIDE - height), min(max(left, 0), SIDE - width)
    canvas[top : top + height, left : left + width] = small
    return canvas
