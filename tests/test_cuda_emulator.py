"""The CPU emulator that runs the CUDA kernels in CI (tests/cupy_emulator.py) can fail.

Each test breaks a kernel source or a launch the way a real bug would and checks that the
emulated run notices: a missing barrier, an unwritten output element, a wrong scalar type,
threads that skip a barrier, a host array mixed into device code, and reads and writes past
the end of an array.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinysr.nn.layers import Conv2d
from tinysr.ops import cuda_kernels as ck

from .cupy_emulator import clear_kernel_caches

pytestmark = pytest.mark.emulated

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def emu(cuda_emulator):
    return cuda_emulator


def _mutate(monkeypatch, name, old, new, count=1):
    """Serve ``kernels/<name>`` with ``old`` replaced by ``new`` (exactly ``count`` times)."""
    text = ck.kernel_source(name)
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {name}"
    real = ck.kernel_source
    monkeypatch.setattr(ck, "kernel_source", lambda n: text.replace(old, new) if n == name else real(n))
    clear_kernel_caches()


def _direct_case(emu, rng):
    x = rng.random((2, 1, 20, 18)).astype(np.float32)
    w, b = (rng.standard_normal((16, 1, 5, 5)) * 0.1).astype(np.float32), np.zeros(16, np.float32)
    want = Conv2d(w, b).forward(x, "replicate", train=False)
    return (emu.asarray(x), emu.asarray(w), emu.asarray(b)), want


def test_unmodified_direct_matches(emu):
    args, want = _direct_case(emu, np.random.default_rng(0))
    np.testing.assert_allclose(ck.direct_forward(*args, "replicate").get(), want, rtol=1e-5, atol=1e-6)
    assert emu.STATS["launches"] == ["direct_forward_f32"]


def test_missing_barrier_is_caught(emu, monkeypatch):
    """Without the barrier after staging, threads read tile entries later threads have not written."""
    _mutate(monkeypatch, "direct.cu", "        __syncthreads();\n\n        T acc[DIRECT_RPT]", "\n        T acc[DIRECT_RPT]")
    args, want = _direct_case(emu, np.random.default_rng(0))
    got = ck.direct_forward(*args, "replicate").get()
    assert not np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=False)


def test_unwritten_output_shows_as_nan(emu, monkeypatch):
    _mutate(monkeypatch, "elementwise.cu", "idx < total; idx += stride) {\n        const int c",
            "idx < total - 1; idx += stride) {\n        const int c")
    y = emu.asarray(np.ones((2, 3, 4), np.float32))
    # bias_relu_ works in place, so give it an output from empty(): the element it skips stays NaN.
    out = emu.empty((2, 3, 4), np.float32)
    out[...] = y
    out.reshape(-1)[-1] = np.nan
    ck.bias_relu_(out, emu.asarray(np.zeros(3, np.float32)))
    got = out.get()
    assert np.isnan(got.reshape(-1)[-1]) and np.all(got.reshape(-1)[:-1] == 1)
    grad = ck.relu_backward(emu.asarray(np.ones(5, np.float32)), emu.asarray(np.ones(5, np.float32)))
    assert np.all(grad.get() == 1)  # the unmutated kernel writes every element of its empty() output


def test_empty_is_poisoned(emu):
    assert np.all(np.isnan(emu.empty((3, 2), np.float64).get()))
    assert np.all(np.isnan(emu.empty_like(emu.asarray(np.zeros(4, np.float32))).get()))


def test_wrong_scalar_and_pointer_types_are_rejected(emu):
    fn = ck._function("elementwise.cu", "relu_backward_f32", 0)
    a = emu.asarray(np.ones(4, np.float32))
    with pytest.raises(TypeError, match="numpy.int64"):
        fn((1,), (32,), (a, a, a, 4))  # a Python int where the kernel takes long long
    with pytest.raises(TypeError, match="numpy.int64"):
        fn((1,), (32,), (a, a, a, np.int32(4)))
    with pytest.raises(TypeError, match="float64 array"):
        fn((1,), (32,), (a, a.astype(np.float64), a, np.int64(4)))
    with pytest.raises(TypeError, match="device array"):
        fn((1,), (32,), (a, a.get(), a, np.int64(4)))
    with pytest.raises(ValueError, match="1024 threads"):
        fn((1,), (2048,), (a, a, a, np.int64(4)))


def test_host_array_mixed_into_device_code_raises(emu):
    d = emu.asarray(np.ones(3))
    with pytest.raises(TypeError, match="host"):
        d + np.ones(3)
    with pytest.raises(TypeError, match="host"):
        emu.matmul(d, np.ones(3))
    assert float(d.sum()) == 3.0 and emu.STATS["syncs"] == 1


def test_divergent_barrier_aborts_with_a_message():
    """Threads that return while the others wait at __syncthreads() stop the run, not hang it."""
    code = textwrap.dedent("""
        import sys, numpy as np
        from tests import cupy_emulator as emu
        sys.modules["cupy"] = emu
        from tinysr.ops import cuda_kernels as ck
        real = ck.kernel_source
        ck.kernel_source = lambda n: real(n).replace("    red[tid] = acc;\\n    __syncthreads();",
                                                     "    if (tid == 5) return;\\n    red[tid] = acc;\\n    __syncthreads();", 1)
        a = emu.asarray(np.ones((4, 1, 8, 8), np.float32))
        ck.mse_loss_grad(a, a)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "wait at __syncthreads()" in proc.stderr


