"""Matlab-exact bicubic ``imresize`` in NumPy.

This reproduces Matlab's ``imresize(A, scale, 'bicubic')`` and ``imresize(A, [h w], 'bicubic')``
(Image Processing Toolbox, default ``'Antialiasing', true``), which the SRCNN authors used both to
make training data and to evaluate. Pillow's and OpenCV's bicubic differ from it (up to ~2 dB in
the SRCNN tables), so evaluation must go through this module.

Algorithm (Matlab's ``contributions()`` + ``resizeAlongDim()``), per axis of input length ``n``,
output length ``m`` and scale ``s``:

* cubic kernel, a = -0.5: ``1.5|x|^3 - 2.5|x|^2 + 1`` for ``|x| <= 1``,
  ``-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2`` for ``1 < |x| <= 2``, 0 beyond; width 4;
* when shrinking (``s < 1``) the kernel is stretched to antialias: ``h(x) = s * cubic(s x)``,
  width ``4 / s``;
* for output pixel ``x = 1..m`` (1-based): ``u = x/s + 0.5 (1 - 1/s)``,
  ``left = floor(u - width/2)``, taps ``left + 0 .. left + P - 1`` with ``P = ceil(width) + 2``,
  weights ``h(u - tap)`` normalised to sum to 1 per output pixel;
* out-of-range taps are mirrored with the edge pixel repeated (index sequence ``1..n, n..1``
  repeating, i.e. modulo ``2n``); tap columns whose weight is zero for every output pixel are
  dropped;
* the image is resized one axis at a time, the axis with the smaller scale first (rows first on
  ties), each output pixel being the weighted sum of its taps (accumulated tap by tap in float64,
  so memory stays a few times the image size; no dense ``m x n`` matrix is formed).

Output size is ``ceil(s * n)`` per axis for a given scale; for a given ``output_shape`` the
per-axis scale is ``out / in`` (as in Matlab).

:class:`WindowedImresize` computes any rectangle of the output from just the input rows and
columns it needs, with the same per-axis tables, so it equals the matching slice of
:func:`imresize` bit for bit; tiled enlargement of very large images uses it.

Data types: float inputs are computed and returned in float64 (no clipping: bicubic overshoots).
uint8 inputs are computed in float64 and, as in Matlab (whose per-axis ``imresizemex`` keeps the
input class), rounded half away from zero and saturated to 0..255 after *each* axis pass; the
result is uint8. The pixel value range is whatever the input uses ([0, 1] or [0, 255]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["WindowedImresize", "contributions", "cubic", "imresize"]

_KERNEL_WIDTH = 4.0
_BLOCK_ELEMENTS = 1 << 20  # ~8 MiB float64 temporaries per block


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5, evaluated exactly as Matlab's ``cubic()`` (float64)."""
    absx = np.abs(np.asarray(x, dtype=np.float64))
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
    ) * ((1 < absx) & (absx <= 2))


def contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Matlab's ``contributions()`` for the bicubic kernel along one axis.

    Returns ``(weights, indices)``, both of shape ``(out_length, T)`` with ``T`` the number of
    kept taps: ``weights`` float64 (each row sums to 1), ``indices`` int64 **0-based** input
    positions (already mirrored into ``0..in_length-1``). Output pixel ``i`` is
    ``sum_k weights[i, k] * input[indices[i, k]]``.
    """
    if scale < 1 and antialiasing:
        def h(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)

        kernel_width = _KERNEL_WIDTH / scale
    else:
        h = cubic
        kernel_width = _KERNEL_WIDTH

    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p, dtype=np.float64)[None, :]  # 1-based, may be out of range
    weights = h(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Mirror: aux = [1..n, n..1]; indices = aux(mod(idx - 1, 2n) + 1). Converted to 0-based.
    idx = idx.astype(np.int64)
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = aux[np.mod(idx - 1, 2 * in_length)]

    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _round_matlab_uint8(x: np.ndarray) -> np.ndarray:
    """Matlab conversion of float64 to uint8: round half away from zero, saturate to 0..255."""
    r = np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))
    return np.clip(r, 0, 255).astype(np.uint8)


def _resize_axis(a: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Apply one axis (0 = rows, 1 = columns) of the separable resize to float64 ``a``.

    Accumulates tap by tap; the work is done in blocks along the other spatial axis so that the
    only temporaries are block-sized (memory: input + output + a few MiB).
    """
    out_shape = list(a.shape)
    out_shape[axis] = weights.shape[0]
    out = np.empty(out_shape, dtype=np.float64)
    bshape = [1] * a.ndim
    bshape[axis] = weights.shape[0]
    other = 1 - axis
    per_line = max(1, out.size // out.shape[other])
    block = max(1, _BLOCK_ELEMENTS // per_line)
    for start in range(0, a.shape[other], block):
        sl = [slice(None)] * a.ndim
        sl[other] = slice(start, start + block)
        src = a[tuple(sl)]
        acc = out[tuple(sl)]
        acc[...] = 0.0
        for k in range(weights.shape[1]):
            tmp = np.take(src, indices[:, k], axis=axis)
            tmp *= weights[:, k].reshape(bshape)
            acc += tmp
    return out


def _as_pair(value: float | Sequence[float], what: str) -> tuple[float, float]:
    if np.isscalar(value):
        return float(value), float(value)  # type: ignore[arg-type]
    vals = tuple(value)  # type: ignore[arg-type]
    if len(vals) != 2:
        raise ValueError(f"{what} must be a scalar or a pair (rows, cols), got {value!r}")
    return float(vals[0]), float(vals[1])


def imresize(
    img: np.ndarray,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Resize like Matlab ``imresize(img, scale, 'bicubic')`` (antialiased when shrinking).

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` array, float (any range, e.g. [0, 1]) or uint8 (0..255).
            Channels are resized independently.
        scale: positive scalar, or a ``(row_scale, col_scale)`` pair. Output size per axis is
            ``ceil(scale * n)``.
        output_shape: ``(out_H, out_W)`` positive ints; then the per-axis scale is
            ``out / in``. Exactly one of ``scale`` and ``output_shape`` must be given.

    Returns:
        ``(out_H, out_W)`` or ``(out_H, out_W, C)``; float64 for float input (unclipped), uint8
        for uint8 input (Matlab rounding, half away from zero, and saturation after each axis).

    Raises:
        ValueError: empty image, bad ``ndim``, non-positive/non-finite scale or output size,
            unsupported dtype, or neither/both of ``scale`` and ``output_shape``.
    """
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"imresize expects a 2-D (H,W) or 3-D (H,W,C) array, got ndim={a.ndim}")
    if a.size == 0:
        raise ValueError(f"imresize got an empty image of shape {a.shape}")
    is_uint8 = a.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"imresize supports float and uint8 images, got dtype {a.dtype}")
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of scale and output_shape")

    in_shape = a.shape[:2]
    if output_shape is not None:
        oh, ow = _as_pair(output_shape, "output_shape")
        if not all(math.isfinite(v) and v >= 1 and v == int(v) for v in (oh, ow)):
            raise ValueError(f"output_shape must be two positive integers, got {output_shape!r}")
        out_sz = (int(oh), int(ow))
        scales = (out_sz[0] / in_shape[0], out_sz[1] / in_shape[1])
    else:
        scales = _as_pair(scale, "scale")  # type: ignore[arg-type]
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        out_sz = (
            int(math.ceil(scales[0] * in_shape[0])),
            int(math.ceil(scales[1] * in_shape[1])),
        )

    # Smaller scale first; rows first on ties (Matlab's stable sort).
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    b = a.astype(np.float64, copy=False)
    for dim in order:
        weights, indices = contributions(in_shape[dim], out_sz[dim], scales[dim])
        b = _resize_axis(b, dim, weights, indices)
        if is_uint8:
            b = _round_matlab_uint8(b).astype(np.float64)
    if is_uint8:
        return b.astype(np.uint8)
    return b


class WindowedImresize:
    """Matlab bicubic resize of an ``(H, W)`` / ``(H, W, C)`` image, one output rectangle at a time.

    The two per-axis tables of :func:`contributions` (``out_len x taps``, a few KiB even for
    a 16000-pixel axis) are computed once for the whole image; a window slices them. For output
    rows ``r0:r1`` and columns ``c0:c1``::

        ir0, ir1, ic0, ic1 = wr.input_window(r0, r1, c0, c1)
        wr.window(img[ir0:ir1, ic0:ic1], r0, r1, c0, c1) == imresize(img, scale)[r0:r1, c0:c1]

    exactly (same taps, same weights, same float64 operations in the same order, same axis
    order and, for uint8, the same rounding after each pass). Memory is the window's, never the
    whole output's. Pixel range and dtype rules are :func:`imresize`'s. ``output_shape=(oh, ow)``
    instead of ``scale`` gives that exact size, as :func:`imresize`'s ``output_shape`` does.
    """

    def __init__(self, in_hw: Sequence[int], scale: float | Sequence[float] | None = None,
                 output_shape: Sequence[int] | None = None):
        h, w = (int(v) for v in in_hw)
        if h < 1 or w < 1:
            raise ValueError(f"WindowedImresize needs a non-empty image, got {h}x{w}")
        if (scale is None) == (output_shape is None):
            raise ValueError("WindowedImresize needs exactly one of scale and output_shape")
        if output_shape is not None:  # as imresize's output_shape: the exact size, scale = out / in per axis
            oh, ow = (int(v) for v in output_shape)
            if oh < 1 or ow < 1:
                raise ValueError(f"output_shape must be two positive integers, got {output_shape!r}")
            scale = (oh / h, ow / w)
        scales = _as_pair(scale, "scale")
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        self.in_hw = (h, w)
        self.out_hw = (int(math.ceil(scales[0] * h)), int(math.ceil(scales[1] * w))) if output_shape is None \
            else (oh, ow)
        self.order = (0, 1) if scales[0] <= scales[1] else (1, 0)  # as imresize
        self.tables = (contributions(h, self.out_hw[0], scales[0]),
                       contributions(w, self.out_hw[1], scales[1]))  # (weights, 0-based indices) per axis

    def _span(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        if not 0 <= start < stop <= self.out_hw[axis]:
            raise ValueError(f"output span {start}:{stop} is outside 0:{self.out_hw[axis]} on axis {axis}")
        idx = self.tables[axis][1][start:stop]
        return int(idx.min()), int(idx.max()) + 1

    def input_window(self, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int]:
        """Input ``(ir0, ir1, ic0, ic1)`` (half-open) that output rows ``r0:r1``, columns ``c0:c1`` read."""
        return (*self._span(0, r0, r1), *self._span(1, c0, c1))

    def window(self, src: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Output rows ``r0:r1``, columns ``c0:c1`` from ``src = img[ir0:ir1, ic0:ic1]`` (see :meth:`input_window`).

        Returns ``(r1 - r0, c1 - c0)`` or ``(r1 - r0, c1 - c0, C)``: float64 for float ``src``
        (unclipped), uint8 for uint8 ``src``.
        """
        a = np.asarray(src)
        ir0, ir1, ic0, ic1 = self.input_window(r0, r1, c0, c1)
        if a.ndim not in (2, 3) or a.shape[:2] != (ir1 - ir0, ic1 - ic0):
            raise ValueError(f"window {r0}:{r1}, {c0}:{c1} needs input rows {ir0}:{ir1} and columns "
                             f"{ic0}:{ic1} ({ir1 - ir0}x{ic1 - ic0}), got an array of shape {a.shape}")
        is_uint8 = a.dtype == np.uint8
        if not (is_uint8 or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"WindowedImresize supports float and uint8 images, got dtype {a.dtype}")
        spans = ((r0, r1, ir0), (c0, c1, ic0))
        b = a.astype(np.float64, copy=False)
        for dim in self.order:
            start, stop, offset = spans[dim]
            weights, indices = self.tables[dim]
            b = _resize_axis(b, dim, weights[start:stop], indices[start:stop] - offset)
            if is_uint8:
                b = _round_matlab_uint8(b).astype(np.float64)
        if is_uint8:
            return b.astype(np.uint8)
        return b
