"""Enlarging a whole image tile by tile into a preallocated integer image (bounded memory).

The pipeline and its numbers are those of the whole-image float pipeline (``tests/reference_pipeline.py``) followed by
:func:`quantize`, but nothing image-sized is ever held in floating point. For each output tile
(``tile x tile`` pixels, the tiles of :func:`tinysr.image.inference.restore_y`):

1. the input rows and columns that the tile and its halo (``model.shrink`` output pixels per
   side, clamped to the image) read are cut from the integer input and scaled to [0, 1]
   (``/ 255``, or ``/ 65535`` for the 16-bit kinds);
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

import math
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
    "LA16": (2, np.uint16, 65535.0),  # 16 bits per sample: the PNG/TIFF of 32, 48 and 64 bits a pixel
    "RGB16": (3, np.uint16, 65535.0),
    "RGBA16": (4, np.uint16, 65535.0),
}
COLOUR_KINDS = ("RGB", "RGBA", "RGB16", "RGBA16")


def array_kind(shape: tuple, dtype) -> str:
    """The kind of an integer image array of ``shape`` ``(H, W)`` or ``(H, W, C)``: uint8 with C = 1,
    2, 3, 4 is ``L``, ``LA``, ``RGB``, ``RGBA``; uint16 is ``L16``, ``LA16``, ``RGB16``, ``RGBA16``.
    ValueError otherwise."""
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image arrays must be uint8 (0..255) or uint16 (0..65535), got {dtype}; "
                         "convert floats on [0, 1] with (x * 255).round().astype(np.uint8)")
    if len(shape) not in (2, 3):
        raise ValueError(f"image arrays must be (H, W) or (H, W, C), got shape {tuple(shape)}")
    channels = shape[2] if len(shape) == 3 else 1
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"image arrays need 1, 2, 3 or 4 channels (gray, gray+alpha, RGB, RGBA), "
                         f"got {channels} in shape {tuple(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"empty image of shape {tuple(shape)}")
    return ("L", "LA", "RGB", "RGBA")[channels - 1] + ("16" if dtype == np.uint16 else "")


def quantize(img: np.ndarray, kind: str) -> np.ndarray:
    """Float ``(H, W, C)`` on [0, 1] -> uint8 as Matlab ``uint8(x * 255)`` (half away from zero,
    saturated), or for the 16-bit kinds (``L16``, ``RGB16``, ...) uint16 ``floor(x * 65535 + 0.5)``
    clipped to 0..65535."""
    if KINDS[kind][1] == np.uint16:
        return np.clip(np.floor(img * 65535.0 + 0.5), 0, 65535).astype(np.uint16)
    return to_uint8_matlab(img)


# -- any output size ----------------------------------------------------------------------------------

# The scales whose networks ship in tinysr/weights; any other size uses the nearest (network_scale).
BUNDLED_SCALES = (2, 3, 4)


def check_scale(scale) -> float:
    """A user's enlargement factor as a number > 1 (an ``int`` stays an ``int``); ``ValueError``
    in one line otherwise (below 1 is shrinking, 1 is no enlargement: tinysr does neither)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not math.isfinite(scale) or scale <= 1:
        raise ValueError(f"scale must be a number greater than 1 (e.g. 2, 2.5, 3), got {scale!r}")
    return int(scale) if float(scale).is_integer() else float(scale)


