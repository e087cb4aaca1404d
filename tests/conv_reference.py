"""A plain nested-loop correlation, independent of tinysr's im2col and padding code."""

from __future__ import annotations

import numpy as np


def conv2d_loops(x, w, b, padding):
    """``x`` (N,C,H,W), ``w`` (O,C,kh,kw), ``b`` (O,) -> correlation output, by explicit loops.

    Padding: ``valid``; ``zero`` / ``replicate`` with ``same`` size, centred (extra after for even kernels).
    """
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    if padding == "valid":
        top = left = 0
        ho, wo = h - kh + 1, wd - kw + 1
    else:
        top, left = (kh - 1) // 2, (kw - 1) // 2
        ho, wo = h, wd
    out = np.zeros((n, o, ho, wo), dtype=x.dtype)
    for a in range(n):
        for oc in range(o):
            for r in range(ho):
                for s in range(wo):
                    acc = b[oc]
                    for ic in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                yy, xx = r + i - top, s + j - left
                                if padding == "replicate":
                                    yy, xx = min(max(yy, 0), h - 1), min(max(xx, 0), wd - 1)
                                elif not (0 <= yy < h and 0 <= xx < wd):
                                    continue
                                acc += w[oc, ic, i, j] * x[a, ic, yy, xx]
                    out[a, oc, r, s] = acc
    return out


class ReLU:
    """``y = max(x, 0)`` with its backward ``dy * (x > 0)``: a reference for the layers' fused ReLU."""

    def __init__(self):
        self._mask = None

    def forward(self, x, train: bool = True):
        self._mask = (x > 0) if train else None
        return np.maximum(x, 0)

    def backward(self, dy):
        dx, self._mask = dy * self._mask, None
        return dx
