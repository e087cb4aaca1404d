"""The cache-blocked CPU inference (tinysr/ops/fused_predict.py) equals the layer-by-layer network."""

import threading

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import threadpoolctl
from threadpoolctl import threadpool_limits

from tinysr.nn.model import SRCNN
from tinysr.ops import blas_threads
from tinysr.ops import fused_predict
from tinysr.ops.engine import Engine


# NumPy references of the element-wise steps (fused_predict.STEPS are numba loops that must give
# these numbers bit for bit).
def _np_unfold(ypad, r0, f, cols):
    # cols (f*f, r*wq) <- row a*f+b holds ypad[r0+i+a, j+b] for the block's rows i and columns j.
    wq = ypad.shape[1] - f + 1
    r = cols.shape[1] // wq
    cols.reshape(f, f, r, wq)[...] = sliding_window_view(ypad[r0:r0 + r + f - 1], (r, wq))


def _np_bias_relu(act, bias):
    act += bias[:, None]
    np.maximum(act, 0, out=act)


def _np_tap_sum(ring, f, bias, out, i0, h):
    n, w = out.shape
    out[...] = bias
    for a in range(f):
        slots = np.clip(np.arange(i0, i0 + n) + a - f // 2, 0, h - 1) % ring.shape[1]
        for b in range(f):
            out += ring[a * f + b][slots, b:b + w]


NUMPY_STEPS = {"unfold": _np_unfold, "bias_relu": _np_bias_relu, "tap_sum": _np_tap_sum}


def _fused(model, y, block=4096, workers=None, timings=None):
    """predict_fused on an engine of ``workers`` threads and ``block`` pixels per block."""
    return fused_predict.predict_fused(model, y, Engine(workers, block=block), timings=timings)


def _predict(model, y, kernels="numba", **kw):
    """predict_fused with its numba steps, or with the NumPy references in their place."""
    if kernels == "numba":
        return _fused(model, y, **kw)
    saved = dict(fused_predict.STEPS)
    fused_predict.STEPS.update(NUMPY_STEPS)
    try:
        return _fused(model, y, **kw)
    finally:
        fused_predict.STEPS.update(saved)


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
    got = _fused(model, y, block=block)
    want = _layerwise(model, y)
    assert got.shape == shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("arch", ["9-1-5", "9-1-1", "5-1-3"])
def test_other_kernel_sizes_with_a_1x1_middle(arch, tol=1e-12):
    f1, _, f3 = (int(v) for v in arch.split("-"))
    model = SRCNN(f1=f1, f2=1, f3=f3, n1=8, n2=4, init="he", seed=2, dtype=np.float64)
    y = np.random.default_rng(3).random((11, 19))
    np.testing.assert_allclose(_fused(model, y, block=30), _layerwise(model, y), rtol=0, atol=tol)


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
    a = _predict(model, y, "numpy", block=block)
    b = _predict(model, y, "numba", block=block)
    assert a.dtype == b.dtype == dtype
    np.testing.assert_array_equal(a, b)


def test_numba_kernels_work_without_a_writable_cache(monkeypatch):
    """Where numba has nowhere to write its cache it raises at decoration; the kernels then
    compile without it instead of failing inference."""
    import numba

    from tinysr.ops import primitives_cpu

    loops = (primitives_cpu._im2col_loop, primitives_cpu._bias_relu_loop, primitives_cpu._tap_sum_loop)
    real = numba.njit

    def njit_without_cache_dir(*args, **options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", njit_without_cache_dir)
    for loop in loops:
        loop.compiled.cache_clear()
    try:
        model = SRCNN(init="he", seed=9)
        y = np.random.default_rng(10).random((12, 30)).astype(np.float32)
        got = _predict(model, y, "numba", block=64)
        np.testing.assert_array_equal(got, _predict(model, y, "numpy", block=64))
    finally:
        for loop in loops:  # the next user compiles with the real numba.njit
            loop.compiled.cache_clear()


def _blas_threads():
    return blas_threads.blas_thread_counts()


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("shape,block", [((3, 4), 4096), ((40, 23), 60), ((61, 17), 100), ((9, 300), 512)])
def test_the_result_does_not_depend_on_the_number_of_threads(kernels, shape, block):
    """Blocks are split among the threads, BLAS is single-threaded in all of them: bit-identical
    for 1 thread, 2, 3 and more threads than blocks (shape (3, 4) is one block)."""
    model = SRCNN(init="he", seed=11)
    model.conv1.bias[...] = np.linspace(-0.3, 0.3, 64).astype(np.float32)
    y = np.random.default_rng(12).random(shape).astype(np.float32)
    with threadpool_limits(2, user_api="blas"):
        one = _predict(model, y, kernels, block=block, workers=1)
        for workers in (None, 2, 3, 16):
            got = _predict(model, y, kernels, block=block, workers=workers)
            np.testing.assert_array_equal(got, one)


def test_blas_threads_are_restored_after_a_prediction_and_after_an_error(monkeypatch):
    model = SRCNN(init="he", seed=13)
    y = np.random.default_rng(14).random((30, 40)).astype(np.float32)
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        assert before and max(before) == 2
        _fused(model, y, block=64, workers=2)
        assert _blas_threads() == before

        def failing_tap_sum(*args):
            raise RuntimeError("a step failed")

        monkeypatch.setitem(fused_predict.STEPS, "tap_sum", failing_tap_sum)
        with pytest.raises(RuntimeError, match="a step failed"):  # raised inside the limited section
            _fused(model, y, block=64, workers=2)
        assert _blas_threads() == before


def _in_thread(fn):
    box = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join(timeout=60)
    assert box, "the thread failed"
    return box[0]


def test_the_limit_takes_effect_from_any_thread_in_turn():
    """threadpoolctl lets one thread at a time control OpenBLAS; tinysr gives control up after
    each prediction, so a prediction from a second thread still gets one BLAS thread."""

    def inside():
        with blas_threads.single_threaded_blas() as limited:
            return limited, _blas_threads()

    with threadpool_limits(2, user_api="blas"):
        assert inside() == (True, [1] * len(_blas_threads()))  # the main thread
        assert _in_thread(inside) == (True, [1] * len(_blas_threads()))  # then another one
        assert inside() == (True, [1] * len(_blas_threads()))  # and the main thread again
        assert max(_blas_threads()) == 2


def test_another_thread_controlling_blas_means_one_worker_and_the_same_numbers():
    """A live thread holding threadpoolctl's control of OpenBLAS: the limit cannot be set, so the
    prediction runs on one worker with BLAS as it is, and is still right."""
    model = SRCNN(init="he", seed=17, dtype=np.float64)
    y = np.random.default_rng(18).random((50, 70))
    holding, release = threading.Event(), threading.Event()

    def hold():
        with threadpool_limits(2, user_api="blas"):
            holding.set()
            release.wait(timeout=60)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(timeout=60)
        with blas_threads.single_threaded_blas() as limited:
            counts = _blas_threads()
        got = _fused(model, y, block=300, workers=2)
    finally:
        release.set()
        t.join()
    if "clear_controlling_thread" not in vars(threadpoolctl.OpenBLASController):
        pytest.skip("this threadpoolctl lets any thread set OpenBLAS's threads")
    assert not limited and max(counts) == 2
    np.testing.assert_allclose(got, _layerwise(model, y), rtol=0, atol=1e-12)


def test_default_workers_follow_blas():
    with threadpool_limits(1, user_api="blas"):
        assert blas_threads.default_workers() == 1
    with threadpool_limits(64, user_api="blas"):
        assert blas_threads.default_workers() == blas_threads.available_cpus()


def test_workers_below_one_are_refused():
    with pytest.raises(ValueError, match="workers"):
        _fused(SRCNN(), np.zeros((4, 4), np.float32), workers=0)


def test_timings_name_every_step():
    model = SRCNN(init="he", seed=15)
    t = {}
    _fused(model, np.random.default_rng(16).random((20, 30)).astype(np.float32),
                                block=64, workers=2, timings=t)
    assert set(t) == {"layer 1 unfold", "layer 1 GEMM", "layer 1 bias+ReLU", "layer 2 GEMM", "layer 2 bias+ReLU",
                      "layer 3 taps GEMM", "layer 3 border", "layer 3 tap sum"}
    assert all(v > 0 for v in t.values())


def test_memory_is_the_image_and_a_few_blocks_per_worker_not_the_tap_planes():
    """z streams through a ring of a few rows per worker: the peak is the padded input, the output
    and each worker's block buffers, where whole-image tap planes would take f3*f3 = 25 floats per
    pixel (48 MB here)."""
    import tracemalloc

    model = SRCNN(init="he", seed=21)
    y = np.random.default_rng(22).random((600, 800)).astype(np.float32)
    _fused(model, y, workers=2)  # numba compiled or loaded before tracing
    tracemalloc.start()
    try:
        out = _fused(model, y, workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == y.shape
    per_worker = 4 * 2**20  # cols (81 x 4096), h1 (64 x 4096), h2 and the ring, float32
    assert peak <= 3 * y.nbytes + 2 * per_worker, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tap_sum_with_ring_rows_and_a_start_equals_a_plain_loop(dtype, h=7, slots=4, r0=-2):
    """primitives_cpu.tap_sum as the fused path calls it: padded row k read from the ring slot
    clamp(r0 + k, 0, h - 1) % slots, the sum started at the bias; against plain loops."""
    from tinysr.ops.primitives_cpu import tap_sum

    rng = np.random.default_rng(17)
    kh, kw, ho, wo = 3, 2, 5, 6
    z = rng.standard_normal((2, 3, kh, kw, slots, wo + kw - 1)).astype(dtype)
    got = tap_sum(z, ho, wo, rows=(r0, h, slots), start=0.25)
    want = np.empty((2, 3, ho, wo), dtype=dtype)
    for n in range(2):
        for o in range(3):
            for r in range(ho):
                for s in range(wo):
                    acc = dtype(0.25)
                    for i in range(kh):
                        k = min(max(r0 + r + i, 0), h - 1) % slots
                        for j in range(kw):
                            acc = dtype(acc + z[n, o, i, j, k, s + j])
                    want[n, o, r, s] = acc
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="tap_sum"):
        tap_sum(z, ho, wo + 1)
