"""numba loops for the CPU, where NumPy would need large temporaries.

Nothing here is compiled at import time: ``numba.njit`` compiles on the first call (per dtype),
and the import of numba itself is deferred until a kernel is first used.
"""

from __future__ import annotations

import functools

import numpy as np


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

    return {"col2im": col2im_kernel}


def col2im_numba(cols6: np.ndarray, hp: int, wp: int) -> np.ndarray:
    """Fold ``cols6`` ``(N, C, kh, kw, Ho, Wo)`` into a new ``(N, C, Hp, Wp)`` array."""
    n, c = cols6.shape[:2]
    out = np.zeros((n, c, hp, wp), dtype=cols6.dtype)
    _kernels()["col2im"](np.ascontiguousarray(cols6), out)
    return out
