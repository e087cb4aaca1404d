"""Matlab-exact ``rgb2ycbcr`` / ``ycbcr2rgb`` (ITU-R BT.601, studio swing).

Matlab's definition, with R, G, B in 0..255::

    [Y ]   [ 16]   [ 65.481  128.553   24.966] [R]
    [Cb] = [128] + [-37.797  -74.203  112.000] [G] / 255
    [Cr]   [128]   [112.000  -93.786  -18.214] [B]

so Y is in 16..235 and Cb, Cr in 16..240 (on the 0..255 scale).

* uint8 images (0..255) give uint8 results, computed in float64 and converted like Matlab's
  ``imlincomb``: round half away from zero, saturate to 0..255.
* float images use the [0, 1] scale on both sides (e.g. white (1, 1, 1) -> Y = 235/255) and are
  not rounded or clipped.

``ycbcr2rgb`` uses the exact matrix inverse (as Matlab does), so the float round trip is exact
to rounding error; the uint8 round trip is within one level.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rgb2ycbcr", "ycbcr2rgb", "rgb2y"]

_T = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_TINV = np.linalg.inv(_T)


def _round_saturate_uint8(x: np.ndarray) -> np.ndarray:
    """float64 -> uint8 as Matlab: round half away from zero, then saturate to 0..255."""
    r = np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))
    return np.clip(r, 0, 255).astype(np.uint8)


def _check_rgb(img: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name} expects an (H, W, 3) image, got shape {a.shape}")
    if not (a.dtype == np.uint8 or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} supports uint8 (0..255) or float ([0, 1]) images, got {a.dtype}")
    return a


def _lincomb(a: np.ndarray, t: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``out[..., p] = t[p,0]*a0 + t[p,1]*a1 + t[p,2]*a2 + offset[p]`` in float64 (imlincomb order)."""
    a = a.astype(np.float64)
    out = np.empty(a.shape, dtype=np.float64)
    for p in range(3):
        out[..., p] = t[p, 0] * a[..., 0] + t[p, 1] * a[..., 1] + t[p, 2] * a[..., 2] + offset[p]
    return out


def rgb2ycbcr(img: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` -> YCbCr ``(H, W, 3)`` exactly as Matlab ``rgb2ycbcr``.

    uint8 in (0..255) -> uint8 out (Y 16..235, Cb/Cr 16..240); float in ([0, 1]) -> float64 out
    on the [0, 1] scale (Y = Y_255 / 255), unrounded.
    """
    a = _check_rgb(img, "rgb2ycbcr")
    if a.dtype == np.uint8:
        return _round_saturate_uint8(_lincomb(a, _T / 255, _OFFSET))
    return _lincomb(a, _T / 255, _OFFSET / 255)


def ycbcr2rgb(img: np.ndarray) -> np.ndarray:
    """YCbCr ``(H, W, 3)`` -> RGB ``(H, W, 3)`` exactly as Matlab ``ycbcr2rgb`` (matrix inverse).

    uint8 in (0..255) -> uint8 out (rounded half away from zero, saturated); float in ([0, 1]
    scale) -> float64 RGB on [0, 1] scale, unrounded and unclipped.
    """
    a = _check_rgb(img, "ycbcr2rgb")
    if a.dtype == np.uint8:
        return _round_saturate_uint8(_lincomb(a, 255 * _TINV, -(255 * _TINV @ _OFFSET)))
    return _lincomb(a, 255 * _TINV, -(_TINV @ _OFFSET))


def rgb2y(img: np.ndarray) -> np.ndarray:
    """Y channel ``(H, W)`` of Matlab ``rgb2ycbcr(img)``: uint8 for uint8 input, float64 [0, 1] otherwise."""
    a = _check_rgb(img, "rgb2y")
    t = _T[0] / 255
    f = a.astype(np.float64)
    if a.dtype == np.uint8:
        return _round_saturate_uint8(t[0] * f[..., 0] + t[1] * f[..., 1] + t[2] * f[..., 2] + 16.0)
    return t[0] * f[..., 0] + t[1] * f[..., 1] + t[2] * f[..., 2] + 16.0 / 255
