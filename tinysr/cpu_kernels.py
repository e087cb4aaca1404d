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

    # The kernels below serve tinysr.fused_predict. Each does exactly the float operations of the
    # NumPy code it replaces, in the same order, so both give bit-identical results; they exist
    # because NumPy's version of these two steps is slow here (the unfold copies runs of 9 floats;
    # bias + ReLU makes two passes at a few GB/s). Placing z and the tap sum stay NumPy, which
    # measured faster than numba loops for them. The kernels are serial on purpose:
    # a numba thread pool between the GEMMs fights OpenBLAS's spinning threads for the cores
    # (measured: 8 s instead of 0.3 s for a 1920x1080 image on 2 cores).

    @_cached_njit(numba, nogil=True)
    def unfold_rows_kernel(ypad, r0, f, cols):
        # cols (r*w, f*f) <- the f x f window of ypad at rows r0.., one pixel per row of cols.
        n, _ = cols.shape
        w = ypad.shape[1] - f + 1
        for i in range(n // w):
            for j in range(w):
                for a in range(f):
                    for b in range(f):
                        cols[i * w + j, a * f + b] = ypad[r0 + i + a, j + b]

    @_cached_njit(numba, nogil=True)
    def bias_relu_kernel(act, bias):
        # act (n, c) <- maximum(act + bias, 0), in place (the add, then the max: as NumPy does).
        n, c = act.shape
        for i in range(n):
            for k in range(c):
                v = act[i, k] + bias[k]
                act[i, k] = v if v >= 0 else 0.0  # NumPy's maximum(v, 0) for finite v

    return {"col2im": col2im_kernel, "unfold_rows": unfold_rows_kernel, "bias_relu": bias_relu_kernel}


def fused_kernels() -> dict:
    """The numba kernels of :mod:`tinysr.fused_predict` (compiled on first use, cached on disk)."""
    return _kernels()


def col2im_numba(cols6: np.ndarray, hp: int, wp: int) -> np.ndarray:
    """Fold ``cols6`` ``(N, C, kh, kw, Ho, Wo)`` into a new ``(N, C, Hp, Wp)`` array."""
    n, c = cols6.shape[:2]
    out = np.zeros((n, c, hp, wp), dtype=cols6.dtype)
    _kernels()["col2im"](np.ascontiguousarray(cols6), out)
    return out
