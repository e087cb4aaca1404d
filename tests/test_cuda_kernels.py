"""The raw CUDA kernels (tinysr.ops.cuda_kernels) against the NumPy reference; GPU only.

Tolerances: relative to the reference's largest magnitude, 1e-4 for float32 and 1e-10 for
float64. col2im is checked bit for bit (it adds the taps in the CPU fold's order), and the
reductions are checked for run-to-run determinism.
"""

import numpy as np
import pytest

from tinysr.nn.layers import Conv2d, MSELoss
from tinysr.ops import cuda_kernels as ck
from tinysr.ops.primitives_cpu import col2im, im2col
from tests.conv_reference import ReLU


DTYPES = [pytest.param(np.float32, 1e-4, id="f32"), pytest.param(np.float64, 1e-10, id="f64")]


def assert_close(got, want, tol):
    """``got`` (device or host) matches ``want`` (host) to ``tol`` relative to ``max|want|``."""
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.all(np.isfinite(got)), "kernel left non-finite values (unwritten output?)"
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ------------------------------------------------------------------------------------------ the direct conv

DIRECT_CASES = [
    pytest.param((3, 37, 29), (64, 9, 9), id="srcnn-9x9"),
    pytest.param((2, 18, 21), (20, 4, 5), id="20ch-4x5"),  # channels not a multiple of 16, even kh
    pytest.param((1, 11, 11), (16, 11, 11), id="11x11-max"),
    pytest.param((1, 50, 75), (24, 9, 9), id="tiles-3x4"),  # partial 32 x 16 tiles on both axes
]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("padding", ["valid", "replicate", "zero"])
@pytest.mark.parametrize("xshape,wshape", DIRECT_CASES)
def test_direct_forward_matches_conv2d(cupy, xshape, wshape, padding, relu, dtype, tol):
    rng = np.random.default_rng(0)
    n, h, w = xshape
    o, kh, kw = wshape
    x = rng.random((n, 1, h, w)).astype(dtype)
    weight, bias = rand(rng, (o, 1, kh, kw), dtype, 0.1), rand(rng, (o,), dtype, 0.1)
    want = Conv2d(weight, bias).forward(x, padding, train=False)
    if relu:
        want = ReLU().forward(want, train=False)
    got = ck.direct_forward(cupy.asarray(x), cupy.asarray(weight), cupy.asarray(bias), padding, relu)
    assert_close(got, want, tol)


def test_direct_forward_many_jobs_grid_stride(cupy, monkeypatch):
    """More (image, channel group) jobs than grid.z: blocks loop over them."""
    monkeypatch.setattr(ck, "_MAX_GRID_YZ", 3)
    rng = np.random.default_rng(1)
    x = rng.random((5, 1, 20, 17)).astype(np.float32)
    weight, bias = rand(rng, (40, 1, 9, 9), np.float32, 0.1), rand(rng, (40,), np.float32, 0.1)
    want = np.maximum(Conv2d(weight, bias).forward(x, "replicate", train=False), 0)
    got = ck.direct_forward(cupy.asarray(x), cupy.asarray(weight), cupy.asarray(bias), "replicate", True)
    assert_close(got, want, 1e-4)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "replicate", "zero"])
@pytest.mark.parametrize("xshape,wshape", DIRECT_CASES[:2])
def test_direct_param_grads_match_conv2d(cupy, xshape, wshape, padding, dtype, tol):
    rng = np.random.default_rng(2)
    n, h, w = xshape
    o, kh, kw = wshape
    x = rng.random((n, 1, h, w)).astype(dtype)
    weight, bias = rand(rng, (o, 1, kh, kw), dtype, 0.1), rand(rng, (o,), dtype, 0.1)
    conv = Conv2d(weight, bias, need_input_grad=False)
    y = conv.forward(x, padding)
    dy = rand(rng, y.shape, dtype)
    conv.backward(dy)
    dw, db = ck.direct_backward_params(cupy.asarray(x), cupy.asarray(dy), kh, kw, padding)
    assert_close(dw, conv.grad_weight, tol)
    assert_close(db, conv.grad_bias, tol)


