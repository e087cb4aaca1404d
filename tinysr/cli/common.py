"""Pieces shared by tinysr's command-line tools (evaluate, infer, train, data)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinysr.image.inference import AUTO, DEFAULT_TILE
from tinysr.ops.backend import BACKENDS


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line on stderr, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a negative one is reported as such, not as "must be >= 0")."""
    return _int_at_least(text, 1)


def tile_size(text: str):
    """argparse type: ``auto`` or an integer >= 0 (0: no tiles)."""
    return AUTO if text == AUTO else non_negative_int(text)


def add_backend_and_tile(p: argparse.ArgumentParser) -> None:
    """``--backend {numpy,cupy,auto}`` and ``--tile N`` as evaluate and infer take them."""
    p.add_argument("--backend", choices=BACKENDS, default="numpy", help="array backend (default numpy)")
    p.add_argument("--tile", type=tile_size, default=AUTO,
                   help=f"tile edge in pixels (default auto: {DEFAULT_TILE} on the CPU, on the GPU the largest "
                        "its free memory allows, the whole image for 1080p; 0: none)")


def write_png(path: Path, img: np.ndarray, *, overwrite: bool = True) -> None:
    """Write a uint8 ``(H, W)`` / ``(H, W, C)`` or uint16 ``(H, W)`` image as PNG, atomically.

    ``overwrite=False``: the name is taken only if nothing is there (``FileExistsError``
    otherwise, even for a file another process created a moment ago).
    The PNG is encoded straight into the temporary file (no in-memory copy of the encoded bytes);
    Pillow's own copy of the pixels (4 bytes per pixel for RGB and LA; none for L, RGBA and
    16-bit, whose arrays it maps) is the only image-sized extra.
    """
    from tinysr.image.io import write_image  # noqa: PLC0415

    write_image(path, img, fmt="png", overwrite=overwrite)


def resolve_backend_saying(name: str, prog: str, quiet: bool = False):
    """The array module for ``--backend name``; with ``auto``, one line on stderr saying which it
    chose and why (unless ``quiet``). :class:`tinysr.ops.backend.BackendError` as ``resolve_backend``."""
    import sys  # noqa: PLC0415

    from tinysr.ops.backend import auto_choice, resolve_backend  # noqa: PLC0415

    if name != "auto":
        return resolve_backend(name)
    xp, line = auto_choice()
    if not quiet:
        print(f"{prog}: {line}", file=sys.stderr)
    return xp
