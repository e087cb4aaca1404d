"""Conv2d forward against a plain loop reference; orientation with asymmetric kernels."""

import numpy as np
import pytest

from tinysr.nn.layers import Conv2d
from tests.conv_reference import conv2d_loops

PADDINGS = ["valid", "zero", "replicate"]


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("shape,kernel", [((2, 3, 7, 6), (4, 3, 3, 5)), ((1, 1, 9, 11), (2, 1, 5, 5)),
                                          ((3, 2, 6, 8), (3, 2, 4, 2)), ((1, 4, 5, 5), (2, 4, 1, 1))])
@pytest.mark.parametrize("algo", ["im2col", "output_side"])
def test_conv_forward_matches_loops(padding, shape, kernel, algo, rtol=1e-12):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(kernel), rng.standard_normal(kernel[0])
    got = Conv2d(w, b, algo=algo).forward(x, padding)
    np.testing.assert_allclose(got, conv2d_loops(x, w, b, padding), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("algo", ["im2col", "output_side"])
def test_orientation_single_tap(algo):
    """A kernel with one 1 at (row 0, col 2) is a correlation: out[r, s] = x[r + 0, s + 2] (valid)."""
    x = np.arange(30, dtype=np.float64).reshape(1, 1, 5, 6)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 2] = 1.0
    out = Conv2d(w, np.zeros(1), algo=algo).forward(x, "valid")
    np.testing.assert_array_equal(out[0, 0], x[0, 0, 0:3, 2:6])


def test_replicate_padding_uses_edge_values():
    """With replicate padding a left-neighbour tap at column 0 sees column 0 itself."""
    x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 0] = 1.0  # reads x[r, s - 1]
    out = Conv2d(w, np.zeros(1)).forward(x, "replicate")[0, 0]
    np.testing.assert_array_equal(out[:, 0], x[0, 0, :, 0])
    np.testing.assert_array_equal(out[:, 1:], x[0, 0, :, :3])
    zero = Conv2d(w, np.zeros(1)).forward(x, "zero")[0, 0]
    np.testing.assert_array_equal(zero[:, 0], 0.0)


def test_float32_default_path():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    w, b = rng.standard_normal((5, 3, 3, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    got = Conv2d(w, b).forward(x, "replicate")
    assert got.dtype == np.float32
    ref = conv2d_loops(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), "replicate")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    w, b = np.zeros((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)
    conv = Conv2d(w, b)
    with pytest.raises(ValueError, match="channels"):
        conv.forward(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        conv.forward(np.zeros((3, 5, 5), np.float32))
    with pytest.raises(TypeError, match="float64"):
        conv.forward(np.zeros((1, 3, 5, 5), np.float64))
    with pytest.raises(ValueError, match="smaller than"):
        conv.forward(np.zeros((1, 3, 2, 5), np.float32), "valid")
    with pytest.raises(ValueError, match="padding"):
        conv.forward(np.zeros((1, 3, 5, 5), np.float32), "reflect")
    with pytest.raises(ValueError, match="bias"):
        Conv2d(w, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="bias"):
        Conv2d(w, np.zeros(2, np.float64))
    with pytest.raises(ValueError, match="algorithm"):
        Conv2d(w, b, algo="fft")


def test_auto_algorithm_choice():
    """The device's primitives offer the algorithms, best first; "auto" runs the first, which the
    layer records in its cache."""
    from tinysr.ops import primitives_cpu, primitives_gpu

    cpu, gpu = primitives_cpu.conv_algorithms, primitives_gpu.conv_algorithms
    assert cpu((1, 32, 5, 5), True, True)[0] == "output_side"  # SRCNN's layer 3: O < C
    assert cpu((64, 1, 9, 9), True, False)[0] == "im2col"
    assert cpu((32, 64, 1, 1), False, True)[0] == "im2col"  # 1x1: nothing to sum on the output side
    assert "direct" not in cpu((64, 1, 9, 9), False, False)
    assert gpu((64, 1, 9, 9), True, False)[0] == "direct"  # one input channel, no input gradient
    assert gpu((64, 1, 9, 9), True, True)[0] == "im2col"
    assert gpu((64, 1, 13, 13), False, False)[0] == "im2col"  # larger than the direct kernel holds
    assert gpu((1, 32, 5, 5), False, True)[0] == "output_side"  # inference
    assert gpu((1, 32, 5, 5), True, True)[0] == "im2col"  # GPU training unfolds
    f32 = np.float32
    conv = Conv2d(np.zeros((1, 32, 5, 5), f32), np.zeros(1, f32))
    conv.forward(np.zeros((2, 32, 7, 7), f32))
    assert conv._cache[0] == "output_side"


def test_an_algorithm_the_device_does_not_offer_is_refused():
    f32 = np.float32
    conv = Conv2d(np.zeros((4, 1, 3, 3), f32), np.zeros(4, f32), need_input_grad=False, algo="direct")
    with pytest.raises(ValueError, match="'direct' does not run on the cpu .* it runs im2col, output_side"):
        conv.forward(np.zeros((1, 1, 5, 5), f32))
