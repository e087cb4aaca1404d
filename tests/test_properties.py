"""Property-based tests (hypothesis): convolution shapes, values and gradients; imresize sizes,
value ranges and windows. Each test draws a modest number of small cases (a few seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from tests.conv_reference import conv2d_loops
from tinysr.nn.layers import Conv2d
from tinysr.ops.shapes import PADDINGS, conv_output_hw, pad_amounts
from tinysr.protocol.imresize import WindowedImresize, contributions, imresize

ALGOS = ("im2col", "output_side")
SEEDS = st.integers(0, 2**32 - 1)
CONV_TOL = 1e-10  # float64 conv against the loop reference, and the adjoint identities (relative)
RESIZE_TOL = 1e-12  # float64 imresize range bound


def _conv_case(n, c, o, h, w, kh, kw, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, kh, kw)), rng.standard_normal(o)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), o=st.integers(1, 3), h=st.integers(1, 8), w=st.integers(1, 8),
       kh=st.integers(1, 5), kw=st.integers(1, 5), padding=st.sampled_from(PADDINGS), algo=st.sampled_from(ALGOS),
       need_input_grad=st.booleans(), seed=SEEDS)
def test_conv_shapes_values_and_gradients(n, c, o, h, w, kh, kw, padding, algo, need_input_grad, seed):
    """Any N, C_in, C_out, H x W and kh x kw (odd or even, non-square) that the padding allows:

    output shape is ``conv_output_hw``; values equal the loop reference; ``backward`` gives
    shapes of the input and the parameters, and (the layer being linear in ``x`` and in ``W``)
    ``<dy, y - b> == <dx, x> == <dW, W>`` and ``db = sum(dy)``.
    """
    tol = CONV_TOL
    x, wt, b = _conv_case(n, c, o, h, w, kh, kw, seed)
    conv = Conv2d(wt, b, need_input_grad=need_input_grad, algo=algo)
    refused = padding == "valid" and (h < kh or w < kw)
    event(f"{padding} {'refused' if refused else 'computed'}")
    if refused:
        with pytest.raises(ValueError, match="smaller than"):
            conv_output_hw(h, w, kh, kw, padding)
        with pytest.raises(ValueError, match="smaller than"):
            conv.forward(x, padding)
        return
    ho, wo = conv_output_hw(h, w, kh, kw, padding)
    y = conv.forward(x, padding)
    assert y.shape == (n, o, ho, wo)
    if padding != "valid":
        assert (ho, wo) == (h, w)
    np.testing.assert_allclose(y, conv2d_loops(x, wt, b, padding), rtol=tol, atol=tol)

    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    dx = conv.backward(dy)
    assert conv.grad_weight.shape == wt.shape and conv.grad_bias.shape == b.shape
    np.testing.assert_allclose(conv.grad_bias, dy.sum(axis=(0, 2, 3)), rtol=tol, atol=tol)
    linear = y - b[None, :, None, None]
    inner = float(np.sum(dy * linear))
    scale = float(np.sum(np.abs(dy * linear))) + 1.0
    assert abs(inner - float(np.sum(conv.grad_weight * wt))) <= tol * scale
    if need_input_grad:
        assert dx.shape == x.shape
        assert abs(inner - float(np.sum(dx * x))) <= tol * scale
    else:
        assert dx is None


@settings(max_examples=40, deadline=None)
@given(data=st.data(), kh=st.integers(1, 7), kw=st.integers(1, 7), padding=st.sampled_from(PADDINGS))
def test_padding_amounts_and_refusal(data, kh, kw, padding):
    """``same`` padding adds ``k - 1`` (the odd one after, for even kernels); ``valid`` refuses a
    smaller input cleanly (``ValueError`` naming both sizes) while ``same`` takes any size."""
    top, bottom, left, right = pad_amounts(kh, kw, padding)
    if padding == "valid":
        assert (top, bottom, left, right) == (0, 0, 0, 0)
    else:
        assert (top + bottom, left + right) == (kh - 1, kw - 1)
        assert (bottom - top, right - left) == ((kh + 1) % 2, (kw + 1) % 2)
    short_rows = data.draw(st.booleans(), label="short rows")
    if short_rows and kh == 1 or not short_rows and kw == 1:
        return  # a 1-pixel kernel axis has no smaller input
    h = data.draw(st.integers(1, kh - 1), label="h") if short_rows else data.draw(st.integers(kh, 9), label="h")
    w = data.draw(st.integers(kw, 9), label="w") if short_rows else data.draw(st.integers(1, kw - 1), label="w")
    x = np.zeros((1, 1, h, w))
    conv = Conv2d(np.ones((1, 1, kh, kw)), np.zeros(1))
    if padding == "valid":
        with pytest.raises(ValueError, match=f"input {h}x{w} is smaller than the {kh}x{kw} kernel"):
            conv.forward(x, padding)
    else:
        assert conv.forward(x, padding).shape == (1, 1, h, w)


def _max_negative_weight(n: int, m: int, s: float) -> float:
    weights, _ = contributions(n, m, s)
    return float(np.clip(-weights, 0, None).sum(axis=1).max())


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), c=st.sampled_from([None, 1, 3]), s=st.sampled_from([2, 3, 4]),
       seed=SEEDS)
def test_imresize_integer_upscale_size_and_range(h, w, c, s, seed):
    """The super-resolution case: a [0, 1] image enlarged by 2, 3 or 4 is ``(s*H, s*W[, C])`` and
    overshoots [0, 1] by at most ``n0 + n1 + 2 n0 n1`` (``n``: the largest sum of negative cubic
    weights of one output pixel, per axis; under 0.15 for these scales); channels are independent."""
    shape = (h, w) if c is None else (h, w, c)
    img = np.random.default_rng(seed).random(shape)
    out = imresize(img, s)
    assert out.shape == (s * h, s * w) + shape[2:]
    n0, n1 = _max_negative_weight(h, s * h, s), _max_negative_weight(w, s * w, s)
    assert max(n0, n1) < 0.15
    eps = n0 + n1 + 2 * n0 * n1
    assert out.min() >= -eps - RESIZE_TOL and out.max() <= 1 + eps + RESIZE_TOL
    if c:
        for k in range(c):
            np.testing.assert_array_equal(out[:, :, k], imresize(img[:, :, k], s))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 25), w=st.integers(1, 25), oh=st.integers(1, 60), ow=st.integers(1, 60), seed=SEEDS)
def test_imresize_uint8_output_shape_and_range(h, w, oh, ow, seed):
    """uint8 in, uint8 out at any requested size (up, down or mixed); a constant image stays
    constant; values stay within what the float result allows after Matlab rounding."""
    img = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    out = imresize(img, output_shape=(oh, ow))
    assert out.shape == (oh, ow) and out.dtype == np.uint8
    np.testing.assert_array_equal(imresize(np.full((h, w), 77, np.uint8), output_shape=(oh, ow)), 77)
    # Per pass the result is an affine combination: it overshoots by at most n * range.
    n0 = _max_negative_weight(h, oh, oh / h)
    n1 = _max_negative_weight(w, ow, ow / w)
    lo, hi = int(img.min()), int(img.max())
    slack = (n0 + n1 + 2 * n0 * n1) * (hi - lo) + 2  # + 1 level of rounding per pass
    assert out.min() >= max(0, lo - slack) and out.max() <= min(255, hi + slack)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), h=st.integers(1, 20), w=st.integers(1, 20),
       scale=st.one_of(st.sampled_from([2.0, 3.0, 4.0]), st.tuples(st.floats(0.2, 4.0), st.floats(0.2, 4.0))),
       dtype=st.sampled_from(["float64", "uint8"]), seed=SEEDS)
def test_windowed_imresize_equals_slice_of_imresize(data, h, w, scale, dtype, seed):
    """Any output rectangle from just its input window equals that slice of the whole imresize, bit for bit."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 2)) if dtype == "float64" else rng.integers(0, 256, (h, w), dtype=np.uint8)
    full = imresize(img, scale)
    wr = WindowedImresize((h, w), scale)
    assert wr.out_hw == full.shape[:2]
    oh, ow = wr.out_hw
    r0 = data.draw(st.integers(0, oh - 1), label="r0")
    r1 = data.draw(st.integers(r0 + 1, oh), label="r1")
    c0 = data.draw(st.integers(0, ow - 1), label="c0")
    c1 = data.draw(st.integers(c0 + 1, ow), label="c1")
    ir0, ir1, ic0, ic1 = wr.input_window(r0, r1, c0, c1)
    note(f"output {r0}:{r1}, {c0}:{c1} <- input {ir0}:{ir1}, {ic0}:{ic1}")
    assert 0 <= ir0 < ir1 <= h and 0 <= ic0 < ic1 <= w
    got = wr.window(img[ir0:ir1, ic0:ic1], r0, r1, c0, c1)
    assert got.dtype == full.dtype
    np.testing.assert_array_equal(got, full[r0:r1, c0:c1])
    assert math.isfinite(float(np.abs(got.astype(np.float64)).max()))
