"""The layers' primitives on the CPU: NumPy, and numba loops where NumPy needs large temporaries.

:mod:`tinysr.ops.primitives_gpu` has the same names for CuPy arrays: both satisfy
:class:`tinysr.ops.primitives.Primitives`, and :func:`tinysr.ops.backend.primitives` picks one from an array. Functions here act on whatever part of the batch they are given (the
engine may hand each worker thread its own samples), and the numba loops release the GIL.

``cols`` layout: ``(N, C*kh*kw, Ho*Wo)``, row ``c*kh*kw + i*kw + j`` holding ``xpad[n, c, y+i, x+j]``
at column ``y*Wo + x``, so ``W.reshape(O, C*kh*kw) @ cols`` is ``(N, O, Ho*Wo)``, already NCHW.
numba compiles each loop on its first call (per dtype; cached on disk where it can write).
"""

from __future__ import annotations

import functools

import numpy as np

from tinysr.ops.backend import get_array_module

kind = "cpu"
host_threads = True  # the engine splits a batch over CPU threads
output_side_conv = None  # inference runs the output side step by step, like training


def conv_algorithms(weight_shape: tuple, train: bool, need_input_grad: bool) -> tuple[str, ...]:
    """im2col and the output side (no direct conv here); the output side first where the layer has
    fewer outputs than inputs and a kernel larger than 1x1 (SRCNN's layer 3: 25 rows per pixel, not 800).
    In training with an input gradient and a kernel larger than 1x1 also ``im2col_flip`` (im2col
    with the input gradient as a convolution with the flipped kernel), after the first: on 9-5-5's
    layer 2 it was not measurably faster than the output side (bench/RESULTS.md, 2026-12-08), and the
    first choice keeps a fixed-seed run's numbers."""
    o, c, kh, kw = weight_shape
    if train and need_input_grad and kh * kw > 1:
        return ("output_side", "im2col_flip", "im2col") if o < c else ("im2col", "im2col_flip", "output_side")
    return ("output_side", "im2col") if o < c and kh * kw > 1 else ("im2col", "output_side")


def free_bytes(a) -> None:
    """None: host memory is not budgeted (tiles bound it instead)."""
    return None


def index_limit() -> None:
    """None: NumPy and numba index in 64 bits."""
    return None


def numba_loop(f):
    """``f`` compiled by ``numba.njit(nogil=True)`` on its first call (numba imported then)."""

    @functools.cache
    def compiled():
        import numba  # noqa: PLC0415  (deferred: importing tinysr must stay cheap)

        try:
            return numba.njit(cache=True, nogil=True)(f)
        except RuntimeError:  # no writable place for numba's disk cache: compile once per process
            return numba.njit(nogil=True)(f)

    @functools.wraps(f)
    def call(*args):
        return compiled()(*args)

    call.compiled = compiled
    return call


@numba_loop
def _im2col_loop(x, kh, kw, cols):
    n, c, hp, wp = x.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    for a in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = cols[a, (ch * kh + i) * kw + j]
                    for y in range(ho):
                        src = x[a, ch, y + i, j:j + wo]
                        dst = row[y * wo:(y + 1) * wo]
                        for t in range(wo):
                            dst[t] = src[t]


@numba_loop
def _bias_relu_loop(y, bias):
    # y (n, c, p) <- maximum(y + bias[None, :, None], 0), NumPy's numbers: NaN stays NaN, -0.0 -> +0.0.
    n, c, p = y.shape
    for i in range(n):
        for k in range(c):
            bk = bias[k]
            row = y[i, k]
            for j in range(p):
                v = row[j] + bk
                row[j] = v if (v > 0 or v != v) else 0.0


@numba_loop
def _relu_backward_loop(dy, y, dx):
    # dx <- dy * (y > 0), as NumPy's product with the bool mask (dy * 0.0 keeps sign and NaN).
    a, o, d = dy.ravel(), y.ravel(), dx.ravel()
    for i in range(a.size):
        d[i] = a[i] * (1.0 if o[i] > 0 else 0.0)


def cols_shape(n: int, rows: int, p: int) -> tuple:
    """The shape of ``cols`` for ``n`` samples, ``rows = C*kh*kw``, ``p = Ho*Wo`` output pixels."""
    return (n, rows, p)


