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
result equals it bit for bit (``tests/test_enlarge_tiled.py``). On NumPy the tiles are enlarged
``workers`` at a time, each on its own thread, with the same numbers as one at a time. Memory: the
integer input and output images plus one tile's working set per thread (tens of MiB for 9-1-5 at
the default tile 512: ``bench/RESULTS.md``; independent of the image size); ``tile=None``
processes the image in one piece.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinysr.image.inference import AUTO, DEFAULT_TILE, choose_tile, restore_piece, tile_spans
from tinysr.nn.model import SRCNN
from tinysr.ops.blas_threads import default_workers, single_threaded_blas
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


def enlarge(pixels: np.ndarray, kind: str, model: SRCNN, scale: int, tile: int | None = DEFAULT_TILE,
            bicubic: bool = False, workers: int | None = None,
            on_tile: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Enlarge an integer image by ``scale`` with SRCNN, one output tile at a time.

    Args:
        pixels: ``(H, W, C)`` integer pixels as :func:`tinysr.cli.upscale.read_pixels` gives them:
            uint8 0..255 for kinds ``L``, ``LA``, ``RGB``, ``RGBA`` (C = 1, 2, 3, 4), uint16
            0..65535 for ``L16`` (C = 1). Any size from 1x1 up.
        kind: one of :data:`KINDS`.
        model: an SRCNN on any device; Y is restored on the [0, 1] scale.
        scale: positive integer enlargement factor.
        tile: output tile edge in pixels (``None`` or 0: the whole image in one piece; ``"auto"``:
            :func:`tinysr.image.inference.choose_tile`, 512 on the CPU, on the GPU by its free memory).
        bicubic: also return the plain Matlab-bicubic enlargement (for ``--compare``).
        workers: CPU threads (``None``: :func:`tinysr.ops.blas_threads.default_workers`); on NumPy,
            with more than one tile, that many tiles are enlarged at once, each on one thread with
            BLAS single-threaded (:func:`tinysr.ops.blas_threads.single_threaded_blas`). No effect on
            the result.
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
    channels, dtype, full_scale = KINDS[kind]
    colour = kind in ("RGB", "RGBA")
    resizer = WindowedImresize(pixels.shape[:2], float(scale))
    oh, ow = resizer.out_hw
    sr = np.empty((oh, ow, channels), dtype=dtype)
    bic = np.empty_like(sr) if bicubic else None
    step = (choose_tile(model, oh, ow) if tile == AUTO else tile) or max(oh, ow)
    halo = model.shrink
    spans = [(rows, cols) for rows in tile_spans(oh, step, halo) for cols in tile_spans(ow, step, halo)]
    report = on_tile if on_tile is not None else _no_report
    report(0, len(spans))

    def one_tile(rows, cols, engine):
        (r0, r1, hr0, hr1), (c0, c1, hc0, hc1) = rows, cols
        ir0, ir1, ic0, ic1 = resizer.input_window(hr0, hr1, hc0, hc1)
        px = pixels[ir0:ir1, ic0:ic1].astype(np.float64) / full_scale  # (h_in, w_in, C) on [0, 1]
        if colour:
            px = np.concatenate([rgb2ycbcr(px[:, :, :3]), px[:, :, 3:]], axis=2)
        up = resizer.window(px, hr0, hr1, hc0, hc1)  # (hr1-hr0, hc1-hc0, C): Y or YCbCr, alpha
        inner = (slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0))
        restored = up[inner].copy()  # (r1-r0, c1-c0, C); its Y is replaced by the network's
        restored[:, :, 0] = restore_piece(model, up[:, :, 0], np.float64, engine)[inner]
        sr[r0:r1, c0:c1] = _to_output(restored, colour, kind)
        if bic is not None:
            bic[r0:r1, c0:c1] = _to_output(up[inner], colour, kind)

    threads = 1
    if model.xp is np and len(spans) > 1:  # host tiles in parallel; the GPU takes them in turn
        threads = workers if workers is not None else default_workers()
    if threads > 1:
        # Whole tiles on `threads` threads (the bicubic, colour and rounding run in parallel too),
        # BLAS single-threaded: each tile's network then runs on its own thread with the numbers
        # it has on any number of threads (workers=None: BLAS has one thread, so the network
        # takes one and leaves BLAS alone; an explicit 1 would wait for the lock held here).
        with single_threaded_blas() as limited:
            if limited:
                with ThreadPoolExecutor(min(threads, len(spans))) as pool:
                    net = model.engine.with_workers(None)
                    futures = [pool.submit(one_tile, rows, cols, net) for rows, cols in spans]
                    try:
                        for k, done in enumerate(futures, 1):
                            done.result()
                            report(k, len(spans))
                    except BaseException:  # a signal or an error: drop the queued tiles, don't wait for them
                        for f in futures:
                            f.cancel()
                        raise
                return sr, bic
    for k, (rows, cols) in enumerate(spans, 1):  # one tile at a time; the network may use several threads
        one_tile(rows, cols, model.engine.with_workers(workers))
        report(k, len(spans))
    return sr, bic


def _no_report(done: int, total: int) -> None:
    pass
