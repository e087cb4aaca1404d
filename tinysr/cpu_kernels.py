"""numba loops for the CPU, where NumPy would need large temporaries.

Nothing here is compiled at import time: ``numba.njit`` compiles on the first call (per dtype),
and the import of numba itself is deferred until a kernel is first used.
"""

from __future__ import annotations

import functools

import numpy as np


def _cached_njit(numba, **options):
    """``numba.njit(cache=True, ...)``, or without the on-disk cache where numba finds no writable
    place for it (a read-only install and home): it then compiles once per process instead."""

    def decorate(f):
        try:
            return numba.njit(cache=True, **options)(f)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return numba.njit(**options)(f)

    return decorate


@functools.cache
def _kernels():
    import numba  # noqa: PLC0415  (deferred: importing tinysr must stay cheap)

    @numba.njit(parallel=True, cache=False)
    def col2im_kernel(cols6, out):
        # cols6 (N, C, kh, kw, Ho, Wo) -> out (N, C, Hp, Wp), out zeroed by the caller.
        # One (n, c) plane per parallel task; within a plane the taps are added in the
        # order i, j -- the order of the NumPy slice loop -- so results are bit-identical.
        n, c, kh, kw, ho, wo = cols6.shape
        for nc in numba.prange(n * c):
            a, b = nc // c, nc % c
            for i in range(kh):
                for j in range(kw):
                    for y in range(ho):
                        for x in range(wo):
                            out[a, b, y + i, x + j] += cols6[a, b, i, j, y, x]

    @_cached_njit(numba, nogil=True)
    def im2col_kernel(x, kh, kw, cols):
        # x (n, c, hp, wp) -> cols (n, c*kh*kw, ho*wo): row (ch*kh + i)*kw + j holds x[., ch, y+i, t+j]
        # at column y*wo + t (tinysr.im2col's layout); plain copies, so NumPy's slice loop's values.
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

    # The kernels below serve tinysr.fused_predict. Each does exactly the float operations of the
    # NumPy code it replaces, in the same order, so both give bit-identical results; they exist
    # because NumPy's versions are slow here (each of its passes over a block leaves the cache or
    # runs as a strided copy). They are serial: fused_predict runs them in its own worker threads,
    # which is why they release the GIL (nogil).

    @_cached_njit(numba, nogil=True)
    def unfold_cols_kernel(ypad, r0, f, cols):
        # cols (f*f, r*wq) <- row a*f+b holds ypad[r0+i+a, j+b] for i < r, j < wq (wq: ypad's width
        # less f-1): channel-major, so each (a, b, i) is one run of wq contiguous floats.
        wq = ypad.shape[1] - f + 1
        r = cols.shape[1] // wq
        for a in range(f):
            for b in range(f):
                dst = cols[a * f + b]
                for i in range(r):
                    src = ypad[r0 + i + a, b:b + wq]
                    d = dst[i * wq:(i + 1) * wq]
                    for j in range(wq):
                        d[j] = src[j]

    @_cached_njit(numba, nogil=True)
    def tap_sum_kernel(ring, f, bias, out, i0, h):
        # out (n, w) <- bias + sum over taps (a, b), a-major, of z[a*f+b, i0+i+a-f//2, j+b]: output
        # rows i0.. of layer 3 in an image of h rows, one row at a time so that it stays in L1
        # across the f*f taps. z row k is clamped to 0..h-1 and found in ring slot k % ring rows.
        n, w = out.shape
        slots = ring.shape[1]
        for i in range(n):
            row = out[i]
            for j in range(w):
                row[j] = bias
            for a in range(f):
                s = min(max(i0 + i + a - f // 2, 0), h - 1) % slots
                for b in range(f):
                    src = ring[a * f + b, s, b:b + w]
                    for j in range(w):
                        row[j] += src[j]

    # The two kernels below serve training (tinysr.layers.Conv2d with relu=True on the CPU; the
    # first also the fused path's bias + ReLU): one pass each where NumPy makes two (bias add, then
    # maximum) or builds a boolean mask first.

    @_cached_njit(numba, nogil=True)
    def bias_relu_nchw_kernel(y, bias):
        # y (n, c, p) <- maximum(y + bias[None, :, None], 0), in place, exactly as NumPy's add then
        # maximum: NaN stays NaN, and -0.0 becomes +0.0 (NumPy's maximum(-0.0, 0) is 0).
        n, c, p = y.shape
        for i in range(n):
            for k in range(c):
                bk = bias[k]
                row = y[i, k]
                for j in range(p):
                    v = row[j] + bk
                    row[j] = v if (v > 0 or v != v) else 0.0

    @_cached_njit(numba, nogil=True)
    def relu_backward_kernel(dy, y, dx):
        # dx <- dy * (y > 0) elementwise (flat, same shapes; y: the ReLU's output): as NumPy's
        # product with the bool mask, so dy * 0.0 keeps dy's sign and NaN.
        a, o, d = dy.ravel(), y.ravel(), dx.ravel()
        for i in range(a.size):
            d[i] = a[i] * (1.0 if o[i] > 0 else 0.0)

    return {"col2im": col2im_kernel, "im2col": im2col_kernel, "bias_relu_nchw": bias_relu_nchw_kernel,
            "relu_backward": relu_backward_kernel, "unfold": unfold_cols_kernel, "tap_sum": tap_sum_kernel}


def fused_kernels() -> dict:
    """The numba kernels of :mod:`tinysr.fused_predict` (compiled on first use, cached on disk)."""
    k = _kernels()
    nchw = k["bias_relu_nchw"]
    # bias + ReLU on a channel-major block (c, n) is the NCHW kernel on (1, c, n): same float ops
    return {"unfold": k["unfold"], "bias_relu": lambda act, bias: nchw(act[None], bias), "tap_sum": k["tap_sum"]}


def bias_relu_(y: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``y = maximum(y + bias[None, :, None, None], 0)`` in place for a host ``(N, C, H, W)``
    array (one pass; the same numbers as NumPy's two). Returns ``y``."""
    if y.flags.c_contiguous and y.ndim == 4 and bias.shape == (y.shape[1],) and y.dtype == bias.dtype:
        _kernels()["bias_relu_nchw"](y.reshape(y.shape[0], y.shape[1], -1), bias)
    else:
        y += bias[None, :, None, None]
        np.maximum(y, 0, out=y)
    return y


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``dy * (y > 0)`` for host arrays of one shape (``y``: the ReLU's output), one pass, NumPy's
    numbers; into ``out`` (same shape and dtype; returned) where given, else a new array."""
    if out is not None and (out.shape != dy.shape or out.dtype != dy.dtype):
        raise ValueError(f"relu_backward: out must be a {dy.dtype} array of shape {dy.shape}, got {out.dtype} {out.shape}")
    if (dy.shape == y.shape and dy.dtype == y.dtype and dy.flags.c_contiguous and y.flags.c_contiguous
            and (out is None or out.flags.c_contiguous)):
        dx = np.empty_like(dy) if out is None else out
        _kernels()["relu_backward"](dy, y, dx)
        return dx
    if out is None:
        return dy * (y > 0)
    np.multiply(dy, y > 0, out=out)
    return out


def im2col_numba(x: np.ndarray, kh: int, kw: int, out: np.ndarray) -> np.ndarray:
    """Unfold a host ``(N, C, Hp, Wp)`` array into ``out`` ``(N, C*kh*kw, Ho*Wo)`` (C-contiguous,
    same dtype), :func:`tinysr.im2col.im2col`'s layout, in one pass without the GIL."""
    _kernels()["im2col"](x, kh, kw, out)
    return out


def col2im_numba(cols6: np.ndarray, hp: int, wp: int) -> np.ndarray:
    """Fold ``cols6`` ``(N, C, kh, kw, Ho, Wo)`` into a new ``(N, C, Hp, Wp)`` array."""
    n, c = cols6.shape[:2]
    out = np.zeros((n, c, hp, wp), dtype=cols6.dtype)
    _kernels()["col2im"](np.ascontiguousarray(cols6), out)
    return out
