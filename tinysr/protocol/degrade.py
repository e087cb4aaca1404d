"""Compressed low-resolution inputs: the ground truth downscaled, then JPEG-encoded and decoded.

One function makes the low-resolution image for the JPEG protocol, used by the patch maker
(``tinysr prepare`` / ``train.py --degrade``, :mod:`tinysr.protocol.data`) and by the evaluation
(``tinysr evaluate --jpeg Q``, :mod:`tinysr.protocol.evaluation`), so training and scoring see the
same degradation:

1. the uint8 ground truth (RGB ``(H, W, 3)`` or grayscale ``(H, W)``), ``modcrop``-ed to the scale;
2. Matlab-bicubic ``imresize(., 1/s)`` of the uint8 image (as Matlab on uint8: rounded after
   each axis), all channels;
3. Pillow JPEG at quality ``q``, 4:2:0 chroma subsampling for colour (as cameras and the web
   write them), the IJG standard tables scaled by ``q``, baseline; decoded by Pillow.

The result is the uint8 low-resolution image a user would give ``tinysr upscale``.

A degradation spec (``--degrade``) is ``jpeg:Q1-Q2`` (quality drawn uniformly from the integers
``Q1..Q2`` per image and copy), ``jpeg:Q`` (one quality), optionally followed by ``xN``: ``N``
copies of every image, each with its own draw (``jpeg:30-60x2``).
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from tinysr.protocol.imresize import imresize
from tinysr.protocol.metrics import modcrop

__all__ = ["parse_degrade", "jpeg_low_res", "jpeg_bytes", "draw_qualities"]

_SPEC = re.compile(r"jpeg:(\d{1,3})(?:-(\d{1,3}))?(?:x(\d{1,2}))?")
MAX_COPIES = 16


def parse_degrade(spec: str) -> tuple[int, int, int]:
    """``"jpeg:Q1-Q2[xN]"`` -> ``(q_lo, q_hi, copies)``; ``ValueError`` in one line for anything else."""
    m = _SPEC.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(f"--degrade must be jpeg:Q1-Q2 (optionally xN copies, e.g. jpeg:30-60x2), got {spec!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    copies = int(m.group(3)) if m.group(3) else 1
    if not (1 <= lo <= hi <= 100):
        raise ValueError(f"--degrade {spec}: JPEG qualities must satisfy 1 <= Q1 <= Q2 <= 100")
    if not 1 <= copies <= MAX_COPIES:
        raise ValueError(f"--degrade {spec}: copies must be 1..{MAX_COPIES}")
    return lo, hi, copies


def draw_qualities(spec: str, seed: int, n_images: int) -> np.ndarray:
    """The JPEG quality of every copy of every image, ``(copies, n_images)`` int, drawn uniformly
    from ``Q1..Q2`` by ``numpy.random.default_rng(seed)`` (the same for the same spec and seed)."""
    lo, hi, copies = parse_degrade(spec)
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(copies, n_images))


def jpeg_low_res(img_uint8: np.ndarray, scale: int, quality: int) -> np.ndarray:
    """The JPEG-compressed low-resolution version of a ground-truth image (steps 1-3 of the module).

    Args:
        img_uint8: ``(H, W, 3)`` RGB or ``(H, W)`` grayscale uint8 on 0..255, the ground truth.
        scale: integer downscaling factor ``s`` >= 1.
        quality: Pillow/IJG JPEG quality, 1..100.

    Returns:
        The decoded image, uint8 of shape ``(H' / s, W' / s[, 3])`` with ``H' = H - H % s``
        (and the same for ``W``): what a JPEG of the downscaled ground truth decodes to.
    """
    a = np.asarray(img_uint8)
    with Image.open(io.BytesIO(jpeg_bytes(a, scale, quality))) as im:
        out = np.asarray(im.convert("RGB" if a.ndim == 3 else "L"), dtype=np.uint8)
    return out.copy()


def jpeg_bytes(img_uint8: np.ndarray, scale: int, quality: int) -> bytes:
    """The JPEG file (bytes) that :func:`jpeg_low_res` decodes: steps 1-3 of the module without the decoding."""
    a = np.asarray(img_uint8)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"jpeg_low_res expects an (H, W) or (H, W, 3) uint8 image, got {a.shape} {a.dtype}")
    if isinstance(quality, bool) or int(quality) != quality or not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    low = imresize(modcrop(a, scale), 1.0 / scale)
    buf = io.BytesIO()
    Image.fromarray(low).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    return buf.getvalue()
