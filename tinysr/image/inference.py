"""Running a trained SRCNN on whole images, in tiles when they are large.

On the GPU, :func:`restore_y`'s default tile (``"auto"``) comes from the device's free memory
(:func:`device_tile`), not the CPU's 512: a 1080p frame is one piece, and a 9-1-5 network runs
the fused kernels (:func:`tinysr.ops.cuda_kernels.fused_predict`, about 27 floats of device memory
per pixel), in the model's dtype until the result reaches the host.

Tiles bound the memory of networks that run layer by layer (9-5-5, and any network on the GPU),
whose activations are whole-image arrays. A 9-1-5 network on the CPU runs
:func:`tinysr.ops.fused_predict.predict_fused` (through the model's engine), which streams the image through the cache in row
bands in bounded memory, so :func:`restore_y` runs it in one piece: tiles would only add their
halos' work (4% at 1920x1080 with 512-pixel tiles).

Tiling is exact: each tile is cut with a halo of ``model.shrink`` pixels (6 for 9-1-5,
8 for 9-5-5) wherever it has neighbours, and the network runs on it with its per-layer
replicate padding. Outputs farther than the halo from a cut are computed from the same
values as in one piece, and at the true image edges the tile's replicate padding is the
image's own, so the stitched result equals the untiled one (to float rounding of the GEMM).
"""

from __future__ import annotations

import math

import numpy as np

from tinysr.nn.model import SRCNN
from tinysr.ops.backend import to_device, to_numpy

# CPU tile edge (pixels) for restore_y's layer-by-layer networks and infer.py's pipeline: fewer tile
# borders (halos recomputed) than 256 for tens of MB more memory; measurements in bench/RESULTS.md.
DEFAULT_TILE = 512
AUTO = "auto"  # restore_y's default tile: DEFAULT_TILE on the CPU, device_tile() on the GPU
# Share of the device's free memory one network call may plan to use (the rest is headroom for
# CuPy's pool, the transfers and other work on the device).
DEVICE_MEMORY_FRACTION = 0.5
MIN_DEVICE_TILE = 64


class NonFiniteOutput(ValueError):
    """The network gave NaN or Inf: weights whose values overflow the model's float type."""


def device_bytes_per_pixel(model: SRCNN, h: int, w: int) -> int:
    """Device bytes per pixel that one network call on an ``h x w`` piece may hold at once.

    The fused kernels (:meth:`SRCNN.gpu_fused`): the input, the last layer's ``kh*kw`` product
    planes and the output. Layer by layer, a bound: the input and its padded copy, each layer's
    unfolded input (``C*kh*kw``) and output with its ReLU (``2*O``), the last layer's output-side
    products (``O*kh*kw``), as if all were alive together.
    """
    if model.gpu_fused(h, w):
        return model.engine.gpu_fused_bytes_per_pixel(model)
    shapes = [layer.weight.shape for layer in model.layers]
    o, _, kh, kw = shapes[-1]
    floats = 2 + sum(c * kh_ * kw_ + 2 * o_ for o_, c, kh_, kw_ in shapes) + o * kh * kw
    return floats * np.dtype(model.dtype).itemsize


def _rows_per_pixel(model: SRCNN) -> int:
    # Elements per pixel of the largest array a call indexes: the fused kernels' product planes, or a
    # bound on the layers after the first (the first reads one channel): widest input times largest kernel.
    if model.gpu_fused(1, 1):
        _, _, kh, kw = model.layers[-1].weight.shape
        return kh * kw
    later = [layer.weight.shape for layer in model.layers[1:]]
    return max(c for _, c, _, _ in later) * max(kh * kw for _, _, kh, kw in later)


