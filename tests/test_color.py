"""Tests for the Matlab BT.601 (studio swing) colour conversions."""

from __future__ import annotations

import numpy as np
import pytest

from tinysr.protocol.color import rgb2y, rgb2ycbcr, ycbcr2rgb


def _px(*rgb):
    return np.array([[list(rgb)]], dtype=np.uint8)


def test_known_uint8_values():
    # Matlab: rgb2ycbcr(uint8([255 255 255])) = [235 128 128], black = [16 128 128],
    # red = [81 90 240] (16 + 65.481 = 81.481; 128 - 37.797 = 90.203; 128 + 112 = 240).
    np.testing.assert_array_equal(rgb2ycbcr(_px(255, 255, 255))[0, 0], [235, 128, 128])
    np.testing.assert_array_equal(rgb2ycbcr(_px(0, 0, 0))[0, 0], [16, 128, 128])
    np.testing.assert_array_equal(rgb2ycbcr(_px(255, 0, 0))[0, 0], [81, 90, 240])
    np.testing.assert_array_equal(rgb2ycbcr(_px(0, 0, 255))[0, 0], [41, 240, 110])
    assert rgb2ycbcr(_px(1, 2, 3)).dtype == np.uint8


def test_y_formula_matches_reference_on_random_image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    r, g, b = (img[..., k].astype(np.float64) for k in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    expected = np.floor(y + 0.5).astype(np.uint8)  # y > 0: half away from zero
    np.testing.assert_array_equal(rgb2y(img), expected)
    np.testing.assert_array_equal(rgb2ycbcr(img)[..., 0], expected)


def test_float_scale_and_values():
    white = np.ones((1, 1, 3))
    np.testing.assert_allclose(rgb2ycbcr(white)[0, 0], [235 / 255, 128 / 255, 128 / 255], atol=1e-12)
    np.testing.assert_allclose(rgb2y(np.zeros((2, 2, 3))), 16 / 255, atol=1e-15)
    assert rgb2y(white).dtype == np.float64 and rgb2y(white).shape == (1, 1)


def test_float_round_trip_is_exact_inverse():
    rng = np.random.default_rng(1)
    img = rng.random((25, 17, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(img)), img, rtol=0, atol=1e-12)
    ycc = rng.random((9, 8, 3))
    np.testing.assert_allclose(rgb2ycbcr(ycbcr2rgb(ycc)), ycc, rtol=0, atol=1e-12)


def test_uint8_round_trip_close():
    # Studio swing squeezes 256 levels into 220 (Y) / 225 (Cb, Cr), so a uint8 round trip can't be
    # lossless: over all 2^24 colours the error is at most 2 levels and > 1 for ~0.35% of them.
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    back = ycbcr2rgb(rgb2ycbcr(img))
    assert back.dtype == np.uint8
    err = np.abs(back.astype(int) - img.astype(int))
    assert err.max() <= 2
    assert np.mean(err.max(axis=-1) > 1) < 0.01
    assert np.mean(err <= 1) > 0.99
    grays = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    assert np.abs(ycbcr2rgb(rgb2ycbcr(grays)).astype(int) - grays).max() <= 1


def test_ycbcr2rgb_uint8_saturates_and_known_values():
    np.testing.assert_array_equal(ycbcr2rgb(_px(235, 128, 128))[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(ycbcr2rgb(_px(16, 128, 128))[0, 0], [0, 0, 0])
    # Y = 255 -> 255 * (255 - 16) / 219 = 278.3 saturates; Y = 0 -> -18.6 saturates to 0.
    np.testing.assert_array_equal(ycbcr2rgb(_px(255, 128, 128))[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(ycbcr2rgb(_px(0, 128, 128))[0, 0], [0, 0, 0])
    np.testing.assert_allclose(ycbcr2rgb(np.full((1, 1, 3), [255.0, 128, 128]) / 255)[0, 0], 239 / 219)


@pytest.mark.parametrize("fn", [rgb2ycbcr, ycbcr2rgb, rgb2y])
def test_bad_shape_raises(fn):
    with pytest.raises(ValueError, match="H, W, 3"):
        fn(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="H, W, 3"):
        fn(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError):
        fn(np.zeros((4, 4, 3), dtype=np.int16))
