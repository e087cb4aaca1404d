"""The one-pass CPU bias + ReLU and ReLU backward (tinysr/ops/primitives_cpu.py) give NumPy's numbers
bit for bit, special values and zero signs included, and fall back to NumPy where they do not apply."""

import numpy as np
import pytest

from tinysr.ops import primitives_cpu


def _special(shape, dtype, seed):
    """Random values with NaN, +-inf, +-0 and values that the bias moves across zero."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    flat[::7] = np.nan
    flat[1::11] = np.inf
    flat[2::13] = -np.inf
    flat[3::5] = 0.0
    flat[4::9] = -0.0
    return a


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8))  # values, NaN payloads, zero signs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 4, 7), (2, 64, 25, 25)])
def test_bias_relu_equals_numpy_add_then_maximum(dtype, shape):
    y = _special(shape, dtype, seed=1)
    bias = np.random.default_rng(2).standard_normal(shape[1]).astype(dtype)
    bias[0] = -0.0
    want = y.copy()
    want += bias[None, :, None, None]
    np.maximum(want, 0, out=want)
    got = y.copy()
    assert primitives_cpu.bias_relu_(got, bias) is got  # in place
    _same_bits(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 4, 7), (2, 32, 21, 21)])
def test_relu_backward_equals_numpy_mask_product(dtype, shape):
    dy = _special(shape, dtype, seed=3)
    out = np.maximum(_special(shape, dtype, seed=4), 0)
    got = primitives_cpu.relu_backward(dy, out)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN in both
        want = dy * (out > 0)
    _same_bits(got, want)
    assert not np.shares_memory(got, dy)


def test_non_contiguous_arrays_take_numpy():
    base = np.random.default_rng(5).standard_normal((2, 3, 8, 10)).astype(np.float32)
    y = base[:, :, :, ::2]  # a strided view: written in place through NumPy
    bias = np.arange(3, dtype=np.float32) - 1
    want = np.maximum(y + bias[None, :, None, None], 0)
    primitives_cpu.bias_relu_(y, bias)
    _same_bits(np.ascontiguousarray(base[:, :, :, ::2]), want)
    dy, out = base.transpose(0, 1, 3, 2), np.abs(base).transpose(0, 1, 3, 2) - 0.5
    _same_bits(primitives_cpu.relu_backward(dy, out), dy * (out > 0))