def device_tile(model: SRCNN, h: int, w: int) -> int | None:
    """Tile edge for an ``h x w`` image on the model's device: ``None`` (one piece) when the whole
    image fits ``DEVICE_MEMORY_FRACTION`` of the device's free memory and half its kernels' index
    limit (both from the model's primitives), else the largest edge whose haloed tile does (at least
    ``MIN_DEVICE_TILE``)."""
    prim = model.primitives
    budget = prim.free_bytes(model.layers[0].weight) * DEVICE_MEMORY_FRACTION
    bpp, rows = device_bytes_per_pixel(model, 1, 1), _rows_per_pixel(model)
    limit = prim.index_limit()
    index = (limit if limit is not None else 1 << 62) // 2
    if h * w * bpp <= budget and h * w * rows <= index:
        return None
    edge = min(math.isqrt(int(budget // bpp)), math.isqrt(index // rows)) - 2 * model.shrink
    return max(edge, MIN_DEVICE_TILE)


def choose_tile(model: SRCNN, h: int, w: int) -> int | None:
    """The ``"auto"`` tile for an ``h x w`` image: :data:`DEFAULT_TILE` on the CPU (whose memory the
    primitives do not budget), :func:`device_tile` on the GPU."""
    if model.primitives.free_bytes(model.layers[0].weight) is None:
        return DEFAULT_TILE
    return device_tile(model, h, w)


def tile_spans(length: int, tile: int, halo: int):
    """Yield ``(out_start, out_stop, in_start, in_stop)`` covering ``0..length`` in tiles of ``tile``.

    The input span adds ``halo`` on each side, clamped to the image.
    """
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        yield start, stop, max(start - halo, 0), min(stop + halo, length)


def restore_piece(model: SRCNN, y: np.ndarray, dtype=np.float64) -> np.ndarray:
    """One network call on a host ``(h, w)`` Y piece on [0, 1] -> ``(h, w)`` host array of
    ``dtype`` (float64 unless asked otherwise), unclipped.

    Replicate padding applies at the piece's own borders; the piece is cast to the model's dtype
    and moved to its device, as :func:`restore_y` does for each of its tiles; the result comes
    back in the model's dtype and is converted on the host. It runs through the model's engine
    (:meth:`~tinysr.ops.engine.Engine.predict`). :class:`NonFiniteOutput` (a ``ValueError``) when
    the result holds NaN or Inf (weights that overflow), never an image made of them.
    """
    piece = to_device(np.ascontiguousarray(y, dtype=model.dtype), model.xp)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, in one line
        out = to_numpy(model.engine.predict(model, piece)).astype(dtype)
    if not np.isfinite(out).all():
        raise NonFiniteOutput("the network's output is not finite (NaN or Inf): its weights overflow "
                              f"{np.dtype(model.dtype).name} on this image; use other weights")
    return out


def restore_y(model: SRCNN, y: np.ndarray, tile: int | str | None = AUTO, dtype=np.float64) -> np.ndarray:
    """Run ``model`` on one upscaled Y image.

    Args:
        model: an SRCNN on any device.
        y: ``(H, W)`` host array, Y on [0, 1] (the bicubic-upscaled image).
        tile: tile edge in pixels (``None`` or 0: one piece) for a network run layer by layer,
            or on the GPU, whose memory grows with ``tile**2``; ``"auto"`` (the default):
            :data:`DEFAULT_TILE` on the CPU, on the GPU the largest that the free device memory
            allows (:func:`device_tile`; one piece for a 1080p frame). A 9-1-5 network on the
            CPU streams in bounded memory and runs in one piece whatever ``tile`` (see the module).
        dtype: the result's dtype; float64 by default, ``np.float32`` keeps a float32 model's
            numbers without the host conversion.

    Returns:
        ``(H, W)`` host array of ``dtype`` on the [0, 1] scale, unclipped.
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"restore_y expects an (H, W) Y image, got shape {y.shape}")
    if isinstance(tile, str):
        if tile != AUTO:
            raise ValueError(f"tile must be a number of pixels, None or {AUTO!r}, got {tile!r}")
        tile = choose_tile(model, *y.shape)
    if not tile or model.engine.streams(model):
        return restore_piece(model, y, dtype)
    return restore_tiles(model, y, tile, dtype)


def restore_tiles(model: SRCNN, y: np.ndarray, tile: int, dtype=np.float64) -> np.ndarray:
    """``model`` on a host ``(H, W)`` Y image, tile by tile (``tile`` edge, halo ``model.shrink``),
    stitched into an ``(H, W)`` array of ``dtype`` (float64 by default): the tiles
    :func:`tinysr.image.enlarge.enlarge` takes, for any network (an image within one tile is one piece)."""
    h, w = y.shape
    halo = model.shrink
    out = np.empty((h, w), dtype=dtype)
    for r0, r1, ir0, ir1 in tile_spans(h, tile, halo):
        for c0, c1, ic0, ic1 in tile_spans(w, tile, halo):
            res = restore_piece(model, y[ir0:ir1, ic0:ic1], dtype)
            out[r0:r1, c0:c1] = res[r0 - ir0:r1 - ir0, c0 - ic0:c1 - ic0]
    return out
