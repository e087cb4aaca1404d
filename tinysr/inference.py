"""Running a trained SRCNN on whole images, in tiles when they are large.

Tiles bound the memory of networks that run layer by layer (9-5-5, and any network on the GPU),
whose activations are whole-image arrays. A 9-1-5 network on the CPU runs
:func:`tinysr.fused_predict.predict_fused`, which streams the image through the cache in row
bands in bounded memory, so :func:`restore_y` runs it in one piece: tiles would only add their
halos' work (4% at 1920x1080 with 512-pixel tiles).

Tiling is exact: each tile is cut with a halo of ``model.shrink`` pixels (6 for 9-1-5,
8 for 9-5-5) wherever it has neighbours, and the network runs on it with its per-layer
replicate padding. Outputs farther than the halo from a cut are computed from the same
values as in one piece, and at the true image edges the tile's replicate padding is the
image's own, so the stitched result equals the untiled one (to float rounding of the GEMM).
"""

from __future__ import annotations

import numpy as np

from . import fused_predict
from .backend import to_device, to_numpy
from .model import SRCNN

# Tile edge for restore_y (networks run layer by layer) and infer.py (its whole pipeline, tile by
# tile). Chosen for 9-1-5 on NumPy when restore_y still tiled it: 512 against 256, 1920x1080, 2
# threads (2026-11-24, 9 interleaved rounds): 264 vs 282 ms (the 6-pixel halo is recomputed on
# fewer tile borders), host peak 51 vs 27 MB at 1920x1080 and 98 vs 75 MB at 3840x2160.
DEFAULT_TILE = 512


def tile_spans(length: int, tile: int, halo: int):
    """Yield ``(out_start, out_stop, in_start, in_stop)`` covering ``0..length`` in tiles of ``tile``.

    The input span adds ``halo`` on each side, clamped to the image.
    """
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        yield start, stop, max(start - halo, 0), min(stop + halo, length)


def restore_piece(model: SRCNN, y: np.ndarray, workers: int | None = None) -> np.ndarray:
    """One network call on a host ``(h, w)`` Y piece on [0, 1] -> ``(h, w)`` float64 host, unclipped.

    Replicate padding applies at the piece's own borders; the piece is cast to the model's dtype
    and moved to its device, as :func:`restore_y` does for each of its tiles. ``workers``: CPU
    threads for :meth:`SRCNN.predict` (``None``: its default).
    """
    piece = to_device(np.ascontiguousarray(y, dtype=model.dtype), model.xp)
    return to_numpy(model.predict(piece, workers=workers)).astype(np.float64)


def restore_y(model: SRCNN, y: np.ndarray, tile: int | None = DEFAULT_TILE, workers: int | None = None) -> np.ndarray:
    """Run ``model`` on one upscaled Y image.

    Args:
        model: an SRCNN on any device.
        y: ``(H, W)`` host array, Y on [0, 1] (the bicubic-upscaled image).
        tile: tile edge in pixels (``None`` or 0: one piece) for a network run layer by layer,
            whose memory grows with ``tile**2``. A 9-1-5 network on the CPU streams in bounded
            memory and runs in one piece whatever ``tile`` (see the module).
        workers: CPU threads for each network call, the image or a tile (``None``:
            :meth:`SRCNN.predict`'s default); no effect on the result.

    Returns:
        ``(H, W)`` float64 host array on the [0, 1] scale, unclipped.
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"restore_y expects an (H, W) Y image, got shape {y.shape}")
    if not tile or fused_predict.supports(model):
        return restore_piece(model, y, workers)
    return restore_tiles(model, y, tile, workers)


def restore_tiles(model: SRCNN, y: np.ndarray, tile: int, workers: int | None = None) -> np.ndarray:
    """``model`` on a host ``(H, W)`` Y image, tile by tile (``tile`` edge, halo ``model.shrink``),
    stitched into an ``(H, W)`` float64 array: the tiles :func:`tinysr.enlarge.enlarge` takes, for
    any network (an image within one tile is one piece)."""
    h, w = y.shape
    halo = model.shrink
    out = np.empty((h, w), dtype=np.float64)
    for r0, r1, ir0, ir1 in tile_spans(h, tile, halo):
        for c0, c1, ic0, ic1 in tile_spans(w, tile, halo):
            res = restore_piece(model, y[ir0:ir1, ic0:ic1], workers)
            out[r0:r1, c0:c1] = res[r0 - ir0:r1 - ir0, c0 - ic0:c1 - ic0]
    return out
