"""Enlarging a whole image tile by tile into a preallocated integer image (bounded memory).

The pipeline and its numbers are those of the whole-image float pipeline (``tests/reference_pipeline.py``) followed by
:func:`quantize`, but nothing image-sized is ever held in floating point. For each output tile
(``tile x tile`` pixels, the tiles of :func:`tinysr.image.inference.restore_y`):

1. the input rows and columns that the tile and its halo (``model.shrink`` output pixels per
   side, clamped to the image) read are cut from the integer input and scaled to [0, 1]
   (``/ 255``, or ``/ 65535`` for 16-bit grayscale);
2. colour inputs go to Matlab BT.601 YCbCr (:func:`tinysr.protocol.color.rgb2ycbcr`), grayscale stays one
   plane; alpha rides along as one more plane;
3. every plane is Matlab-bicubic-upscaled over the haloed tile only
   (:class:`tinysr.protocol.imresize.WindowedImresize`: the whole image's taps and weights, sliced);
4. SRCNN restores Y on the haloed tile (replicate padding) and the halo is dropped;
5. YCbCr goes back to RGB, the tile is clipped to [0, 1], rounded like Matlab's ``uint8``
   (or to 16 bits) and written into the output array.

Every step is elementwise or reads exactly the values the untiled pipeline reads, so the
result equals it bit for bit (``tests/test_enlarge_tiled.py``). How the tiles run (in turn, or
several at once on CPU threads, with the same numbers) is the model's engine's business
(:meth:`tinysr.ops.engine.Engine.over_tiles`). :func:`enlarge_tile` is one tile, given the input
pixels it reads: :func:`enlarge` and the Dask path for images larger than memory
(:func:`tinysr.distributed.dask.enlarge_dask`) both run it. Memory: the
integer input and output images plus one tile's working set per thread (tens of MiB for 9-1-5 at
the default tile 512: ``bench/RESULTS.md``; independent of the image size); ``tile=None``
processes the image in one piece.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinysr.image.inference import AUTO, DEFAULT_TILE, choose_tile, restore_piece, tile_spans
from tinysr.nn.model import SRCNN
from tinysr.protocol.color import rgb2ycbcr, ycbcr2rgb
from tinysr.protocol.imresize import WindowedImresize
from tinysr.protocol.metrics import to_uint8_matlab

# kind -> (channels, integer dtype, full-scale value)
KINDS = {
    "L": (1, np.uint8, 255.0),
    "LA": (2, np.uint8, 255.0),
    "RGB": (3, np.uint8, 255.0),
    "RGBA": (4, np.uint8, 255.0),
    "L16": (1, np.uint16, 65535.0),
}


def array_kind(shape: tuple, dtype) -> str:
    """The kind of an integer image array of ``shape`` ``(H, W)`` or ``(H, W, C)``: uint8 with C = 1,
    2, 3, 4 is ``L``, ``LA``, ``RGB``, ``RGBA``; uint16 grayscale is ``L16``. ValueError otherwise."""
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image arrays must be uint8 (0..255) or uint16 (0..65535, grayscale), got {dtype}; "
                         "convert floats on [0, 1] with (x * 255).round().astype(np.uint8)")
    if len(shape) not in (2, 3):
        raise ValueError(f"image arrays must be (H, W) or (H, W, C), got shape {tuple(shape)}")
    channels = shape[2] if len(shape) == 3 else 1
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"image arrays need 1, 2, 3 or 4 channels (gray, gray+alpha, RGB, RGBA), "
                         f"got {channels} in shape {tuple(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"empty image of shape {tuple(shape)}")
    if dtype == np.uint16:
        if channels != 1:
            raise ValueError(f"uint16 images must be grayscale, (H, W) or (H, W, 1), got shape {tuple(shape)}; "
                             "16-bit colour is not supported")
        return "L16"
    return ("L", "LA", "RGB", "RGBA")[channels - 1]


def quantize(img: np.ndarray, kind: str) -> np.ndarray:
    """Float ``(H, W, C)`` on [0, 1] -> uint8 as Matlab ``uint8(x * 255)`` (half away from zero,
    saturated), or for ``kind == "L16"`` uint16 ``floor(x * 65535 + 0.5)`` clipped to 0..65535."""
    if kind == "L16":
        return np.clip(np.floor(img * 65535.0 + 0.5), 0, 65535).astype(np.uint16)
    return to_uint8_matlab(img)


def _check(pixels: np.ndarray, kind: str, scale: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown image kind {kind!r}: choose one of {', '.join(KINDS)}")
    channels, dtype, _ = KINDS[kind]
    if pixels.ndim != 3 or pixels.shape[2] != channels or pixels.dtype != dtype:
        raise ValueError(f"a {kind} image must be (H, W, {channels}) {np.dtype(dtype).name}, "
                         f"got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"empty image of shape {pixels.shape}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")


def _to_output(planes: np.ndarray, colour: bool, kind: str) -> np.ndarray:
    """YCbCr(+alpha) or gray(+alpha) float tile on [0, 1] -> the output's integer pixels."""
    if colour:
        planes = np.concatenate([ycbcr2rgb(planes[:, :, :3]), planes[:, :, 3:]], axis=2)
    return quantize(np.clip(planes, 0.0, 1.0), kind)