def test_out_of_bounds_write_fails_the_launch(emu, monkeypatch):
    _mutate(monkeypatch, "elementwise.cu", "idx < total; idx += stride) {\n        dx[idx]",
            "idx <= total; idx += stride) {\n        dx[idx]")
    a = emu.asarray(np.ones(5, np.float32))
    with pytest.raises(RuntimeError, match="wrote outside its argument dx"):
        ck.relu_backward(a, a)


def test_out_of_bounds_read_yields_nan(emu, monkeypatch):
    _mutate(monkeypatch, "elementwise.cu", "const T v = y[idx] + b[c];", "const T v = y[idx] + b[c + 1];")
    y = emu.asarray(np.ones((2, 3, 4), np.float32))
    ck.bias_relu_(y, emu.asarray(np.zeros(3, np.float32)))
    got = y.get()
    assert np.all(got[:, :2] == 1) and np.all(np.isnan(got[:, 2]))  # channel 2 read past the bias


def test_missing_barriers_in_the_new_kernels_are_caught(emu, monkeypatch):
    """The gradient pass and the fused inference kernel also fail visibly without their barriers."""
    rng = np.random.default_rng(1)
    x = rng.random((2, 1, 20, 18)).astype(np.float32)
    dy = rng.standard_normal((2, 16, 16, 14)).astype(np.float32)
    conv = Conv2d(np.zeros((16, 1, 5, 5), np.float32), np.zeros(16, np.float32), need_input_grad=False)
    conv.forward(x, "valid")
    conv.backward(dy)
    _mutate(monkeypatch, "direct.cu", "        __syncthreads();\n\n        if (active)", "\n        if (active)")
    dw, _ = ck.direct_backward_params(emu.asarray(x), emu.asarray(dy), 5, 5, "valid")
    assert not np.allclose(dw.get(), conv.grad_weight, rtol=1e-4, atol=1e-5)

    from tinysr.nn.model import SRCNN  # noqa: PLC0415

    host = SRCNN(init="he", seed=1)
    y = rng.random((20, 18)).astype(np.float32)
    want = host.forward(y[None, None], padding="replicate", train=False)[0, 0]
    device = host.to(emu)
    np.testing.assert_allclose(device.predict(emu.asarray(y)).get(), want, rtol=1e-5, atol=1e-5)
    _mutate(monkeypatch, "fused.cu", "        __syncthreads();\n\n        T h1[FUSED_OCB];", "\n        T h1[FUSED_OCB];")
    assert not np.allclose(device.predict(emu.asarray(y)).get(), want, rtol=1e-5, atol=1e-5)
