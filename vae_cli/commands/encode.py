"""`vae encode`: each image's posterior, mu and log sigma² of every stochastic layer, for work
downstream (a classifier, a t-SNE plot), as .npy or .csv that numpy reads in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vae_cli.commands.load import Loaded
from vae_cli.errors import UserError
from vae_cli.files import write_atomically

BATCH = 1000


@torch.no_grad()
def encode_images(loaded: Loaded, x: torch.Tensor) -> dict[str, np.ndarray]:
    """mu and logvar of every layer's posterior (the others at their means), by column name:
    mu_z, logvar_z (one layer) or mu_z1, logvar_z1, mu_z2, ... each (N, D_l)."""
    names = loaded.model.layer_names()
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(x), BATCH):
        layers = loaded.model.encode_layers(x[start : start + BATCH])
        for name, (mu, logvar) in zip(names, layers, strict=True):
            parts.setdefault(f"mu_{name}", []).append(mu.cpu())
            parts.setdefault(f"logvar_{name}", []).append(logvar.cpu())
    return {key: torch.cat(values).numpy() for key, values in parts.items()}


def codes_table(identity: tuple[str, np.ndarray], codes: dict[str, np.ndarray]) -> np.ndarray:
    """One structured array: the identity column (each image's file name, or its label), then
    each code as a (D,) field; np.load reads it back without pickling."""
    key, values = identity
    fields = [(key, values.dtype)] + [(name, "<f4", (array.shape[1],))
                                      for name, array in codes.items()]  # fmt: skip
    table = np.zeros(len(values), dtype=fields)
    table[key] = values
    for name, array in codes.items():
        table[name] = array
    return table


def write_codes(table: np.ndarray, out: Path) -> Path:
    """As .npy (the structured array) or .csv (one column per dimension: mu_z1_0, ...)."""
    import io

    buffer = io.BytesIO()
    if out.suffix == ".npy":
        np.save(buffer, table, allow_pickle=False)
    elif out.suffix == ".csv":
        import csv

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")  # a file name with a comma is quoted
        columns = []
        for name in table.dtype.names:
            shape = table.dtype[name].shape
            columns += [name] if not shape else [f"{name}_{i}" for i in range(shape[0])]
        writer.writerow(columns)
        for row in table:
            cells = []
            for name in table.dtype.names:
                value = row[name]
                cells += [str(value)] if np.ndim(value) == 0 else [f"{v:.7g}" for v in value]
            writer.writerow(cells)
        buffer.write(text.getvalue().encode())
    else:
        raise UserError(f"--out {out}: the codes go to a .npy or .csv file")
    try:
        write_atomically(out, buffer.getvalue())
    except OSError as error:
        raise UserError(f"--out {out}: cannot write ({error.strerror or error})") from None
    return out


def codes_for(
    loaded: Loaded,
    data_dir: Path,
    images: list[Path] | None,
    *,
    invert: str,
    fit: str,
    split: str,
) -> tuple[np.ndarray, str]:
    """The codes table of the user's images (named by file) or of a split of the dataset
    (by label), and the line that says how the user's images were read ("" for the dataset)."""
    if images:
        from vae_cli.commands.images import user_pixels

        read = user_pixels(loaded, images, invert=invert, fit=fit)
        width = max(len(name) for name in read.names)
        identity = ("name", np.array(read.names, dtype=f"<U{width}"))
        return codes_table(identity, encode_images(loaded, read.pixels)), read.said
    from vae_cli.commands.load import dataset_images

    x, labels = dataset_images(loaded, data_dir, split)
    return codes_table(("label", labels.numpy()), encode_images(loaded, x)), ""
