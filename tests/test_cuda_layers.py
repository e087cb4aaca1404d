"""The GPU layers' batch unfold (tinysr.layers.Conv2d on CuPy with a kernel larger than 1x1):
cols laid out (C*kh*kw, N, Ho*Wo) so forward and backward are 2-D GEMMs on views, against the
NumPy layers and float64 central differences."""

import numpy as np
import pytest

from tinysr.backend import to_device, to_numpy
from tinysr.layers import Conv2d, MSELoss
from tinysr.model import SRCNN
from tinysr.workspace import Workspace

from .gradcheck import max_relative_error, numerical_grad


@pytest.mark.parametrize("padding", ["valid", "zero", "replicate"])
@pytest.mark.parametrize("o,relu", [(1, False), (4, True), (3, False)], ids=["layer3", "relu-4ch", "3ch"])
def test_batch_unfold_layer_matches_host(cupy, o, relu, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 9, 7))
    w, b = rng.standard_normal((o, 5, 3, 5)) * 0.3, rng.standard_normal(o) * 0.3
    cpu = Conv2d(w, b, relu=relu)
    gpu = Conv2d(to_device(w, cupy), to_device(b, cupy), relu=relu)
    y = cpu.forward(x, padding)
    yg = gpu.forward(to_device(x, cupy), padding, workspace=Workspace())
    assert gpu._cache[0] == "im2col_batch"
    np.testing.assert_allclose(to_numpy(yg), y, rtol=1e-12, atol=1e-12 * np.abs(y).max())
    g = rng.standard_normal(y.shape)
    dx, dxg = cpu.backward(g), gpu.backward(to_device(g, cupy))
    for a, bg in ((dx, dxg), (cpu.grad_weight, gpu.grad_weight), (cpu.grad_bias, gpu.grad_bias)):
        assert bg.shape == a.shape
        np.testing.assert_allclose(to_numpy(bg), a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def test_batch_unfold_launches_one_unfold_and_one_fold(cuda_emulator):
    emu = cuda_emulator
    rng = np.random.default_rng(1)
    layer = Conv2d(emu.asarray(rng.standard_normal((1, 4, 5, 5))), emu.asarray(np.zeros(1)))
    x = emu.asarray(rng.standard_normal((6, 4, 12, 10)))
    emu.reset_stats()
    y = layer.forward(x, "valid")
    layer.backward(emu.asarray(np.ones(y.shape)))
    assert emu.STATS["launches"] == ["im2col_f64", "col2im_f64"] and emu.STATS["syncs"] == 0


@pytest.mark.parametrize("padding", ["valid", "replicate"])
def test_three_by_three_middle_layer_gradients_match_finite_differences_f64(cupy, padding):
    """A 5-3-3 network (layer 2 and 3 both take the batch unfold, layer 2 with its ReLU) on a
    small non-square batch, random upstream target: device backward against central differences."""
    rng = np.random.default_rng(2)
    host = SRCNN(f1=5, f2=3, f3=3, n1=4, n2=3, dtype=np.float64, init="he", seed=3)
    model = SRCNN(f1=5, f2=3, f3=3, n1=4, n2=3, dtype=np.float64, xp=cupy)
    model.set_params({k: v + (rng.standard_normal(v.shape) * 0.1 if k.endswith("bias") else 0)
                      for k, v in host.params.items()})
    x = to_device(rng.random((2, 1, 15, 12)), cupy)
    y = model.forward(x, padding)
    target = to_device(rng.random(y.shape), cupy)
    loss = MSELoss()
    loss.forward(y, target)
    model.backward(loss.backward())
    grads = {k: to_numpy(v) for k, v in model.grads.items()}

    def f():
        return float(MSELoss().forward(model.forward(x, padding, train=False), target))

    for name, p in model.params.items():
        err = max_relative_error(grads[name], numerical_grad(f, p))
        assert err < 1e-6, f"{name}: max relative error {err:.2e}"
