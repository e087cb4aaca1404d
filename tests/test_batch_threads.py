"""CPU training over worker threads (tinysr.ops.engine.Engine.over_batch: Conv2d on runs of the batch).

Each worker takes a contiguous run of samples with BLAS on one thread; the parameter gradients
are summed over the batch after the workers, in one order. So a layer's outputs and gradients are
those of the whole-batch NumPy expressions with a one-thread BLAS, bit for bit, for any number of
workers and any step size, and a training run does not depend on the thread count.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tinysr.nn.training import train_step
from tinysr.nn.layers import Conv2d, MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import Adam
from tinysr.ops import blas_threads
from tinysr.ops.engine import Engine
from tinysr.ops.padding import pad, pad_backward
from tinysr.ops.primitives_cpu import col2im, tap_spread, tap_sum
from tinysr.ops.shapes import pad_amounts


def _unfold(xpad, kh, kw):
    # im2col as a NumPy slice loop: (N, C, Hp, Wp) -> (N, C*kh*kw, Ho*Wo)
    n, c, hp, wp = xpad.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    cols = np.empty((n, c, kh, kw, ho, wo), xpad.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xpad[:, :, i:i + ho, j:j + wo]
    return cols.reshape(n, c * kh * kw, ho * wo)


def _whole_batch(w, b, x, dy, padding, relu, algo):
    """The layer as whole-batch NumPy expressions, run with a one-thread BLAS: (y, dx, dW, db).
    ``im2col``: unfold, then one matmul over the batch; ``output_side``: the matmul on the padded
    input into O*kh*kw rows, then the shifted sum."""
    o, c, kh, kw = w.shape
    n = x.shape[0]
    amounts = pad_amounts(kh, kw, padding)
    with threadpool_limits(1, user_api="blas"):
        xpad = pad(x, amounts, padding)
        _, _, hp, wp = xpad.shape
        ho, wo = hp - kh + 1, wp - kw + 1
        if algo == "im2col":
            cols = _unfold(xpad, kh, kw)
            y = np.matmul(w.reshape(o, -1), cols).reshape(n, o, ho, wo)
        else:
            w_rows = w.transpose(0, 2, 3, 1).reshape(o * kh * kw, c)
            y = tap_sum(np.matmul(w_rows, xpad.reshape(n, c, -1)).reshape(n, o, kh, kw, hp, wp), ho, wo)
        y = y + b[None, :, None, None]
        if relu:
            y = np.maximum(y, 0)
            dy = dy * (y > 0)
        if algo == "im2col":
            dy2 = dy.reshape(n, o, -1)
            dw = np.matmul(dy2, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
            dxpad = col2im(np.matmul(w.reshape(o, -1).T, dy2), xpad.shape, kh, kw)
        else:
            d = tap_spread(dy, kh, kw, hp, wp).reshape(n, o * kh * kw, hp * wp)
            gw = np.matmul(d, xpad.reshape(n, c, -1).transpose(0, 2, 1)).sum(axis=0)
            dw = gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
            dxpad = np.matmul(w.transpose(1, 0, 2, 3).reshape(c, o * kh * kw), d).reshape(xpad.shape)
        dx = pad_backward(dxpad, amounts, padding)
    return y, dx, dw, dy.sum(axis=(0, 2, 3))


CASES = [  # (x shape, w shape, padding, relu, algorithm)
    ((5, 1, 13, 11), (8, 1, 9, 9), "valid", True, "im2col"),     # SRCNN's layer 1, a non-square patch
    ((4, 8, 7, 9), (6, 8, 1, 1), "valid", True, "im2col"),       # layer 2 (1x1: no unfolding)
    ((3, 6, 9, 8), (4, 6, 3, 5), "replicate", False, "im2col"),  # a folded input gradient, padded
    ((6, 3, 6, 7), (2, 3, 3, 3), "zero", True, "im2col"),
    ((5, 8, 11, 9), (1, 8, 5, 5), "valid", False, "output_side"),   # layer 3
    ((3, 6, 9, 8), (4, 6, 3, 5), "replicate", True, "output_side"),  # padded
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xshape,wshape,padding,relu,algo", CASES)
def test_a_layer_gives_the_one_blas_thread_numbers_for_any_workers(xshape, wshape, padding, relu, algo, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal(wshape).astype(dtype)
    b = (0.3 * rng.standard_normal(wshape[0])).astype(dtype)
    conv = Conv2d(w, b, relu=relu, algo=algo)
    dy = rng.standard_normal(conv.forward(x, padding, train=False).shape).astype(dtype)
    want = _whole_batch(w, b, x, dy, padding, relu, algo)
    with threadpool_limits(2, user_api="blas"):
        for workers in (1, 2, 3, 17, None):
            conv = Conv2d(w, b, relu=relu, algo=algo, engine=Engine(workers))
            y = conv.forward(x, padding)
            dx = conv.backward(dy)
            for got, ref, what in zip((y, dx, conv.grad_weight, conv.grad_bias), want, ("y", "dx", "dW", "db")):
                np.testing.assert_array_equal(got, ref, err_msg=f"{what}, workers={workers}")


@pytest.mark.parametrize("algo", ["im2col", "output_side"])
def test_the_step_size_inside_a_worker_does_not_change_the_numbers(algo):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 5, 10, 9)).astype(np.float32)
    w, b = rng.standard_normal((2, 5, 5, 3)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    dy = rng.standard_normal((7, 2, 6, 7)).astype(np.float32)

    def run(workers, step_bytes=1 << 20):
        conv = Conv2d(w, b, algo=algo, relu=True, engine=Engine(workers, step_bytes=step_bytes))
        y = conv.forward(x, "valid")
        return y, conv.backward(dy), conv.grad_weight, conv.grad_bias

    with threadpool_limits(2, user_api="blas"):
        whole = run(1)  # a step of 1 MiB holds all 7 samples
        for workers in (1, 2, 3):
            for got, ref in zip(run(workers, step_bytes=1), whole):  # one sample per step
                np.testing.assert_array_equal(got, ref)


def test_training_runs_do_not_depend_on_the_thread_count():
    """Three Adam steps of SRCNN at batch 6: the same weights with 1, 2 and 3 workers and with
    the default, BLAS on two threads or on one (where tinysr leaves BLAS as it is)."""
    rng = np.random.default_rng(9)
    x = rng.random((6, 1, 33, 33), dtype=np.float32)
    t = rng.random((6, 1, 21, 21), dtype=np.float32)

    def run(workers, blas):
        model = SRCNN(init="he", seed=3, engine=Engine(workers))
        opt = Adam(model.params, lr=1e-3)
        with threadpool_limits(blas, user_api="blas"):
            losses = [float(train_step(model, MSELoss(), opt, x, t)) for _ in range(3)]
        return losses, {k: v.copy() for k, v in model.params.items()}

    ref_losses, ref = run(1, 1)
    for workers, blas in ((None, 1), (1, 2), (2, 2), (3, 2), (None, 2)):
        losses, params = run(workers, blas)
        assert losses == ref_losses, (workers, blas)
        for k in ref:
            np.testing.assert_array_equal(params[k], ref[k], err_msg=f"{k}, workers={workers}, blas={blas}")


def test_run_split_covers_the_range_once_and_reports_errors():
    seen = []
    blas_threads.run_split(lambda lo, hi: seen.append((lo, hi)), 10, workers=3)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]
    blas_threads.run_split(lambda lo, hi: seen.append("never"), 0, workers=2)
    assert "never" not in seen
    with pytest.raises(ValueError, match="at least 1"):
        blas_threads.run_split(lambda lo, hi: None, 4, workers=0)
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads.blas_thread_counts()

        def fail(lo, hi):
            if lo > 0:
                raise RuntimeError("a worker failed")

        with pytest.raises(RuntimeError, match="a worker failed"):
            blas_threads.run_split(fail, 4, workers=2)
        assert blas_threads.blas_thread_counts() == before


def test_backward_after_a_threaded_forward_on_one_sample_and_a_big_batch_of_few_workers():
    """One sample with workers=None keeps BLAS's own threads (no split possible); more workers
    than samples use one per sample. Both still equal the one-worker numbers to rounding."""
    rng = np.random.default_rng(10)
    w, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    for n in (1, 2):
        x = rng.standard_normal((n, 2, 8, 8))
        dy = rng.standard_normal((n, 4, 6, 6))
        outs = []
        for workers in (None, 1, 5):
            conv = Conv2d(w, b, relu=True, engine=Engine(workers))
            outs.append((conv.forward(x), conv.backward(dy), conv.grad_weight))
        for got in outs[1:]:
            for a, ref in zip(got, outs[0]):
                np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)


def test_im2col_numba_pass_equals_the_slice_loop_and_checks_out():
    from tinysr.ops.primitives_cpu import im2col

    x = np.random.default_rng(11).standard_normal((3, 4, 12, 10)).astype(np.float32)[:, ::2, 1:, ::-1]
    want = _unfold(x, 3, 4)
    np.testing.assert_array_equal(im2col(x, 3, 4), want)
    out = np.empty_like(want)
    assert im2col(x, 3, 4, out=out) is out
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(im2col(np.arange(24).reshape(1, 2, 3, 4), 2, 2), _unfold(np.arange(24).reshape(1, 2, 3, 4), 2, 2))
    with pytest.raises(ValueError, match="C-contiguous float32 array of shape"):
        im2col(x, 3, 4, out=np.empty_like(want)[:, :, ::2])


def _train_in_child(queue):
    rng = np.random.default_rng(12)
    x = rng.random((4, 1, 33, 33), dtype=np.float32)
    model = SRCNN(init="he", seed=5, engine=Engine(2))
    queue.put(float(train_step(model, MSELoss(), Adam(model.params), x, x[:, :, 6:27, 6:27].copy())))


def test_a_process_forked_after_training_started_can_train():
    """The worker pool is kept per process: a forked child (multiprocessing's default start on
    Linux) has the pool object without its threads, and must not queue work to it forever."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    rng = np.random.default_rng(13)
    x = rng.random((4, 1, 33, 33), dtype=np.float32)
    model = SRCNN(init="he", seed=5, engine=Engine(2))
    want = float(train_step(model, MSELoss(), Adam(model.params), x, x[:, :, 6:27, 6:27].copy()))
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_train_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in its training step")
    assert child.exitcode == 0
    assert np.isfinite(queue.get(timeout=5)) and np.isfinite(want)
