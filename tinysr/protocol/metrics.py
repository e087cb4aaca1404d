"""Image-quality metrics and the cropping helpers of the SRCNN evaluation protocol.

Everything here follows the authors' Matlab code: ``uint8(x*255)`` conversion (round half away
from zero, saturate), ``modcrop``, ``shave``, ``compute_psnr`` and Wang et al.'s ``ssim_index``.
PSNR and SSIM take uint8 images (0..255) and compute in float64.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["to_uint8_matlab", "modcrop", "shave", "psnr", "ssim", "gaussian_window_1d"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_L = 255.0


def to_uint8_matlab(x: np.ndarray) -> np.ndarray:
    """Matlab ``uint8(x * 255)`` for a float image ``x`` on the [0, 1] scale.

    Rounds half away from zero (not NumPy's half-to-even) and saturates to 0..255; NaN -> 0 as in
    Matlab. Returns a uint8 array of the same shape.
    """
    v = np.asarray(x, dtype=np.float64) * 255.0
    r = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5))
    r = np.nan_to_num(r, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(r, 0, 255).astype(np.uint8)


def modcrop(img: np.ndarray, s: int) -> np.ndarray:
    """Top-left part of ``img`` ((H, W) or (H, W, C)) whose height and width are multiples of ``s``."""
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"modcrop expects a 2-D or 3-D image, got shape {a.shape}")
    s = int(s)
    if s < 1:
        raise ValueError(f"modcrop needs a positive integer modulus, got {s}")
    h, w = a.shape[0] - a.shape[0] % s, a.shape[1] - a.shape[1] % s
    return a[:h, :w, ...]


def shave(img: np.ndarray, b: int) -> np.ndarray:
    """Drop ``b`` pixels from every border of ``img`` ((H, W) or (H, W, C))."""
    a = np.asarray(img)
    b = int(b)
    if b < 0:
        raise ValueError(f"shave border must be >= 0, got {b}")
    if a.ndim < 2 or a.shape[0] <= 2 * b or a.shape[1] <= 2 * b:
        raise ValueError(f"cannot shave {b} pixels from each border of an image of shape {a.shape}")
    if b == 0:
        return a
    return a[b:-b, b:-b, ...]


def _check_pair(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{name}: shape mismatch {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty images")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 (0..255) images of equal shape: ``20 log10(255 / RMSE)``.

    Computed in float64 over all pixels; ``inf`` when the images are identical.
    """
    x, y = _check_pair(a, b, "psnr")
    mse = float(np.mean((x - y) ** 2))
    if mse == 0:
        return math.inf
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is Matlab ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of float64 (H, W) ``img`` with ``outer(g, g)``."""
    n = g.size
    h, w = img.shape
    rows = np.zeros((h - n + 1, w), dtype=np.float64)
    for k in range(n):
        rows += g[k] * img[k : k + h - n + 1, :]
    out = np.zeros((h - n + 1, w - n + 1), dtype=np.float64)
    for k in range(n):
        out += g[k] * rows[:, k : k + w - n + 1]
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. ``ssim_index``) of two uint8 (0..255) grayscale (H, W) images.

    11x11 Gaussian window (sigma 1.5, normalised), K1 = 0.01, K2 = 0.03, L = 255, 'valid'
    filtering, float64; returns the mean of the SSIM map (1.0 for identical images).
    """
    x, y = _check_pair(a, b, "ssim")
    if x.ndim != 2:
        raise ValueError(f"ssim expects 2-D (H, W) images, got shape {x.shape}")
    if x.shape[0] < SSIM_WINDOW or x.shape[1] < SSIM_WINDOW:
        raise ValueError(
            f"ssim: images of shape {x.shape} are smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window"
        )
    g = gaussian_window_1d()
    c1 = (SSIM_K1 * SSIM_L) ** 2
    c2 = (SSIM_K2 * SSIM_L) ** 2
    mu1 = _filter_valid(x, g)
    mu2 = _filter_valid(y, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter_valid(x * x, g) - mu1_sq
    sigma2_sq = _filter_valid(y * y, g) - mu2_sq
    sigma12 = _filter_valid(x * y, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return float(np.mean(ssim_map))