def im2col(xpad: np.ndarray, kh: int, kw: int, out: np.ndarray | None = None) -> np.ndarray:
    """Unfold ``xpad`` ``(N, C, Hp, Wp)`` into ``cols`` (module layout), into ``out`` (C-contiguous;
    returned) where given. A 1x1 kernel without ``out`` returns a view of the input."""
    n, c, hp, wp = xpad.shape
    shape = (n, c * kh * kw, (hp - kh + 1) * (wp - kw + 1))
    if out is not None and (out.shape != shape or out.dtype != xpad.dtype or not out.flags.c_contiguous):
        raise ValueError(f"im2col: out must be a C-contiguous {xpad.dtype} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    if (kh, kw) == (1, 1) and out is None:
        return xpad.reshape(shape)
    if out is None:
        out = np.empty(shape, dtype=xpad.dtype)
    _im2col_loop(xpad, kh, kw, out)
    return out


def col2im(cols: np.ndarray, shape: tuple, kh: int, kw: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: ``cols`` -> ``shape = (N, C, Hp, Wp)``, taps added ``i`` then ``j``."""
    n, c, hp, wp = shape
    ho, wo = hp - kh + 1, wp - kw + 1
    if (kh, kw) == (1, 1):
        return cols.reshape(shape)
    cols6 = cols.reshape(n, c, kh, kw, ho, wo)
    out = np.zeros(shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + ho, j:j + wo] += cols6[:, :, i, j]
    return out


def cols_gemm(w: np.ndarray, cols: np.ndarray, y: np.ndarray) -> None:
    """``y`` ``(m, O, Ho, Wo)`` <- ``W (O, C*kh*kw) @ cols`` for ``w`` ``(O, C, kh, kw)``, one GEMM a sample."""
    np.matmul(w.reshape(w.shape[0], -1), cols, out=y.reshape(y.shape[0], y.shape[1], -1))


def grad_parts_rows(n: int, w) -> int:
    """Rows of partial weight gradients :func:`weight_grad_cols` writes for ``n`` samples: one a sample."""
    return n


def weight_grad_cols(w: np.ndarray, dy: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """``out`` ``(m, O, C*kh*kw)`` <- each sample's ``dy (O, Ho*Wo) @ cols.T`` for ``dy`` ``(m, O, Ho, Wo)``;
    the caller sums them over the batch, in a fixed order."""
    np.matmul(dy.reshape(dy.shape[0], dy.shape[1], -1), cols.transpose(0, 2, 1), out=out)


def input_grad_cols(w: np.ndarray, dy: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``dcols = W.T @ dy`` ``(m, C*kh*kw, Ho*Wo)`` for ``dy`` ``(m, O, Ho, Wo)``, into ``out`` (any
    C-contiguous array of that size, e.g. the input gradient of a 1x1 layer) where given."""
    o, m = w.shape[0], dy.shape[0]
    dst = None if out is None else out.reshape(m, -1, dy.shape[2] * dy.shape[3])
    return np.matmul(w.reshape(o, -1).T, dy.reshape(m, o, -1), out=dst)


def bias_relu_(y: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``y = maximum(y + bias[None, :, None, None], 0)`` in place on ``(N, C, ...)``, one pass; returns ``y``."""
    if y.flags.c_contiguous and y.ndim >= 2 and bias.shape == (y.shape[1],) and y.dtype == bias.dtype:
        _bias_relu_loop(y.reshape(y.shape[0], y.shape[1], -1), bias)
    else:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
        np.maximum(y, 0, out=y)
    return y


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``dy * (y > 0)`` (``y``: the ReLU's output) in one pass, NumPy's numbers; into ``out`` where given."""
    if out is not None and (out.shape != dy.shape or out.dtype != dy.dtype):
        raise ValueError(f"relu_backward: out must be a {dy.dtype} array of shape {dy.shape}, got {out.dtype} {out.shape}")
    if (dy.shape == y.shape and dy.dtype == y.dtype and dy.flags.c_contiguous and y.flags.c_contiguous
            and (out is None or out.flags.c_contiguous)):
        dx = np.empty_like(dy) if out is None else out
        _relu_backward_loop(dy, y, dx)
        return dx
    if out is None:
        return dy * (y > 0)
    np.multiply(dy, y > 0, out=out)
    return out


def mse_loss_grad(pred: np.ndarray, target: np.ndarray):
    """Caffe's Euclidean loss ``sum((pred - target)^2) / (2 N)`` (0-d) and its gradient ``(pred - target) / N``."""
    n = pred.shape[0]
    diff = pred - target
    return np.sum(diff * diff) / (2 * n), diff / diff.dtype.type(n)


# The output side's shifted sums (a layer with fewer outputs than inputs: the GEMM on O*kh*kw rows,
# then y[n, o, r, s] = sum_{i,j} z[n, o, i, j, r+i, s+j]).

@numba_loop
def _tap_sum_loop(z, kh, kw, start, r0, h, slots, out):
    # out[m, r, s] <- start + sum over taps (i, j), i-major, of z[m, i*kw + j, row(r + i), s + j] with
    # row(k) = clamp(r0 + k, 0, h - 1) % slots: NumPy's order of `out += tap` from `start`. One output
    # row at a time: it stays in L1 across the taps.
    for m in range(out.shape[0]):
        for r in range(out.shape[1]):
            row = out[m, r]
            for s in range(row.size):
                row[s] = start
            for i in range(kh):
                k = min(max(r0 + r + i, 0), h - 1) % slots
                for j in range(kw):
                    src = z[m, i * kw + j, k, j:j + row.size]
                    for s in range(row.size):
                        row[s] += src[s]


def tap_sum(z, ho: int, wo: int, out=None, rows: tuple | None = None, start: float = 0.0):
    """``z`` ``(N, O, kh, kw, Hp, Wp)`` -> ``(N, O, Ho, Wo)``: ``start + sum_{i,j} z[..., i, j, r+i, s+j]``
    (taps ``i``-major), into ``out`` (that shape and dtype, C-contiguous; returned) where given.

    ``rows = (r0, h, slots)``: padded row ``k`` is ``z``'s row ``clamp(r0 + k, 0, h - 1) % slots``
    instead of ``k``: the fused inference's ring of ``slots`` rows of an ``h``-row image, its
    replicate padding folded in.
    """
    n, o, kh, kw, hp, wp = z.shape
    if out is None:
        out = np.empty((n, o, ho, wo), dtype=z.dtype)
    elif out.shape != (n, o, ho, wo) or out.dtype != z.dtype or not out.flags.c_contiguous:
        raise ValueError(f"tap_sum: out must be a C-contiguous {z.dtype} array of shape {(n, o, ho, wo)}, "
                         f"got {out.dtype} {out.shape}")
    r0, h, slots = (0, ho + kh - 1, ho + kh - 1) if rows is None else rows
    if wo + kw - 1 > wp or min(h, slots) > hp:
        raise ValueError(f"tap_sum: {ho}x{wo} outputs of a {kh}x{kw} kernel read {min(h, slots)} rows and "
                         f"{wo + kw - 1} columns, z has {hp} and {wp}")
    _tap_sum_loop(z.reshape(n * o, kh * kw, hp, wp), kh, kw, z.dtype.type(start), r0, h, slots,
                  out.reshape(n * o, ho, wo))
    return out


@numba_loop
def _tap_spread_loop(dy, d):
    # d[m, i, j, r+i, s+j] <- dy[m, r, s], zeros elsewhere; every element of d written once.
    _, kh, kw, hp, wp = d.shape
    ho, wo = dy.shape[1], dy.shape[2]
    for m in range(d.shape[0]):
        for i in range(kh):
            for j in range(kw):
                for r in range(hp):
                    row = d[m, i, j, r]
                    if r < i or r >= i + ho:
                        for t in range(wp):
                            row[t] = 0.0
                        continue
                    src = dy[m, r - i]
                    for t in range(j):
                        row[t] = 0.0
                    for t in range(wo):
                        row[j + t] = src[t]
                    for t in range(j + wo, wp):
                        row[t] = 0.0


def tap_spread(dy, kh: int, kw: int, hp: int, wp: int):
    """Adjoint of :func:`tap_sum`: ``dy`` ``(N, O, Ho, Wo)`` -> ``(N, O, kh, kw, Hp, Wp)``
    with ``d[..., i, j, r+i, s+j] = dy[..., r, s]`` and zeros elsewhere: one numba pass on NumPy
    arrays; on others (the GPU module uses this function for CuPy) zeros and ``kh*kw`` slice copies."""
    n, o, ho, wo = dy.shape
    if ho + kh - 1 > hp or wo + kw - 1 > wp:
        raise ValueError(f"tap_spread: {ho}x{wo} outputs of a {kh}x{kw} kernel need {ho + kh - 1}x{wo + kw - 1}, "
                         f"got {hp}x{wp}")
    xp = get_array_module(dy)
    if xp is not np:
        d = xp.zeros((n, o, kh, kw, hp, wp), dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                d[:, :, i, j, i:i + ho, j:j + wo] = dy
        return d
    d = np.empty((n, o, kh, kw, hp, wp), dtype=dy.dtype)
    _tap_spread_loop(np.ascontiguousarray(dy).reshape(n * o, ho, wo), d.reshape(n * o, kh, kw, hp, wp))
    return d
