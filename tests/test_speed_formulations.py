"""The training formulations added for speed (#25) against the ones they replace.

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


def test_the_cpu_trains_9_5_5s_middle_layer_with_im2col_flip():
    model = SRCNN.from_arch("9-5-5", n1=8, n2=4, init="he")
    x = np.random.default_rng(13).random((2, 1, 17, 17), dtype=np.float32)
    y = model.forward(x)
    assert model.conv2._cache[0] == "im2col_flip" and model.conv3._cache[0] == "output_side"
    model.backward(np.ones_like(y))
    assert np.abs(model.conv2.grad_weight).max() > 0
    assert primitives_cpu.conv_algorithms(tuple(model.conv2.weight.shape), True, True)[0] == "im2col_flip"
    assert primitives_cpu.conv_algorithms((32, 64, 5, 5), False, True)[0] == "output_side"  # inference
    assert primitives_cpu.conv_algorithms((1, 32, 5, 5), True, True)[0] == "output_side"  # layer 3
    assert primitives_cpu.conv_algorithms((32, 64, 1, 1), True, True)[0] == "im2col"  # 9-1-5's layer 2
