"""Tests for uint8 conversion, cropping, PSNR and SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinysr.protocol.metrics import gaussian_window_1d, modcrop, psnr, shave, ssim, to_uint8_matlab


def test_to_uint8_rounds_half_away_from_zero():
    x = np.array([0.5, 1.5, 2.5, 3.5, 0.49, 254.5]) / 255
    np.testing.assert_array_equal(to_uint8_matlab(x), [1, 2, 3, 4, 0, 255])
    assert to_uint8_matlab(x).dtype == np.uint8
    # NumPy's own rounding is half-to-even and would give 0, 2, 2, 4 for the first four.
    assert list(np.round(np.array([0.5, 1.5, 2.5, 3.5]))) == [0, 2, 2, 4]


def test_to_uint8_saturates():
    np.testing.assert_array_equal(
        to_uint8_matlab(np.array([-0.3, -0.001, 1.0, 1.2, 7.0, np.nan])), [0, 0, 255, 255, 255, 0]
    )
    img = np.random.default_rng(0).random((5, 6))
    assert to_uint8_matlab(img).shape == (5, 6)


def test_modcrop_and_shave():
    a = np.arange(7 * 10).reshape(7, 10)
    assert modcrop(a, 3).shape == (6, 9)
    np.testing.assert_array_equal(modcrop(a, 3), a[:6, :9])
    assert modcrop(np.zeros((7, 10, 3)), 4).shape == (4, 8, 3)
    assert modcrop(a, 1).shape == a.shape
    np.testing.assert_array_equal(shave(a, 2), a[2:5, 2:8])
    assert shave(np.zeros((8, 9, 3)), 3).shape == (2, 3, 3)
    assert shave(a, 0).shape == a.shape
    with pytest.raises(ValueError):
        shave(a, 4)
    with pytest.raises(ValueError):
        modcrop(a, 0)


def test_psnr_hand_cases():
    a = np.zeros((4, 4), dtype=np.uint8)
    b = np.full((4, 4), 255, dtype=np.uint8)
    assert psnr(a, b) == pytest.approx(0.0, abs=1e-12)  # RMSE 255
    c = a.copy()
    c[0, 0] = 4  # MSE = 16/16 = 1 -> 20 log10(255)
    assert psnr(a, c) == pytest.approx(20 * math.log10(255), abs=1e-12)
    d = np.full((4, 4), 10, dtype=np.uint8)  # RMSE 10, no uint8 wrap-around in the difference
    assert psnr(d, a) == pytest.approx(20 * math.log10(25.5), abs=1e-12)
    assert psnr(a, d) == psnr(d, a)
    assert psnr(a, a) == math.inf


def test_ssim_identical_is_one_and_symmetric():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 33), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-15)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    s = ssim(a, b)
    assert 0 < s < 1
    assert ssim(b, a) == pytest.approx(s, abs=1e-15)


def test_ssim_constant_images_hand_value():
    # Constant images: sigma = 0 everywhere, SSIM = (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1).
    a = np.full((11, 11), 100, dtype=np.uint8)
    b = np.full((11, 11), 120, dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_dense_2d_window():
    # Separable filtering equals the dense 11x11 fspecial('gaussian', 11, 1.5) window.
    g = gaussian_window_1d()
    x = np.arange(11) - 5
    w2 = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w2 /= w2.sum()
    np.testing.assert_allclose(np.outer(g, g), w2, rtol=0, atol=1e-16)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (14, 13), dtype=np.uint8).astype(np.float64)
    b = rng.integers(0, 256, (14, 13), dtype=np.uint8).astype(np.float64)

    def filt(img):
        return np.array(
            [[np.sum(w2 * img[i : i + 11, j : j + 11]) for j in range(3)] for i in range(4)]
        )

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m1, m2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - m1**2, filt(b * b) - m2**2, filt(a * b) - m1 * m2
    ref = np.mean(((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1**2 + m2**2 + c1) * (s1 + s2 + c2)))
    assert ssim(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(ref, abs=1e-12)


def test_errors():
    a = np.zeros((20, 20), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(a, np.zeros((20, 21), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(a, np.zeros((21, 20), dtype=np.uint8))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((10, 30), dtype=np.uint8), np.zeros((10, 30), dtype=np.uint8))
