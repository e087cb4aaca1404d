"""The GPU layers' batch unfold (tinysr.nn.layers.Conv2d on CuPy with a kernel larger than 1x1):
cols laid out (C*kh*kw, N, Ho*Wo) so forward and backward are 2-D GEMMs on views, against the
NumPy layers and float64 central differences."""

import numpy as np
import pytest

from tinysr.nn.layers import Conv2d
from tinysr.nn.model import SRCNN
from tinysr.ops.backend import to_device, to_numpy
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace

from .gradcheck import check_device_model_gradients


@pytest.mark.parametrize("padding", ["valid", "zero", "replicate"])
@pytest.mark.parametrize("o,relu", [(1, False), (4, True), (3, False)], ids=["layer3", "relu-4ch", "3ch"])
def test_batch_unfold_layer_matches_host(cupy, o, relu, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 9, 7))
    w, b = rng.standard_normal((o, 5, 3, 5)) * 0.3, rng.standard_normal(o) * 0.3
    cpu = Conv2d(w, b, relu=relu)
    gpu = Conv2d(to_device(w, cupy), to_device(b, cupy), relu=relu, engine=Engine(workspace=Workspace()))
    y = cpu.forward(x, padding)
    yg = gpu.forward(to_device(x, cupy), padding)
    assert gpu._cache[0] == "im2col" and gpu._cache[1][0].shape == (5 * 3 * 5, 3, y.shape[2] * y.shape[3])  # (C*kh*kw, N, P)
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
    check_device_model_gradients(cupy, dict(f1=5, f2=3, f3=3, n1=4, n2=3), (2, 1, 15, 12), padding, 1e-6)


@pytest.mark.parametrize("padding", ["valid", "zero", "replicate"])
@pytest.mark.parametrize("n,relu", [(1, False), (2, True)], ids=["one-image", "batch-relu"])
def test_output_side_inference_pads_by_indexing(cupy, n, relu, padding):
    """GPU inference with O < C (layer 3) runs one GEMM and the tap-sum kernel: the host numbers."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, 6, 11, 8))
    w, b = rng.standard_normal((2, 6, 5, 3)) * 0.3, rng.standard_normal(2) * 0.3
    want = Conv2d(w, b, relu=relu).forward(x, padding, train=False)
    got = Conv2d(to_device(w, cupy), to_device(b, cupy), relu=relu).forward(to_device(x, cupy), padding, train=False)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("padding", ["valid", "replicate"])
def test_output_side_training_sums_the_taps_in_one_launch(cupy, padding):
    """Training with algo="output_side" on the GPU: primitives_gpu.tap_sum is the tap_sum kernel
    (valid, zero bias); forward and backward give the host numbers."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 6, 9, 8))
    w, b = rng.standard_normal((2, 6, 3, 5)) * 0.3, rng.standard_normal(2) * 0.3
    cpu = Conv2d(w, b, relu=True, algo="output_side")
    gpu = Conv2d(to_device(w, cupy), to_device(b, cupy), relu=True, algo="output_side")
    y, yg = cpu.forward(x, padding), gpu.forward(to_device(x, cupy), padding)
    assert gpu._cache[0] == "output_side"
    np.testing.assert_allclose(to_numpy(yg), y, rtol=1e-12, atol=1e-12 * np.abs(y).max())
    g = rng.standard_normal(y.shape)
    dx, dxg = cpu.backward(g), gpu.backward(to_device(g, cupy))
    for a, bg in ((dx, dxg), (cpu.grad_weight, gpu.grad_weight), (cpu.grad_bias, gpu.grad_bias)):
        np.testing.assert_allclose(to_numpy(bg), a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def test_layer_by_layer_gpu_inference_has_no_pad_copy_or_per_tap_launches(cuda_emulator):
    emu = cuda_emulator
    host = SRCNN(f1=9, f2=5, f3=5, n1=8, n2=4, init="he", seed=5)
    y = np.random.default_rng(6).random((19, 14)).astype(np.float32)
    emu.reset_stats()
    got = host.to(emu).predict(to_device(y, emu))
    # layer 1 direct; layers 2 and 3 (O < C) a GEMM and one tap-sum launch each, bias and ReLU in it
    assert emu.STATS["launches"] == ["direct_forward_f32", "tap_sum_f32", "tap_sum_f32"]
    want = host.forward(y[None, None], padding="replicate", train=False)[0, 0]
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
