"""What an input needs: its JPEG quality, read from its quantisation tables, and the model for it.

A JPEG stores the quantisation tables its encoder used. The IJG library (libjpeg, which Pillow,
most cameras' software and the web use) scales two standard tables (Annex K of the JPEG
standard) by the quality ``q`` (1..100): ``scale = 5000 / q`` below 50, else ``200 - 2q``, each
entry ``(t * scale + 50) // 100`` clamped to 1..255. :func:`estimate_quality` finds the ``q``
whose tables are nearest (in log ratio, so coarse and fine entries count alike) to the file's:
exact for IJG tables, the nearest band for others (a camera's or Photoshop's own tables).

Denoise levels (``--denoise``, ``tinysr.upscale(..., denoise=...)``) name the bundled models:
``none`` is the clean 9-1-5 (``xS.npz``), ``low``, ``medium`` and ``high`` the
compression-aware ones (``denoise-LEVEL_xS.npz``, trained on T91 JPEG'd in the quality ranges
of :data:`TRAINED_ON`; ``tinysr/weights/denoise.md``). ``auto`` picks by the input: a JPEG by
its estimated quality (:func:`level_for_quality`), anything else (PNG, BMP, TIFF, lossless
WebP, a NumPy array) ``none``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tinysr.weights import BUNDLED_DIR, bundled_path

__all__ = ["LEVELS", "DENOISE_CHOICES", "estimate_quality", "jpeg_quality", "probe_file", "file_jpeg_quality",
           "level_for_quality", "choose_level", "describe", "denoise_weights"]

LEVELS = ("none", "low", "medium", "high")
DENOISE_CHOICES = ("auto", *LEVELS)
# The quality ranges (--degrade jpeg:Q1-Q2) each compression-aware model was trained on.
TRAINED_ON = {"low": (75, 97), "medium": (50, 85), "high": (15, 60)}
# auto: estimated quality >= the bound -> that level (checked in this order); below all: high.
AUTO_BOUNDS = (("none", 98), ("low", 80), ("medium", 55))

# Annex K tables, natural (row-major) order, as Pillow's ``im.quantization`` gives them.
STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
STD_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32)], dtype=np.int64)


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """The IJG luminance and chrominance tables (64 entries each, natural order) for ``quality`` 1..100."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return tuple(np.clip((t * scale + 50) // 100, 1, 255) for t in (STD_LUMA, STD_CHROMA))


_LOG_IJG = np.array([[np.log(t) for t in ijg_tables(q)] for q in range(1, 101)])  # (100, 2, 64)


def estimate_quality(quantization: dict) -> tuple[int, bool]:
    """The IJG quality (1..100) whose tables are nearest to ``quantization`` (Pillow's
    ``im.quantization``: table id -> 64 entries, natural order; 0 luminance, 1 chrominance), and
    whether they match exactly. Only tables 0 and 1 are compared (1 only when present); entries
    of 16-bit tables are used as they are. ``ValueError`` for no usable table 0."""
    tables = []
    for key in (0, 1):
        t = quantization.get(key) if isinstance(quantization, dict) else None
        if t is None:
            break
        a = np.asarray(list(t), dtype=np.float64)
        if a.shape != (64,) or not np.all(np.isfinite(a)):
            raise ValueError("a JPEG quantisation table must have 64 entries")
        tables.append(np.maximum(a, 1.0))
    if not tables:
        raise ValueError("no luminance quantisation table")
    logs = np.log(np.stack(tables))  # (k, 64)
    err = np.abs(_LOG_IJG[:, : len(tables)] - logs).sum(axis=(1, 2))  # (100,)
    best = int(np.argmin(err))  # the lowest quality among ties (none occur for IJG tables)
    return best + 1, bool(err[best] < 1e-9)


def jpeg_quality(im: Image.Image) -> int | None:
    """The estimated IJG quality of a Pillow image opened from a JPEG (its tables are read from the
    header, no decoding needed), or ``None`` for any other image (not a JPEG, or made in memory)."""
    tables = getattr(im, "quantization", None)
    if getattr(im, "format", None) != "JPEG" or not tables:
        return None
    try:
        return estimate_quality(tables)[0]
    except ValueError:
        return None


def probe_file(path: str | os.PathLike) -> tuple[str | None, int | None]:
    """The file's format as Pillow names it (``JPEG``, ``PNG``...) and :func:`jpeg_quality`, from its
    header alone; ``(None, None)`` when it cannot be opened (the reader that decodes it then says why)."""
    try:
        with Image.open(Path(path)) as im:
            return im.format, jpeg_quality(im)
    except Exception:  # unreadable: reported in one line by the enlargement's reader
        return None, None


def file_jpeg_quality(path: str | os.PathLike) -> int | None:
    """:func:`jpeg_quality` of the file at ``path`` (header only); ``None`` when not a JPEG or unreadable."""
    return probe_file(path)[1]


def level_for_quality(quality: int | None) -> str:
    """``auto``'s choice: ``none`` for a non-JPEG (``None``) and qualities >= 98, then ``low``
    (>= 80), ``medium`` (>= 55), ``high`` below (:data:`AUTO_BOUNDS`)."""
    if quality is None:
        return "none"
    for level, bound in AUTO_BOUNDS:
        if quality >= bound:
            return level
    return "high"


def choose_level(denoise: str, quality: int | None) -> str:
    """The level used for ``denoise`` (one of :data:`DENOISE_CHOICES`) on an input of ``quality``
    (``None``: not a JPEG). ``ValueError`` for an unknown name."""
    if denoise not in DENOISE_CHOICES:
        raise ValueError(f"denoise must be one of {', '.join(DENOISE_CHOICES)}, got {denoise!r}")
    return level_for_quality(quality) if denoise == "auto" else denoise


def describe(fmt: str | None, quality: int | None, level: str) -> str:
    """What was detected and used, for an image's line: ``JPEG q~78: medium``, ``PNG: none``."""
    what = f"JPEG q~{quality}" if quality is not None else (fmt or "array")
    return f"{what}: {level}"


def file_level(path: str | os.PathLike, denoise: str) -> tuple[str, str]:
    """The level ``denoise`` picks for the image file at ``path`` (its JPEG quality read from the
    header) and the words for its line (:func:`describe`): the one choice the command, the page
    and the API make."""
    fmt, quality = probe_file(path)
    level = choose_level(denoise, quality)
    return level, describe(fmt, quality, level)


def denoise_weights(scale: int, level: str) -> Path:
    """The bundled weights of ``level`` at ``scale``: ``xS.npz`` for ``none``, else
    ``denoise-LEVEL_xS.npz``; ``ValueError`` when none ship for them."""
    if level not in LEVELS:
        raise ValueError(f"denoise level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "none":
        return bundled_path(scale)
    path = BUNDLED_DIR / f"denoise-{level}_x{scale}.npz"
    if not path.is_file():
        raise ValueError(f"no bundled denoise-{level} weights for scale {scale}; use --denoise none or --weights")
    return path
