"""Tests for the Matlab-exact bicubic imresize (values derived by hand from the kernel)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinysr.protocol.imresize import contributions, cubic, imresize

# Enlarging n=2 -> 4 (scale 2): u = x/2 + 1/4 for x = 1..4. For x = 1, u = 0.75, taps -1..2
# (1-based) at distances 1.75, 0.75, -0.25, -1.25: cubic = -0.0234375, 0.2265625, 0.8671875,
# -0.0703125; mirrored taps -1 -> 2, 0 -> 1. So out1 = 1.09375 v1 - 0.09375 v2, and
# out2 = 0.796875 v1 + 0.203125 v2 (x = 2, u = 1.25); out3, out4 mirror these.
R2 = np.array(
    [[1.09375, -0.09375], [0.796875, 0.203125], [0.203125, 0.796875], [-0.09375, 1.09375]]
)


def test_cubic_kernel_values():
    x = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.75])
    expected = [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0, 0.2265625]
    np.testing.assert_array_equal(cubic(x), expected)


def test_enlarge_two_pixels_1d():
    out = imresize(np.array([[0.0, 1.0]]), (1, 2))
    np.testing.assert_allclose(out, [[-0.09375, 0.203125, 0.796875, 1.09375]], rtol=0, atol=1e-15)


def test_enlarge_2x2_to_4x4_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    out = imresize(a, 2)
    assert out.shape == (4, 4)
    assert out[0, 0] == pytest.approx(1.09375**2, abs=1e-15)  # 1.1962890625
    assert out[1, 2] == pytest.approx(0.796875 * 0.203125, abs=1e-15)  # 0.161865234375
    np.testing.assert_allclose(out, R2 @ a @ R2.T, rtol=0, atol=1e-14)
    b = np.array([[0.2, 0.9], [0.4, 0.1]])
    np.testing.assert_allclose(imresize(b, 2), R2 @ b @ R2.T, rtol=0, atol=1e-14)


def test_shrink_ramp_by_half_by_hand():
    # n=4 -> 2, s=1/2: kernel 0.5*cubic(x/2), width 8. For x = 1, u = 1.5 and the weights on the
    # mirrored taps 3,2,1,1,2,3,4,4 give out1 = 0.546875 v1 + 0.3984375 v2 + 0.1015625 v3
    # - 0.046875 v4 = 0.4609375 for the ramp 0,1,2,3; out2 mirrors it: 3 - 0.4609375.
    out = imresize(np.array([[0.0, 1.0, 2.0, 3.0]]), (1, 0.5))
    np.testing.assert_allclose(out, [[0.4609375, 2.5390625]], rtol=0, atol=1e-14)
    w, idx = contributions(4, 2, 0.5)
    assert w.shape == (2, 8)  # 10 taps, the two all-zero columns dropped
    np.testing.assert_array_equal(idx[0], [2, 1, 0, 0, 1, 2, 3, 3])
    half = [-0.0234375, -0.0703125, 0.2265625, 0.8671875]
    np.testing.assert_allclose(w[0], 0.5 * np.array(half + half[::-1]), rtol=0, atol=1e-15)


def test_enlarge_ramp_interior_is_linear():
    # Keys' cubic reproduces linear functions exactly, so away from the mirrored border the
    # enlarged ramp equals the ramp sampled at u - 1 (0-based positions of the output pixels).
    n, s = 20, 3
    out = imresize(np.arange(n, dtype=np.float64)[None, :], (1, s))[0]
    x = np.arange(1, n * s + 1)
    u = x / s + 0.5 * (1 - 1 / s)
    interior = (u - 3 >= 1) & (u + 3 <= n)
    assert interior.sum() >= 40
    np.testing.assert_allclose(out[interior], (u - 1)[interior], atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 3, 1 / 2.5, 0.5, 0.77, 1.0, 1.3, 2, 3, 4])
def test_constant_stays_constant(scale):
    for shape in [(17, 23), (30, 30, 3), (5, 8)]:
        img = np.full(shape, 0.37)
        out = imresize(img, scale)
        assert out.shape[:2] == (math.ceil(scale * shape[0]), math.ceil(scale * shape[1]))
        assert out.shape[2:] == shape[2:]
        np.testing.assert_allclose(out, 0.37, rtol=0, atol=1e-13)
    u8 = np.full((19, 21), 200, dtype=np.uint8)
    np.testing.assert_array_equal(imresize(u8, scale), 200)


@pytest.mark.parametrize("scale", [1 / 3, 1 / 2.5, 0.5, 0.3, 0.9])
def test_antialias_weights_sum_to_one(scale):
    n = 37
    m = math.ceil(scale * n)
    w, idx = contributions(n, m, scale)
    assert w.shape[0] == m
    assert w.shape[1] <= math.ceil(4 / scale) + 2
    assert w.shape[1] > 4  # wider than the 4 non-zero taps of the plain cubic
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert idx.min() >= 0 and idx.max() < n
    assert np.all(np.any(w != 0, axis=0))  # zero columns dropped


def test_output_sizes_follow_ceil():
    img = np.zeros((10, 7))
    assert imresize(img, 1 / 3).shape == (4, 3)
    assert imresize(img, 2.5).shape == (25, 18)
    assert imresize(img, (0.5, 3)).shape == (5, 21)
    assert imresize(img, output_shape=(13, 4)).shape == (13, 4)


def test_output_shape_equals_scale_when_consistent():
    rng = np.random.default_rng(0)
    img = rng.random((12, 9))
    np.testing.assert_array_equal(imresize(img, 3), imresize(img, output_shape=(36, 27)))
    np.testing.assert_array_equal(imresize(img, (2, 1 / 3)), imresize(img, output_shape=(24, 3)))


def test_smaller_scale_axis_first():
    # uint8 rounds after each axis pass, so the pass order is visible; (scale_rows > scale_cols)
    # means columns first. Compare with a manual per-axis computation.
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (9, 12), dtype=np.uint8)

    def axis_pass(a, axis, s):
        n = a.shape[axis]
        w, idx = contributions(n, math.ceil(s * n), s)
        moved = np.moveaxis(a.astype(np.float64), axis, 0)
        out = np.einsum("ok,okj->oj", w, moved[idx])
        r = np.where(out >= 0, np.floor(out + 0.5), np.ceil(out - 0.5))
        return np.moveaxis(np.clip(r, 0, 255), 0, axis)

    cols_first = axis_pass(axis_pass(img, 1, 0.5), 0, 2)
    np.testing.assert_array_equal(imresize(img, (2, 0.5)), cols_first.astype(np.uint8))
    rows_first = axis_pass(axis_pass(img, 0, 0.5), 1, 2)
    np.testing.assert_array_equal(imresize(img, (0.5, 2)), rows_first.astype(np.uint8))


def test_matches_loop_reference_on_random_image():
    """Vectorised result equals a plain per-pixel loop over Matlab's formulas (float)."""
    rng = np.random.default_rng(2)
    img = rng.random((7, 11, 2))

    def ref_axis(v, m, s):  # v: 1-D, Matlab formulas written out per output pixel
        n = len(v)
        h = (lambda t: s * cubic(s * t)) if s < 1 else cubic
        width = 4 / s if s < 1 else 4
        out = np.zeros(m)
        for x in range(1, m + 1):
            u = x / s + 0.5 * (1 - 1 / s)
            left = math.floor(u - width / 2)
            taps = [left + k for k in range(math.ceil(width) + 2)]
            ws = np.array([float(h(u - t)) for t in taps])
            ws /= ws.sum()
            for wt, t in zip(ws, taps):
                j = (t - 1) % (2 * n)
                j = j if j < n else 2 * n - 1 - j
                out[x - 1] += wt * v[j]
        return out

    for s in (1 / 3, 2.5):
        m0, m1 = math.ceil(s * 7), math.ceil(s * 11)
        expected = np.empty((m0, m1, 2))
        for c in range(2):
            tmp = np.stack([ref_axis(img[:, j, c], m0, s) for j in range(11)], axis=1)
            expected[:, :, c] = np.stack([ref_axis(tmp[i], m1, s) for i in range(m0)])
        np.testing.assert_allclose(imresize(img, s), expected, rtol=0, atol=1e-12)