def test_direct_param_grads_deterministic(cupy):
    rng = np.random.default_rng(3)
    x = cupy.asarray(rng.random((8, 1, 33, 33)).astype(np.float32))
    dy = cupy.asarray(rand(rng, (8, 64, 25, 25), np.float32))
    first = [a.get() for a in ck.direct_backward_params(x, dy, 9, 9, "valid")]
    second = [a.get() for a in ck.direct_backward_params(x, dy, 9, 9, "valid")]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("padding", ["valid", "replicate", "zero"])
def test_direct_param_grads_many_tiles_and_few_slots(cupy, monkeypatch, padding):
    """Rows wider than one gradient tile, 11x11 taps (all 128 threads busy), 20 channels (a part
    group), and fewer partial-sum slots than tiles (each block adds several tiles in turn)."""
    monkeypatch.setattr(ck, "_DIRECT_GRAD_MAX_SLOTS", 3)
    rng = np.random.default_rng(13)
    x = rng.random((2, 1, 14, 150))
    weight, bias = rand(rng, (20, 1, 11, 11), np.float64, 0.1), rand(rng, (20,), np.float64, 0.1)
    conv = Conv2d(weight, bias, need_input_grad=False)
    dy = rand(rng, conv.forward(x, padding).shape, np.float64)
    conv.backward(dy)
    assert ck.direct_grad_tiles(*dy.shape[2:]) == (1, 128)  # two column tiles per output row
    dw, db = ck.direct_backward_params(cupy.asarray(x), cupy.asarray(dy), 11, 11, padding)
    assert_close(dw, conv.grad_weight, 1e-10)
    assert_close(db, conv.grad_bias, 1e-10)


@pytest.mark.parametrize("xshape,k", [
    pytest.param((1, 80, 2), (11, 1), id="narrow-tall-unpadded-pitch"),  # 64 x 2 tiles: padded rows do not fit
    pytest.param((3, 30, 40), (9, 9), id="padded-pitch"),
])
def test_direct_param_grads_tile_pitch(cupy, xshape, k):
    rng = np.random.default_rng(16)
    x = rng.random((xshape[0], 1, *xshape[1:]))
    weight, bias = rand(rng, (17, 1, *k), np.float64, 0.1), rand(rng, (17,), np.float64, 0.1)
    conv = Conv2d(weight, bias, need_input_grad=False)
    dy = rand(rng, conv.forward(x, "valid").shape, np.float64)
    conv.backward(dy)
    dw, db = ck.direct_backward_params(cupy.asarray(x), cupy.asarray(dy), *k, "valid")
    assert_close(dw, conv.grad_weight, 1e-10)
    assert_close(db, conv.grad_bias, 1e-10)


@pytest.mark.parametrize("padding", ["valid", "replicate", "zero"])
def test_direct_param_grads_match_finite_differences(cupy, padding):
    """float64 central differences of <direct_forward(x, w, b), g> for a random upstream g, on a
    small non-square case, against the gradient kernels."""
    from .gradcheck import max_relative_error, numerical_grad  # noqa: PLC0415

    rng = np.random.default_rng(14)
    x = cupy.asarray(rng.random((2, 1, 9, 7)))
    w, b = cupy.asarray(rand(rng, (5, 1, 3, 5), np.float64)), cupy.asarray(rand(rng, (5,), np.float64))
    g = cupy.asarray(rand(rng, ck.direct_forward(x, w, b, padding).shape, np.float64))

    def f():
        return float((ck.direct_forward(x, w, b, padding) * g).sum())

    dw, db = ck.direct_backward_params(x, g, 3, 5, padding)
    assert max_relative_error(dw.get(), numerical_grad(f, w)) < 1e-7
    assert max_relative_error(db.get(), numerical_grad(f, b)) < 1e-7


# ------------------------------------------------------------------------------------ elementwise