def output_tiles(resizer: WindowedImresize, tile: int, halo: int) -> list[tuple[tuple, tuple]]:
    """The output tiles of an enlargement, row-major: ``(rows, cols)`` pairs of
    :func:`tinysr.image.inference.tile_spans` ``(start, stop, halo_start, halo_stop)`` over the output."""
    oh, ow = resizer.out_hw
    return [(rows, cols) for rows in tile_spans(oh, tile, halo) for cols in tile_spans(ow, tile, halo)]


def input_window(resizer: WindowedImresize, rows: tuple, cols: tuple) -> tuple[slice, slice]:
    """The input rows and columns that the output tile ``(rows, cols)`` (with its halo) reads."""
    ir0, ir1, ic0, ic1 = resizer.input_window(rows[2], rows[3], cols[2], cols[3])
    return slice(ir0, ir1), slice(ic0, ic1)


def enlarge_tile(window: np.ndarray, kind: str, model: SRCNN, resizer: WindowedImresize, rows: tuple,
                 cols: tuple, bicubic: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Steps 1-5 of the module for one output tile.

    Args:
        window: the integer input pixels ``pixels[input_window(resizer, rows, cols)]``, ``(h, w, C)``.
        resizer: the whole image's :class:`~tinysr.protocol.imresize.WindowedImresize`.
        rows, cols: the tile's ``(start, stop, halo_start, halo_stop)`` output rows and columns
            (:func:`output_tiles`).

    Returns:
        ``(sr, bic)``: the tile's ``(stop - start)`` rows by columns of output pixels, ``(r, c, C)`` of
        ``window``'s dtype; ``bic`` the plain bicubic tile, or None unless ``bicubic``.
    """
    (r0, r1, hr0, hr1), (c0, c1, hc0, hc1) = rows, cols
    _, _, full_scale = KINDS[kind]
    colour = kind in ("RGB", "RGBA")
    px = np.asarray(window).astype(np.float64) / full_scale  # (h_in, w_in, C) on [0, 1]
    if colour:
        px = np.concatenate([rgb2ycbcr(px[:, :, :3]), px[:, :, 3:]], axis=2)
    up = resizer.window(px, hr0, hr1, hc0, hc1)  # (hr1-hr0, hc1-hc0, C): Y or YCbCr, alpha
    inner = (slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0))
    restored = up[inner].copy()  # (r1-r0, c1-c0, C); its Y is replaced by the network's
    restored[:, :, 0] = restore_piece(model, up[:, :, 0], np.float64)[inner]
    return _to_output(restored, colour, kind), _to_output(up[inner], colour, kind) if bicubic else None


def enlarge(pixels: np.ndarray, kind: str, model: SRCNN, scale: int, tile: int | None = DEFAULT_TILE,
            bicubic: bool = False,
            on_tile: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Enlarge an integer image by ``scale`` with SRCNN, one output tile at a time.

    Args:
        pixels: ``(H, W, C)`` integer pixels as :func:`tinysr.image.io.read_pixels` gives them:
            uint8 0..255 for kinds ``L``, ``LA``, ``RGB``, ``RGBA`` (C = 1, 2, 3, 4), uint16
            0..65535 for ``L16`` (C = 1). Any size from 1x1 up.
        kind: one of :data:`KINDS`.
        model: an SRCNN on any device; Y is restored on the [0, 1] scale. Its engine
            (:class:`tinysr.ops.engine.Engine`) says how the tiles run: on NumPy, with more than
            one tile, ``engine.workers`` tiles at once. No effect on the result.
        scale: positive integer enlargement factor.
        tile: output tile edge in pixels (``None`` or 0: the whole image in one piece; ``"auto"``:
            :func:`tinysr.image.inference.choose_tile`, 512 on the CPU, on the GPU by its free memory).
        bicubic: also return the plain Matlab-bicubic enlargement (for ``--compare``).
        on_tile: progress callback ``on_tile(done, total)`` (tile counts), called on the calling
            thread: once with ``done = 0`` before the first tile, then after each finished tile
            (tiles in their order; ``done == total`` last). An exception it raises stops the
            work like a signal (queued tiles dropped). No effect on the result.

    Returns:
        ``(sr, bic)``: ``(scale*H, scale*W, C)`` arrays of ``pixels``' dtype; ``bic`` is None
        unless ``bicubic``. Equal bit for bit to ``quantize`` of the whole-image pipeline with the same
        ``tile``.
    """
    pixels = np.asarray(pixels)
    _check(pixels, kind, scale)
    channels, dtype, _ = KINDS[kind]
    resizer = WindowedImresize(pixels.shape[:2], float(scale))
    oh, ow = resizer.out_hw
    sr = np.empty((oh, ow, channels), dtype=dtype)
    bic = np.empty_like(sr) if bicubic else None
    step = (choose_tile(model, oh, ow) if tile == AUTO else tile) or max(oh, ow)
    tiles = output_tiles(resizer, step, model.shrink)
    report = on_tile if on_tile is not None else _no_report
    report(0, len(tiles))

    def one_tile(k):
        rows, cols = tiles[k]
        out = (slice(rows[0], rows[1]), slice(cols[0], cols[1]))
        sr[out], b = enlarge_tile(pixels[input_window(resizer, rows, cols)], kind, model, resizer, rows, cols,
                                  bicubic)
        if bic is not None:
            bic[out] = b

    model.engine.over_tiles(one_tile, len(tiles), model.primitives, lambda done: report(done, len(tiles)))
    return sr, bic


def _no_report(done: int, total: int) -> None:
    pass
