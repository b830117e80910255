"""What an interpolation needs at its two ends, checked without torch: the CLI asks before
the model loads, and `write_interpolation` asks again for Python callers."""

from __future__ import annotations

from vae_cli.errors import UserError


def require_two_images(count: int) -> None:
    if count != 2:
        raise UserError(
            f"--images: an interpolation runs between two images, and these hold {count}"
        )


def require_both_ends_or_neither(from_index: int | None, to_index: int | None) -> None:
    if (from_index is None) != (to_index is None):
        raise UserError("give both --from-index and --to-index, or neither (then --seed picks)")
