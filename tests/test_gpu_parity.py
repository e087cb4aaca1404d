"""CuPy path against the NumPy path (runs only where a GPU is usable)."""

import numpy as np
import pytest

from tinysr.backend import to_device, to_numpy
from tinysr.layers import Conv2d, MSELoss
from tinysr.model import SRCNN
from tinysr.optim import MomentumSGD

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("padding", ["valid", "zero", "replicate"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_conv_forward_backward_parity(cupy, padding, dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 11, 9)).astype(dtype)
    w, b = rng.standard_normal((4, 3, 5, 3)).astype(dtype), rng.standard_normal(4).astype(dtype)
    cpu, gpu = Conv2d(w, b), Conv2d(to_device(w, cupy), to_device(b, cupy))
    y = cpu.forward(x, padding)
    yg = gpu.forward(to_device(x, cupy), padding)
    np.testing.assert_allclose(to_numpy(yg), y, rtol=tol, atol=tol * np.abs(y).max())
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dxg = cpu.backward(g), gpu.backward(to_device(g, cupy))
    for a, bg in ((dx, dxg), (cpu.grad_weight, gpu.grad_weight), (cpu.grad_bias, gpu.grad_bias)):
        np.testing.assert_allclose(to_numpy(bg), a, rtol=tol, atol=tol * np.abs(a).max())


def test_training_steps_parity(cupy):
    rng = np.random.default_rng(1)
    x = rng.random((8, 1, 33, 33)).astype(np.float32)
    t = rng.random((8, 1, 21, 21)).astype(np.float32)
    losses = {}
    for name, xp in (("cpu", np), ("gpu", cupy)):
        m = SRCNN(init="he", seed=2, xp=xp)
        opt = MomentumSGD(m.params, lr={"conv1": 1e-3, "conv2": 1e-3, "conv3": 1e-4})
        loss_fn, out = MSELoss(), []
        xd, td = to_device(x, xp), to_device(t, xp)
        for _ in range(5):
            loss = loss_fn.forward(m.forward(xd), td)
            m.backward(loss_fn.backward())
            opt.step(m.params, m.grads)
            out.append(float(loss))
        losses[name] = out
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=1e-4)
    assert losses["gpu"][-1] < losses["gpu"][0]
