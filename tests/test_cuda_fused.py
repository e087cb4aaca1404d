"""Fused GPU inference (kernels/fused.cu via tinysr.ops.cuda_kernels.fused_predict) and the GPU tile
policy of tinysr.image.inference, against the NumPy layer-by-layer network.

Tolerances: relative to the reference's largest magnitude, 1e-5 for float32 and 1e-12 for float64.
"""

import numpy as np
import pytest

from tinysr.image import inference
from tinysr.image.inference import restore_y
from tinysr.nn.model import SRCNN
from tinysr.ops import cuda_kernels as ck
from tinysr.ops.backend import to_device, to_numpy


def _model(arch, n1, n2, dtype=np.float32, seed=1):
    """A host SRCNN with He weights and random biases (so ReLUs cut on both sides)."""
    m = SRCNN.from_arch(arch, n1=n1, n2=n2, init="he", seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    m.set_params({k: v + (rng.standard_normal(v.shape) * 0.1 if k.endswith("bias") else 0)
                  for k, v in m.params.items()})
    return m


def _reference(model, y):
    return model.forward(y[None, None], padding="replicate", train=False)[0, 0]


def _close(got, want, tol):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()))


@pytest.mark.parametrize("dtype,tol", [pytest.param(np.float32, 1e-5, id="f32"),
                                       pytest.param(np.float64, 1e-12, id="f64")])
@pytest.mark.parametrize("arch,n1,n2,shape", [
    pytest.param("9-1-5", 64, 32, (37, 29), id="9-1-5"),
    pytest.param("5-1-3", 20, 7, (17, 33), id="5-1-3-part-groups"),   # n1 not a multiple of 16, n2 < 32
    pytest.param("11-1-5", 16, 32, (5, 3), id="11-1-5-tiny"),         # image smaller than the padding
    pytest.param("9-1-5", 64, 32, (1, 1), id="1x1"),
])
def test_fused_predict_matches_layer_by_layer(cupy, arch, n1, n2, shape, dtype, tol):
    host = _model(arch, n1, n2, dtype)
    y = np.random.default_rng(2).random(shape).astype(dtype)
    want = _reference(host, y)
    dev = host.to(cupy)
    assert dev.gpu_fused(*shape)
    got = to_numpy(dev.predict(to_device(y, cupy)))
    _close(got, want, tol)


def test_gpu_predict_is_two_launches_in_float32(cuda_emulator):
    emu = cuda_emulator
    dev = _model("9-1-5", 64, 32).to(emu)
    y = to_device(np.random.default_rng(3).random((20, 18)).astype(np.float32), emu)
    emu.reset_stats()
    out = dev.predict(y)
    assert emu.STATS["launches"] == ["fused_z_f32", "tap_sum_f32"]  # no pad copy, no layer-by-layer
    assert out.dtype == np.float32 and out.shape == (20, 18) and emu.STATS["syncs"] == 0
    first = out.get()
    np.testing.assert_array_equal(dev.predict(y).get(), first)  # fixed summation order


def test_networks_the_fused_kernels_do_not_hold_run_layer_by_layer(cuda_emulator):
    emu = cuda_emulator
    assert not ck.fused_supports((64, 1, 9, 9), (32, 64, 5, 5), (1, 32, 5, 5))   # 9-5-5
    assert not ck.fused_supports((64, 1, 9, 9), (33, 64, 1, 1), (1, 33, 5, 5))   # n2 > 32
    assert not ck.fused_supports((64, 1, 9, 9), (32, 64, 1, 1), (1, 32, 7, 7))   # f3 > 5
    host = _model("9-5-5", 8, 4)
    y = np.random.default_rng(4).random((15, 12)).astype(np.float32)
    emu.reset_stats()
    got = to_numpy(host.to(emu).predict(to_device(y, emu)))
    assert not any(k.startswith("fused") for k in emu.STATS["launches"])
    _close(got, _reference(host, y), 1e-5)
    with pytest.raises(ValueError, match="1x1 middle layer"):
        d = host.to(emu)
        ck.fused_predict(to_device(y, emu), *(p for layer in d.layers for p in (layer.weight, layer.bias)))


def test_device_tile_follows_free_memory(cuda_emulator, monkeypatch):
    emu = cuda_emulator
    dev = _model("9-1-5", 64, 32).to(emu)
    bpp = inference.device_bytes_per_pixel(dev, 1080, 1920)
    assert bpp == (25 + 2) * 4
    monkeypatch.setattr(emu, "MEM_INFO", [16 << 30, 16 << 30])
    assert inference.choose_tile(dev, 1080, 1920) is None  # a 1080p frame in one piece
    monkeypatch.setattr(emu, "MEM_INFO", [100 << 20, 16 << 30])  # 50 MB budget: tiles
    edge = inference.choose_tile(dev, 1080, 1920)
    budget = (100 << 20) * inference.DEVICE_MEMORY_FRACTION
    assert (edge + 12) ** 2 * bpp <= budget < (edge + 13) ** 2 * bpp
    monkeypatch.setattr(emu, "MEM_INFO", [1 << 10, 16 << 30])
    assert inference.choose_tile(dev, 1080, 1920) == inference.MIN_DEVICE_TILE
    monkeypatch.setattr(emu, "MEM_INFO", [1 << 40, 1 << 40])  # memory to spare: the 32-bit index limits
    edge = inference.choose_tile(dev, 20000, 10000)
    assert dev.gpu_fused(edge + 12, edge + 12) and 25 * (edge + 13) ** 2 > (2**31 - 1) // 2
    assert inference.choose_tile(_model("9-1-5", 64, 32), 1080, 1920) == inference.DEFAULT_TILE  # CPU


def test_restore_y_auto_tiles_on_a_small_gpu_equal_one_piece(cuda_emulator, monkeypatch):
    emu = cuda_emulator
    host = _model("9-1-5", 64, 32)
    dev = host.to(emu)
    y = np.random.default_rng(5).random((40, 33))
    emu.reset_stats()
    whole = restore_y(dev, y)  # default "auto": fits, one piece
    assert emu.STATS["launches"].count("fused_z_f32") == 1 and whole.dtype == np.float64
    monkeypatch.setattr(inference, "MIN_DEVICE_TILE", 4)
    monkeypatch.setattr(emu, "MEM_INFO", [2 * 30 ** 2 * 27 * 4, 1 << 30])  # a 30 x 30 haloed piece
    assert inference.choose_tile(dev, 40, 33) == 30 - 12
    emu.reset_stats()
    tiled = restore_y(dev, y)
    assert emu.STATS["launches"].count("fused_z_f32") == 3 * 2  # 18-pixel tiles of 40 x 33
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, restore_y(host, y, tile=None), rtol=0, atol=1e-5)
    single = restore_y(dev, y, dtype=np.float32)
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, whole.astype(np.float32))
    with pytest.raises(ValueError, match="tile must be"):
        restore_y(dev, y, tile="big")