def test_uint8_rounds_half_away_from_zero_and_saturates():
    # [0, 32] enlarged by 2 along columns: exact values -3, 6.5, 25.5, 35 (see R2).
    out = imresize(np.array([[0, 32]], dtype=np.uint8), (1, 2))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 7, 26, 35]])  # half-even would give 6 for 6.5
    out_f = imresize(np.array([[0.0, 32.0]]), (1, 2))
    np.testing.assert_allclose(out_f, [[-3, 6.5, 25.5, 35]], atol=1e-13)
    high = imresize(np.array([[255, 0]], dtype=np.uint8), (1, 2))
    assert high[0, 0] == 255  # 1.09375 * 255 saturates


def test_float_dtype_and_no_clipping():
    out = imresize(np.array([[0.0, 1.0]], dtype=np.float32), (1, 2))
    assert out.dtype == np.float64
    assert out.min() < 0 and out.max() > 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(img=np.zeros((0, 5)), scale=2), "empty"),
        (dict(img=np.zeros(5), scale=2), "ndim"),
        (dict(img=np.zeros((2, 2, 2, 2)), scale=2), "ndim"),
        (dict(img=np.zeros((4, 4)), scale=0), "positive"),
        (dict(img=np.zeros((4, 4)), scale=-1.5), "positive"),
        (dict(img=np.zeros((4, 4)), scale=(1, 0)), "positive"),
        (dict(img=np.zeros((4, 4)), scale=float("nan")), "positive"),
        (dict(img=np.zeros((4, 4)), output_shape=(0, 3)), "output_shape"),
        (dict(img=np.zeros((4, 4))), "exactly one"),
        (dict(img=np.zeros((4, 4)), scale=2, output_shape=(8, 8)), "exactly one"),
        (dict(img=np.zeros((4, 4), dtype=np.int32), scale=2), "dtype"),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        imresize(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    s0=st.floats(0.15, 4.0),
    s1=st.floats(0.15, 4.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_sizes_and_bounded_overshoot(h, w, s0, s1, seed):
    img = np.random.default_rng(seed).random((h, w))
    out = imresize(img, (s0, s1))
    assert out.shape == (math.ceil(s0 * h), math.ceil(s1 * w))
    assert np.all(np.isfinite(out))
    # Each 1-D pass is an affine combination whose negative weights sum to at most n_neg
    # (checked below), so a pass can leave the input range by at most n_neg * range on each
    # side; two passes give at most n_neg*(2 + 2*n_neg) * range (< 0.5 * range for n_neg < 0.2).
    negs = []
    for n, m, s in ((h, out.shape[0], s0), (w, out.shape[1], s1)):
        wts, _ = contributions(n, m, s)
        negs.append(np.clip(-wts, 0, None).sum(axis=1).max())
    assert max(negs) < 0.2
    lo, hi = img.min(), img.max()
    slack = 0.5 * (hi - lo) + 1e-12
    assert out.min() >= lo - slack and out.max() <= hi + slack
    const = imresize(np.full((h, w), 0.6), (s0, s1))
    np.testing.assert_allclose(const, 0.6, atol=1e-12)


def test_blockwise_accumulation_matches_single_block(monkeypatch):
    import tinysr.protocol.imresize as mod

    rng = np.random.default_rng(5)
    img = rng.random((23, 31, 2))
    u8 = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    whole = [imresize(img, s) for s in (1 / 3, 2.5)] + [imresize(u8, (0.5, 3))]
    monkeypatch.setattr(mod, "_BLOCK_ELEMENTS", 7)  # forces many small blocks
    blocked = [imresize(img, s) for s in (1 / 3, 2.5)] + [imresize(u8, (0.5, 3))]
    for w, b in zip(whole, blocked):
        np.testing.assert_array_equal(w, b)
