"""Gradient checks in float64: analytic backward vs central finite differences.

Each check contracts the layer output with a random upstream gradient ``g`` (so the scalar is
``sum(g * f(x))``) and compares every input and parameter gradient element.
"""

import numpy as np
import pytest

from tinysr.nn.layers import Conv2d, MSELoss
from tinysr.nn.model import SRCNN
from tests.conv_reference import ReLU
from tests.gradcheck import max_relative_error, numerical_grad

TOL = 1e-6


@pytest.mark.parametrize("padding", ["valid", "zero", "replicate"])
@pytest.mark.parametrize("xshape,wshape", [((2, 3, 7, 6), (4, 3, 3, 5)),   # non-square image and kernel
                                           ((3, 2, 5, 9), (3, 2, 3, 3)),   # batch 3
                                           ((2, 1, 6, 7), (2, 1, 4, 2)),   # even kernel sizes
                                           ((2, 5, 6, 5), (2, 5, 3, 3))])  # fewer outputs than inputs
@pytest.mark.parametrize("algo", ["im2col", "output_side", "im2col_flip"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "fused-relu"])
def test_conv2d_gradients(padding, xshape, wshape, algo, relu, tol=TOL):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xshape)
    w, b = rng.standard_normal(wshape), rng.standard_normal(wshape[0])
    conv = Conv2d(w, b, algo=algo, relu=relu)
    y = conv.forward(x, padding)
    g = rng.standard_normal(y.shape)
    dx = conv.backward(g)

    def f():
        return float(np.sum(g * Conv2d(w, b, relu=relu).forward(x, padding)))

    if relu:
        assert np.any(y == 0) and np.any(y > 0), "the ReLU should cut some outputs and pass others"
    assert max_relative_error(dx, numerical_grad(f, x)) < tol
    assert max_relative_error(conv.grad_weight, numerical_grad(f, w)) < tol
    assert max_relative_error(conv.grad_bias, numerical_grad(f, b)) < tol


def test_conv2d_without_input_grad_still_fills_param_grads():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    conv = Conv2d(w, b, need_input_grad=False)
    y = conv.forward(x)
    assert conv.backward(np.ones_like(y)) is None
    np.testing.assert_allclose(conv.grad_bias, np.full(3, y[0, 0].size * 2.0))


def test_relu_gradient(tol=TOL):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 0.1] = 0.5  # keep away from the kink, where the derivative is undefined
    relu = ReLU()
    y = relu.forward(x)
    g = rng.standard_normal(y.shape)
    dx = relu.backward(g)
    assert max_relative_error(dx, numerical_grad(lambda: float(np.sum(g * ReLU().forward(x))), x)) < tol


def test_mse_loss_value_and_gradient(tol=TOL):
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((4, 1, 3, 5)), rng.standard_normal((4, 1, 3, 5))
    loss = MSELoss()
    value = loss.forward(pred, target)
    # Caffe's Euclidean loss: sum / (2 N) with N = batch size 4.
    assert float(value) == pytest.approx(np.sum((pred - target) ** 2) / 8, rel=1e-14)
    dpred = loss.backward()
    num = numerical_grad(lambda: float(MSELoss().forward(pred, target)), pred)
    assert max_relative_error(dpred, num) < tol
    assert MSELoss.per_pixel_mse(value, 15) == pytest.approx(np.mean((pred - target) ** 2), rel=1e-14)


@pytest.mark.parametrize("arch,size", [("9-1-5", (15, 14)), ("9-3-5", (18, 16))])
@pytest.mark.parametrize("padding", ["valid", "replicate"])
def test_srcnn_gradients_all_parameters(arch, size, padding, tol=TOL):
    rng = np.random.default_rng(4)
    model = SRCNN.from_arch(arch, n1=6, n2=4, dtype=np.float64, init="he", seed=5)
    x = rng.random((2, 1) + size)
    y = model.forward(x, padding)
    target = rng.random(y.shape)
    loss = MSELoss()
    loss.forward(y, target)
    model.backward(loss.backward())
    grads = {k: v.copy() for k, v in model.grads.items()}

    def f():
        return float(MSELoss().forward(model.forward(x, padding, train=False), target))

    for name, p in model.params.items():
        err = max_relative_error(grads[name], numerical_grad(f, p))
        assert err < tol, f"{name}: max relative error {err:.2e}"
