"""The training formulations added for speed (#25) against the other formulations.

``im2col_flip`` (:class:`tinysr.nn.conv.Im2colFlip`) computes the input gradient as a convolution of
``dy`` with the flipped kernel instead of ``col2im`` of a product over ``O``. Its float64 gradients
are checked against finite differences in ``tests/test_gradcheck.py``; here its outputs and
gradients equal the other formulations' to float rounding, and its numbers do not depend on the
worker count or the step size.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tinysr.nn.layers import Conv2d
from tinysr.nn.model import SRCNN
from tinysr.ops import primitives_cpu
from tinysr.ops.engine import Engine

SHAPES = [((3, 6, 9, 8), (4, 6, 3, 5)),     # non-square image and kernel
          ((2, 8, 11, 10), (5, 8, 5, 5)),   # 9-5-5's layer 2, shrunk: 4 * O > C
          ((4, 3, 7, 12), (6, 3, 2, 4)),    # even kernel sizes, more outputs than inputs
          ((1, 2, 6, 5), (1, 2, 3, 3))]     # one sample, one output


def _run(algo, w, b, x, dy, padding, relu, engine=None):
    conv = Conv2d(w, b, relu=relu, algo=algo, engine=engine)
    y = conv.forward(x, padding).copy()
    dx = conv.backward(dy).copy()
    return y, dx, conv.grad_weight.copy(), conv.grad_bias.copy()


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("padding", ["valid", "zero", "replicate"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "fused-relu"])
@pytest.mark.parametrize("xshape,wshape", SHAPES)
def test_im2col_flip_equals_the_other_formulations(xshape, wshape, padding, relu, dtype, rtol):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(xshape).astype(dtype)
    w, b = rng.standard_normal(wshape).astype(dtype), rng.standard_normal(wshape[0]).astype(dtype)
    dy = rng.standard_normal(Conv2d(w, b).forward(x, padding, train=False).shape).astype(dtype)
    got = _run("im2col_flip", w, b, x, dy, padding, relu)
    if relu:
        assert np.any(got[0] == 0) and np.any(got[0] > 0)
    for algo in ("im2col", "output_side"):
        for g, r, what in zip(got, _run(algo, w, b, x, dy, padding, relu), ("y", "dx", "dW", "db")):
            scale = np.abs(r).max()
            np.testing.assert_allclose(g, r, rtol=0, atol=rtol * scale, err_msg=f"{what} vs {algo}")
    # the forward and the weight gradient are im2col's own products, bit for bit
    ref = _run("im2col", w, b, x, dy, padding, relu)
    for i in (0, 2, 3):
        np.testing.assert_array_equal(got[i], ref[i])


@pytest.mark.parametrize("padding", ["valid", "replicate"])
def test_im2col_flip_does_not_depend_on_workers_or_step_size(padding):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((7, 6, 10, 9)).astype(np.float32)
    w, b = rng.standard_normal((4, 6, 3, 5)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    dy = rng.standard_normal(Conv2d(w, b).forward(x, padding, train=False).shape).astype(np.float32)
    with threadpool_limits(2, user_api="blas"):
        want = _run("im2col_flip", w, b, x, dy, padding, True, Engine(1))
        for engine in (Engine(2), Engine(3), Engine(2, step_bytes=1), Engine(None)):
            for got, ref in zip(_run("im2col_flip", w, b, x, dy, padding, True, engine), want):
                np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kh,kw,hp,wp", [((2, 3, 4, 5), 3, 2, 6, 6), ((1, 1, 21, 21), 5, 5, 25, 25),
                                               ((3, 2, 2, 3), 1, 4, 4, 8)])  # room to spare: zeros
def test_tap_spread_is_the_slice_definition_and_the_adjoint_of_tap_sum(shape, kh, kw, hp, wp, dtype):
    rng = np.random.default_rng(15)
    dy = rng.standard_normal(shape).astype(dtype)
    n, o, ho, wo = shape
    want = np.zeros((n, o, kh, kw, hp, wp), dtype)
    for i in range(kh):
        for j in range(kw):
            want[:, :, i, j, i:i + ho, j:j + wo] = dy
    got = primitives_cpu.tap_spread(dy, kh, kw, hp, wp)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(primitives_cpu.tap_spread(dy[:, :, ::-1], kh, kw, hp, wp),  # a strided view
                                  primitives_cpu.tap_spread(dy[:, :, ::-1].copy(), kh, kw, hp, wp))
    z = rng.standard_normal(want.shape).astype(dtype)
    assert np.sum(primitives_cpu.tap_sum(z, ho, wo) * dy) == pytest.approx(np.sum(z * got), rel=1e-5)
    with pytest.raises(ValueError, match="tap_spread"):
        primitives_cpu.tap_spread(dy, kh, kw, ho + kh - 2, wp)  # a row short


def test_the_cpu_offers_im2col_flip_after_its_first_choice():
    """Offered in training with an input gradient and a kernel above 1x1, never first: SRCNN's
    layers keep the formulations (and a fixed-seed run the numbers) they had."""
    cpu = primitives_cpu.conv_algorithms
    assert cpu((32, 64, 5, 5), True, True) == ("output_side", "im2col_flip", "im2col")  # 9-5-5's layer 2
    assert cpu((8, 4, 3, 3), True, True) == ("im2col", "im2col_flip", "output_side")
    assert "im2col_flip" not in cpu((32, 64, 5, 5), False, True)  # inference
    assert "im2col_flip" not in cpu((64, 1, 9, 9), True, False)  # no input gradient
    assert "im2col_flip" not in cpu((32, 64, 1, 1), True, True)  # 1x1: im2col folds nothing
    model = SRCNN.from_arch("9-5-5", n1=8, n2=4, init="he")
    model.conv2.algo = "im2col_flip"
    x = np.random.default_rng(13).random((2, 1, 17, 17), dtype=np.float32)
    y = model.forward(x)
    assert model.conv2._cache[0] == "im2col_flip" and model.conv3._cache[0] == "output_side"
    model.backward(np.ones_like(y))
    assert np.abs(model.conv2.grad_weight).max() > 0


def test_9_5_5_training_does_not_depend_on_the_thread_count():
    """Three Adam steps of a small 9-5-5 with its layer 2 on im2col_flip: the same weights for 1, 2
    and 3 workers, bit for bit."""
    from tinysr.nn.layers import MSELoss
    from tinysr.nn.training import make_optimizer, train_step
    from tinysr.ops.workspace import Workspace

    rng = np.random.default_rng(14)
    x = rng.random((6, 1, 21, 21), dtype=np.float32)
    t = rng.random((6, 1, 5, 5), dtype=np.float32)
    runs = []
    with threadpool_limits(2, user_api="blas"):
        for workers in (1, 2, 3):
            model = SRCNN.from_arch("9-5-5", n1=16, n2=8, init="he", seed=1, engine=Engine(workers, workspace=Workspace()))
            model.conv2.algo = "im2col_flip"
            opt, loss = make_optimizer("adam", model.params, 1e-3, 0.9), MSELoss()
            for _ in range(3):
                train_step(model, loss, opt, x, t)
            runs.append(model.params.flat.copy())
    assert not np.array_equal(runs[0], SRCNN.from_arch("9-5-5", n1=16, n2=8, init="he", seed=1).params.flat)
    for got in runs[1:]:
        np.testing.assert_array_equal(got, runs[0])