@pytest.mark.parametrize("width", ["", "_i64"], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_bias_relu_inplace(cupy, monkeypatch, dtype, tol, width):
    monkeypatch.setattr(ck, "_index_width", lambda *_: width)  # "": the 32-bit kernel, as sizes allow
    rng = np.random.default_rng(4)
    y, b = rand(rng, (3, 7, 5, 6), dtype), rand(rng, (7,), dtype)
    want = np.maximum(y + b[None, :, None, None], 0)
    yd = cupy.asarray(y)
    out = ck.bias_relu_(yd, cupy.asarray(b))
    assert out is yd
    assert_close(yd, want, tol)
    # (N, C, P) layout as well
    y3 = rand(rng, (2, 4, 9), dtype)
    b3 = rand(rng, (4,), dtype)
    y3d = cupy.asarray(y3)
    ck.bias_relu_(y3d, cupy.asarray(b3))
    assert_close(y3d, np.maximum(y3 + b3[None, :, None], 0), tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_relu_backward_matches_relu_layer(cupy, dtype, tol):
    rng = np.random.default_rng(5)
    pre, dy = rand(rng, (4, 8, 7, 5), dtype), rand(rng, (4, 8, 7, 5), dtype)
    layer = ReLU()
    y = layer.forward(pre)
    want = layer.backward(dy)
    got = ck.relu_backward(cupy.asarray(dy), cupy.asarray(y))
    assert_close(got, want, tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(16, 1, 21, 21), (8, 1, 300, 120)], ids=["train-batch", "many-blocks"])
def test_mse_loss_grad_matches_mseloss(cupy, shape, dtype, tol):
    rng = np.random.default_rng(6)
    pred, target = rng.random(shape).astype(dtype), rng.random(shape).astype(dtype)
    loss_fn = MSELoss()
    want_loss = loss_fn.forward(pred, target)
    want_grad = loss_fn.backward()
    loss, grad = ck.mse_loss_grad(cupy.asarray(pred), cupy.asarray(target))
    assert loss.shape == () and loss.dtype == dtype
    assert_close(loss, np.asarray(want_loss, dtype=dtype), tol)
    assert_close(grad, want_grad, tol)


def test_mse_loss_deterministic_and_grid_stride(cupy, monkeypatch):
    rng = np.random.default_rng(7)
    pred = cupy.asarray(rng.random((64, 1, 21, 21)).astype(np.float32))
    target = cupy.asarray(rng.random((64, 1, 21, 21)).astype(np.float32))
    first = ck.mse_loss_grad(pred, target)[0].get()
    second = ck.mse_loss_grad(pred, target)[0].get()
    np.testing.assert_array_equal(first, second)
    monkeypatch.setattr(ck, "_MSE_MAX_BLOCKS", 3)  # few blocks: each thread loops over many elements
    want = MSELoss().forward(pred.get(), target.get())
    assert_close(ck.mse_loss_grad(pred, target)[0], np.asarray(want, dtype=np.float32), 1e-4)


# -------------------------------------------------------------------------------- im2col / col2im

IM2COL_CASES = [
    pytest.param((2, 3, 11, 8), (5, 3), id="5x3"),
    pytest.param((1, 4, 7, 13), (3, 4), id="3x4"),
    pytest.param((2, 2, 6, 5), (1, 1), id="1x1"),
    pytest.param((3, 64, 29, 25), (9, 9), id="9x9"),
]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape,k", IM2COL_CASES)
def test_im2col_matches_cpu(cupy, shape, k, dtype, tol):
    rng = np.random.default_rng(10)
    x = rand(rng, shape, dtype)
    got = ck.im2col_gpu(cupy.asarray(x), *k)
    want = im2col(x, *k)
    assert_close(got, np.ascontiguousarray(want), tol)
    np.testing.assert_array_equal(got.get(), want)  # a pure gather: exact


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape,k", IM2COL_CASES)
def test_col2im_matches_cpu_fold(cupy, shape, k, dtype, tol):
    rng = np.random.default_rng(11)
    n, c, hp, wp = shape
    kh, kw = k
    cols = rand(rng, (n, c * kh * kw, (hp - kh + 1) * (wp - kw + 1)), dtype)
    want = col2im(cols, shape, kh, kw)
    got = ck.col2im_gpu(cupy.asarray(cols), shape, kh, kw)
    assert_close(got, want, tol)
    # Same taps added in the same order (i then j) as the CPU fold: identical bits.
    np.testing.assert_array_equal(got.get(), want)


@pytest.mark.parametrize("width", ["", "_i64"], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape,k", IM2COL_CASES)
def test_rows_outermost_layout_and_64bit_kernels(cupy, monkeypatch, shape, k, dtype, tol, width):
    """layout="knp" holds im2col's values as (C*kh*kw, N, P) and folds them back bit for bit;
    the 64-bit-index kernels (chosen for arrays past 2^31 elements) give the same bits."""
    monkeypatch.setattr(ck, "_index_width", lambda *_: width)
    rng = np.random.default_rng(15)
    x = rand(rng, shape, dtype)
    n, c, hp, wp = shape
    kh, kw = k
    want = im2col(x, kh, kw)
    np.testing.assert_array_equal(ck.im2col_gpu(cupy.asarray(x), kh, kw).get(), want)
    np.testing.assert_array_equal(ck.im2col_gpu(cupy.asarray(x), kh, kw, layout="knp").get(),
                                  want.transpose(1, 0, 2))
    cols = rand(rng, want.shape, dtype)
    folded = col2im(cols, shape, kh, kw)
    np.testing.assert_array_equal(ck.col2im_gpu(cupy.asarray(cols), shape, kh, kw).get(), folded)
    knp = cupy.asarray(np.ascontiguousarray(cols.transpose(1, 0, 2)))
    np.testing.assert_array_equal(ck.col2im_gpu(knp, shape, kh, kw, layout="knp").get(), folded)


def test_index_width_switches_at_int32():
    assert ck._index_width(2**31 - 1 - 256 * 4, 4, 256) == ""
    assert ck._index_width(2**31 - 256 * 4, 4, 256) == "_i64"


def test_col2im_deterministic_and_grid_stride(cupy, monkeypatch):
    rng = np.random.default_rng(12)
    shape, kh, kw = (4, 32, 25, 23), 5, 5
    cols = cupy.asarray(rand(rng, (4, 32 * 25, 21 * 19), np.float32))
    first = ck.col2im_gpu(cols, shape, kh, kw).get()
    second = ck.col2im_gpu(cols, shape, kh, kw).get()
    np.testing.assert_array_equal(first, second)
    monkeypatch.setattr(ck, "_MAX_GRID_X", 2)  # 512 threads loop over every pixel
    np.testing.assert_array_equal(ck.col2im_gpu(cols, shape, kh, kw).get(), first)
    x = cupy.asarray(rand(rng, shape, np.float32))
    np.testing.assert_array_equal(ck.im2col_gpu(x, kh, kw).get(), im2col(x.get(), kh, kw))


# ------------------------------------------------------------------------------ argument checks

def test_wrappers_reject_bad_arguments(cupy):
    x32 = cupy.asarray(np.zeros((1, 1, 12, 12), np.float32))
    w32 = cupy.asarray(np.zeros((4, 1, 3, 3), np.float32))
    b64 = cupy.asarray(np.zeros(4, np.float64))
    with pytest.raises(TypeError, match="float64"):
        ck.direct_forward(x32, w32, b64)
    with pytest.raises(TypeError, match="CuPy"):
        ck.direct_forward(x32.get(), w32, b64.astype(np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        ck.relu_backward(x32.astype(np.float16), x32.astype(np.float16))
    with pytest.raises(ValueError, match="C-contiguous"):
        ck.relu_backward(x32[:, :, ::2], x32[:, :, ::2])
    with pytest.raises(ValueError, match="11x11"):
        ck.direct_forward(x32, cupy.asarray(np.zeros((4, 1, 12, 3), np.float32)),
                         cupy.asarray(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="11x11"):
        ck.direct_backward_params(x32, cupy.asarray(np.zeros((1, 4, 1, 12), np.float32)), 12, 1)
    with pytest.raises(ValueError, match="O\\*kh\\*kw"):
        ck.tap_sum(cupy.asarray(np.zeros((1, 10, 6, 6), np.float32)), cupy.asarray(np.zeros(1, np.float32)), 3, 3)
    with pytest.raises(ValueError, match="cols layout"):
        ck.im2col_gpu(x32, 3, 3, layout="nchw")
    with pytest.raises(ValueError, match="cols must be"):
        ck.col2im_gpu(cupy.asarray(np.zeros((1, 9, 99), np.float32)), (1, 1, 12, 12), 3, 3)
