"""Padding of NCHW arrays and its adjoint, for NumPy and CuPy alike (the array module is the input's)."""

from __future__ import annotations

from tinysr.ops.backend import get_array_module
from tinysr.ops.shapes import check_padding


def pad(x, amounts: tuple[int, int, int, int], padding: str):
    """Pad ``x`` ``(N, C, H, W)`` by ``(top, bottom, left, right)``.

    ``padding`` is ``"zero"`` (constant 0) or ``"replicate"`` (edge); ``"valid"`` or all-zero
    amounts return ``x`` itself (no copy).
    """
    check_padding(padding)
    t, b, l, r = amounts
    if padding == "valid" or not any(amounts):
        return x
    xp = get_array_module(x)
    mode = "constant" if padding == "zero" else "edge"
    return xp.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=mode)


def pad_backward(dxp, amounts: tuple[int, int, int, int], padding: str):
    """Adjoint of :func:`pad`: gradient w.r.t. the unpadded input, ``(N, C, H, W)``.

    Zero padding drops the border gradient. Replicate padding adds every padded row/column's
    gradient onto the edge row/column it copied.
    """
    check_padding(padding)
    t, b, l, r = amounts
    if padding == "valid" or not any(amounts):
        return dxp
    hp, wp = dxp.shape[2], dxp.shape[3]
    h, w = hp - t - b, wp - l - r
    dx = dxp[:, :, t:t + h, l:l + w]
    if padding == "zero":
        return dx.copy()
    xp = get_array_module(dxp)
    # Rows first on the full width, then columns on the folded rows.
    rows = dxp[:, :, t:t + h, :].copy()
    if t:
        rows[:, :, 0, :] += dxp[:, :, :t, :].sum(axis=2)
    if b:
        rows[:, :, h - 1, :] += dxp[:, :, t + h:, :].sum(axis=2)
    dx = xp.ascontiguousarray(rows[:, :, :, l:l + w])
    if l:
        dx[:, :, :, 0] += rows[:, :, :, :l].sum(axis=3)
    if r:
        dx[:, :, :, w - 1] += rows[:, :, :, l + w:].sum(axis=3)
    return dx
