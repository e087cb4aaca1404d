"""The whole-image float pipeline :func:`tinysr.image.enlarge.enlarge` replaces, kept as a reference:
``enlarge`` must equal ``quantize(super_resolve(...))`` bit for bit (``tests/test_enlarge_tiled.py``)."""

from __future__ import annotations

import numpy as np

from tinysr.image.inference import DEFAULT_TILE, restore_piece, restore_tiles
from tinysr.nn.model import SRCNN
from tinysr.protocol.color import rgb2ycbcr, ycbcr2rgb
from tinysr.protocol.imresize import imresize


def super_resolve(img: np.ndarray, kind: str, model: SRCNN, scale: int, tile: int | None = DEFAULT_TILE):
    """Enlarge ``img`` ``(H, W, C)`` on [0, 1] by ``scale``, holding whole float planes.

    Returns ``(srcnn, bicubic)``, both ``(s*H, s*W, C)`` float on [0, 1] (clipped). The network
    runs in the tiles :func:`tinysr.image.enlarge.enlarge` takes (``tile``; ``None`` or 0: one piece),
    whatever the network. The library's :func:`tinysr.image.enlarge.enlarge` equals
    :func:`tinysr.image.enlarge.quantize` of this bit for bit, in bounded memory.
    """
    colour = kind in ("RGB", "RGBA")
    nc = 3 if colour else 1
    base = rgb2ycbcr(img[:, :, :3]) if colour else img[:, :, :1]
    up = imresize(base, float(scale))
    if up.ndim == 2:
        up = up[:, :, None]
    sr = up.copy()
    sr[:, :, 0] = restore_tiles(model, up[:, :, 0], tile) if tile else restore_piece(model, up[:, :, 0])
    if colour:
        sr, up = ycbcr2rgb(sr), ycbcr2rgb(up)
    if img.shape[2] > nc:  # alpha
        alpha = imresize(img[:, :, nc], float(scale))
        sr = np.concatenate([sr, alpha[:, :, None]], axis=2)
        up = np.concatenate([up, alpha[:, :, None]], axis=2)
    return np.clip(sr, 0.0, 1.0), np.clip(up, 0.0, 1.0)