def output_size(in_hw: tuple[int, int], scale=None, width: int | None = None,
                height: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of the enlargement of an ``(H, W)`` image.

    ``scale`` (> 1): Matlab ``imresize``'s size, ``(ceil(scale * H), ceil(scale * W))``.
    ``width`` alone: ``(round(H * width / W), width)``; ``height`` alone: ``(height,
    round(W * height / H))`` (the aspect kept, half up); both: exactly ``(height, width)``.
    ``ValueError`` in one line for both a scale and a width/height, a bad value, or a size that
    does not enlarge (smaller than the input on an axis, or equal to it).
    """
    h, w = (int(v) for v in in_hw)
    if width is None and height is None:
        s = check_scale(scale)
        return int(math.ceil(s * h)), int(math.ceil(s * w))
    if scale is not None:
        raise ValueError("give a scale or a width/height, not both")
    for name, v in (("width", width), ("height", height)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be a positive number of pixels, got {v!r}")
    if width is not None and height is not None:
        oh, ow = int(height), int(width)
    elif width is not None:
        oh, ow = max(1, math.floor(h * width / w + 0.5)), int(width)
    else:
        oh, ow = int(height), max(1, math.floor(w * height / h + 0.5))
    if oh < h or ow < w or (oh, ow) == (h, w):
        raise ValueError(f"{ow}x{oh} does not enlarge this {w}x{h} image (tinysr only enlarges)")
    return oh, ow


def network_scale(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """The bundled network an enlargement from ``in_hw`` to ``out_hw`` uses: the smallest scale in
    :data:`BUNDLED_SCALES` at or above ``max(out_H / H, out_W / W)`` (x1.5 -> x2, x2.5 -> x3, x3.5 -> x4),
    the largest above them all. :func:`enlarge` runs it at its own scale and resizes down to the
    size: at x1.5, x2.5 and x3.5 that scores 1 to 3 dB over the network run directly on the
    bicubic of the size (``bench/RESULTS.md``, "Any size")."""
    s = max(out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    return next((b for b in BUNDLED_SCALES if b >= s - 1e-9), BUNDLED_SCALES[-1])


def size_tag(scale=None, width: int | None = None, height: int | None = None) -> str:
    """How output names say the size: ``x3``, ``x2.5``, ``w1000``, ``h800``, ``1000x800`` (width x height)."""
    if width is not None and height is not None:
        return f"{width}x{height}"
    if width is not None:
        return f"w{width}"
    if height is not None:
        return f"h{height}"
    return f"x{check_scale(scale):g}"


class BundledModels:
    """The bundled networks on one backend, each loaded on first use: for runs whose images need
    different ones (``--width``/``--height``). ``models(s)`` is the :class:`SRCNN` for scale ``s``;
    ``engine`` (a :class:`tinysr.ops.engine.Engine`, or None for the default) is given to each;
    ``path_for(s)`` names the weights file of scale ``s`` (default: the clean bundled weights)."""

    def __init__(self, xp=np, engine=None, path_for=None):
        self.xp, self.engine, self.path_for, self._loaded = xp, engine, path_for, {}

    def __call__(self, scale: int) -> SRCNN:
        if scale not in self._loaded:
            from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415

            model = load_weights((self.path_for or bundled_path)(scale), xp=self.xp)
            if self.engine is not None:
                model.engine = self.engine
            self._loaded[scale] = model
        return self._loaded[scale]


def _check(pixels: np.ndarray, kind: str, scale) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown image kind {kind!r}: choose one of {', '.join(KINDS)}")
    channels, dtype, _ = KINDS[kind]
    if pixels.ndim != 3 or pixels.shape[2] != channels or pixels.dtype != dtype:
        raise ValueError(f"a {kind} image must be (H, W, {channels}) {np.dtype(dtype).name}, "
                         f"got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"empty image of shape {pixels.shape}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not math.isfinite(scale) or scale < 1:
        raise ValueError(f"scale must be a number >= 1, got {scale!r}")


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
    colour = kind in COLOUR_KINDS
    px = np.asarray(window).astype(np.float64) / full_scale  # (h_in, w_in, C) on [0, 1]
    if colour:
        px = np.concatenate([rgb2ycbcr(px[:, :, :3]), px[:, :, 3:]], axis=2)
    up = resizer.window(px, hr0, hr1, hc0, hc1)  # (hr1-hr0, hc1-hc0, C): Y or YCbCr, alpha
    inner = (slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0))
    restored = up[inner].copy()  # (r1-r0, c1-c0, C); its Y is replaced by the network's
    restored[:, :, 0] = restore_piece(model, up[:, :, 0], np.float64)[inner]
    return _to_output(restored, colour, kind), _to_output(up[inner], colour, kind) if bicubic else None


def enlarge(pixels: np.ndarray, kind: str, model: SRCNN, scale: float, tile: int | None = DEFAULT_TILE,
            bicubic: bool = False,
            on_tile: Callable[[int, int], None] | None = None,
            size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Enlarge an integer image by ``scale`` (or to ``size``) with SRCNN, one output tile at a time.

    Args:
        pixels: ``(H, W, C)`` integer pixels as :func:`tinysr.image.io.read_pixels` gives them:
            uint8 0..255 for kinds ``L``, ``LA``, ``RGB``, ``RGBA`` (C = 1, 2, 3, 4), uint16
            0..65535 for ``L16``, ``LA16``, ``RGB16``, ``RGBA16`` (the same pipeline on [0, 1]:
            ``/ 65535`` in, rounded to 16 bits out). Any size from 1x1 up.
        kind: one of :data:`KINDS`.
        model: an SRCNN on any device; Y is restored on the [0, 1] scale. Its engine
            (:class:`tinysr.ops.engine.Engine`) says how the tiles run: on NumPy, with more than
            one tile, ``engine.workers`` tiles at once. No effect on the result.
        scale: enlargement factor >= 1, any real number: the bicubic step is Matlab's
            ``imresize(img, scale)`` (output ``ceil(scale * H)`` rows); ignored when ``size`` is given.
        size: ``(rows, cols)`` of the output (:func:`output_size`), the bicubic step then being
            ``imresize(img, size)`` (scale ``rows / H`` and ``cols / W``).
            A size (or scale) between the bundled scales, below ``N = network_scale(...)``
            (:func:`network_scale`: x2.5 -> 3), is made by enlarging by the integer ``N`` (all of the
            above) and resizing that down to the size (:func:`resize_to`); ``model`` should then be
            the ``xN`` network. Above the largest bundled scale, the bicubic goes to the size directly.
        tile: output tile edge in pixels (``None`` or 0: the whole image in one piece; ``"auto"``:
            :func:`tinysr.image.inference.choose_tile`, 512 on the CPU, on the GPU by its free memory).
        bicubic: also return the plain Matlab-bicubic enlargement (for ``--compare``).
        on_tile: progress callback ``on_tile(done, total)`` (tile counts), called on the calling
            thread: once with ``done = 0`` before the first tile, then after each finished tile
            (tiles in their order; ``done == total`` last). An exception it raises stops the
            work like a signal (queued tiles dropped). No effect on the result.

    Returns:
        ``(sr, bic)``: ``(ceil(scale*H), ceil(scale*W), C)`` (or ``(*size, C)``) arrays of ``pixels``' dtype; ``bic`` is None
        unless ``bicubic``. Equal bit for bit to ``quantize`` of the whole-image pipeline with the same
        ``tile``.
    """
    pixels = np.asarray(pixels)
    _check(pixels, kind, scale)
    in_hw = pixels.shape[:2]
    out_hw = tuple(size) if size is not None else WindowedImresize(in_hw, float(scale)).out_hw
    via = network_scale(in_hw, out_hw)
    if out_hw != (via * in_hw[0], via * in_hw[1]) and max(out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]) < via:
        # Between the bundled scales: the network at its own scale, then the bicubic down to the size.
        big, _ = enlarge(pixels, kind, model, via, tile, False, on_tile)
        return resize_to(big, kind, out_hw, tile), resize_to(pixels, kind, out_hw, tile) if bicubic else None
    channels, dtype, _ = KINDS[kind]
    resizer = WindowedImresize(in_hw, float(scale)) if size is None else WindowedImresize(in_hw, output_shape=size)
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


