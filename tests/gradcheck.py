"""Central finite differences and the error measure used by the gradient checks (float64)."""

from __future__ import annotations

import numpy as np


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` in place one element at a time.

    ``f`` maps nothing to a Python float and must read ``x`` (the same array object). ``x`` may
    be a device array (the gradient is then a host array).
    """
    g = np.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = float(flat[i])  # a Python copy: CuPy's flat[i] is a 0-d view, NumPy's a scalar
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def max_relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max |a - n| / max(max |a|, max |n|)``: the worst error relative to the gradient's scale."""
    scale = max(np.abs(analytic).max(), np.abs(numeric).max())
    assert scale > 0, "gradient is identically zero: the check would prove nothing"
    return float(np.abs(analytic - numeric).max() / scale)
