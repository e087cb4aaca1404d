"""The cache-blocked CPU inference (tinysr/fused_predict.py) equals the layer-by-layer network."""

import numpy as np
import pytest

from tinysr import fused_predict
from tinysr.model import SRCNN


def _layerwise(model, y):
    return model.forward(y[None, None], padding="replicate", train=False)[0, 0]


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (7, 3), (13, 13), (17, 40), (41, 9)])
@pytest.mark.parametrize("block", [1, 7, 64, 8192])
def test_equals_layer_by_layer_in_float64(shape, block, tol=1e-12):
    model = SRCNN(n1=6, n2=5, init="he", seed=1, dtype=np.float64)
    model.conv1.bias[...] = np.linspace(-0.2, 0.2, 6)  # non-zero biases: every term is exercised
    model.conv2.bias[...] = np.linspace(-0.1, 0.3, 5)
    model.conv3.bias[...] = 0.05
    y = np.random.default_rng(sum(shape)).random(shape)
    got = fused_predict.predict_fused(model, y, block=block)
    want = _layerwise(model, y)
    assert got.shape == shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("arch", ["9-1-5", "9-1-1", "5-1-3"])
def test_other_kernel_sizes_with_a_1x1_middle(arch, tol=1e-12):
    f1, _, f3 = (int(v) for v in arch.split("-"))
    model = SRCNN(f1=f1, f2=1, f3=f3, n1=8, n2=4, init="he", seed=2, dtype=np.float64)
    y = np.random.default_rng(3).random((11, 19))
    np.testing.assert_allclose(fused_predict.predict_fused(model, y, block=30), _layerwise(model, y), rtol=0, atol=tol)


def test_float32_matches_float64_reference(rel=1e-5):
    model = SRCNN(init="he", seed=4, dtype=np.float64)
    y = np.random.default_rng(5).random((37, 52))
    want = _layerwise(model, y)
    got = model.astype(np.float32).predict(y.astype(np.float32))
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= rel * np.abs(want).max()


def test_predict_uses_it_only_where_it_applies():
    assert fused_predict.supports(SRCNN(init="he", seed=0))  # 9-1-5 on NumPy
    assert not fused_predict.supports(SRCNN(f2=5, init="he", seed=0))  # 9-5-5: layer by layer
    model = SRCNN(f2=5, n1=8, n2=4, init="he", seed=0, dtype=np.float64)
    y = np.random.default_rng(6).random((15, 12))
    np.testing.assert_array_equal(model.predict(y), _layerwise(model, y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,block", [((1, 1), 8192), ((9, 14), 30), ((33, 20), 100), ((5, 300), 8192)])
def test_numba_steps_are_bit_identical_to_numpy(dtype, shape, block):
    model = SRCNN(init="he", seed=7, dtype=dtype)
    model.conv1.bias[...] = np.linspace(-0.3, 0.3, 64).astype(dtype)
    y = np.random.default_rng(8).random(shape).astype(dtype)
    a = fused_predict.predict_fused(model, y, block=block, kernels="numpy")
    b = fused_predict.predict_fused(model, y, block=block, kernels="numba")
    assert a.dtype == b.dtype == dtype
    np.testing.assert_array_equal(a, b)


def test_unknown_kernels_is_refused():
    with pytest.raises(ValueError, match="kernels"):
        fused_predict.predict_fused(SRCNN(), np.zeros((4, 4), np.float32), kernels="fortran")


def test_numba_kernels_work_without_a_writable_cache(monkeypatch):
    """Where numba has nowhere to write its cache it raises at decoration; the kernels then
    compile without it instead of failing inference."""
    import numba

    from tinysr import cpu_kernels

    real = numba.njit

    def njit_without_cache_dir(*args, **options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", njit_without_cache_dir)
    cpu_kernels._kernels.cache_clear()
    try:
        model = SRCNN(init="he", seed=9)
        y = np.random.default_rng(10).random((12, 30)).astype(np.float32)
        got = fused_predict.predict_fused(model, y, block=64, kernels="numba")
        np.testing.assert_array_equal(got, fused_predict.predict_fused(model, y, block=64, kernels="numpy"))
    finally:
        cpu_kernels._kernels.cache_clear()  # the next user compiles with the real numba.njit