def resize_to(pixels: np.ndarray, kind: str, out_hw: tuple[int, int], tile: int | str | None = DEFAULT_TILE) -> np.ndarray:
    """Matlab-bicubic resize (antialiased when shrinking) of integer ``(H, W, C)`` pixels of ``kind``
    to ``out_hw``, every channel on [0, 1] then rounded back like :func:`quantize`;
    one output tile at a time (``tile`` rows by columns, ``None``/0: one piece), so memory is
    ``pixels`` and the output plus one window."""
    _, _, full_scale = KINDS[kind]
    resizer = WindowedImresize(pixels.shape[:2], output_shape=out_hw)
    out = np.empty((*out_hw, pixels.shape[2]), dtype=pixels.dtype)
    step = DEFAULT_TILE if tile == AUTO else tile or max(out_hw)
    for (r0, r1, _, _), (c0, c1, _, _) in output_tiles(resizer, step, 0):
        rows, cols = input_window(resizer, (r0, r1, r0, r1), (c0, c1, c0, c1))
        window = pixels[rows, cols].astype(np.float64) / full_scale
        out[r0:r1, c0:c1] = quantize(np.clip(resizer.window(window, r0, r1, c0, c1), 0.0, 1.0), kind)
    return out


def _no_report(done: int, total: int) -> None:
    pass
