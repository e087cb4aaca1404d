"""Per-kernel GPU times at SRCNN 9-1-5's training shapes (batch 128), next to the plain CuPy
expression each raw kernel replaces.

Groups (one per kernel; ``tinysr-cuda`` is the raw kernel of :mod:`tinysr.ops.cuda_kernels`,
``cupy-generic`` the same result from ordinary CuPy array expressions):

- ``cuda-bias-relu``       ``max(y + b, 0)`` in place on layer 2's ``(128, 32, 25, 25)`` output
  (generic: ``y += b`` then ``maximum(y, 0, out=y)``, two passes).
- ``cuda-relu-backward``   ``dy * (y > 0)`` on layer 1's ``(128, 64, 25, 25)`` activations.
- ``cuda-mse``             loss and gradient on ``(128, 1, 21, 21)`` (generic: diff, sum, divide).
- ``cuda-momentum``        the update of all 8,129 parameters (``tinysr-cuda``: MomentumSGD on a
  model's flat parameter and gradient buffers; generic: its loop of expressions per parameter).
- ``cuda-im2col-5x5``      layer 3's unfold of ``(128, 32, 25, 25)`` (generic: 25 slice copies).
- ``cuda-col2im-5x5``      its fold back (generic: 25 slice additions, same order).

The first-layer convolution kernels are in test_bench_conv.py (``tinysr-cuda-conv1``). GPU
only: every entry skips with the reason where CuPy or a GPU is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchutil import QUICK_TRAIN_BATCH, TRAIN_BATCH

from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD

IMPLS = ["tinysr-cuda", "cupy-generic"]


def _n(quick: bool) -> int:
    return QUICK_TRAIN_BATCH if quick else TRAIN_BATCH


def _rand(cp, shape, seed=0):
    return cp.asarray(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


@pytest.fixture
def setup(request, quick):
    """``(cp, ck, n)`` for a GPU kernel benchmark."""
    cp = request.getfixturevalue("cupy")
    from tinysr.ops import cuda_kernels as ck  # noqa: PLC0415  (GPU only)

    return cp, ck, _n(quick)


@pytest.mark.benchmark(group="cuda-bias-relu")
@pytest.mark.parametrize("impl", IMPLS)
def test_bias_relu(setup, measure, impl):
    cp, ck, n = setup
    y, b = _rand(cp, (n, 32, 25, 25)), _rand(cp, (32,), 1)
    if impl == "tinysr-cuda":
        fn = lambda: ck.bias_relu_(y, b)  # noqa: E731
    else:
        def fn():
            y[...] += b[None, :, None, None]
            return cp.maximum(y, 0, out=y)
    measure(fn, elements=int(y.size))


@pytest.mark.benchmark(group="cuda-relu-backward")
@pytest.mark.parametrize("impl", IMPLS)
def test_relu_backward(setup, measure, impl):
    cp, ck, n = setup
    dy, y = _rand(cp, (n, 64, 25, 25)), cp.maximum(_rand(cp, (n, 64, 25, 25), 1), 0)
    fn = (lambda: ck.relu_backward(dy, y)) if impl == "tinysr-cuda" else (lambda: dy * (y > 0))
    measure(fn, elements=int(y.size))


@pytest.mark.benchmark(group="cuda-mse")
@pytest.mark.parametrize("impl", IMPLS)
def test_mse(setup, measure, impl):
    cp, ck, n = setup
    pred, target = _rand(cp, (n, 1, 21, 21)), _rand(cp, (n, 1, 21, 21), 1)
    if impl == "tinysr-cuda":
        fn = lambda: ck.mse_loss_grad(pred, target)  # noqa: E731
    else:
        def fn():
            d = pred - target
            return cp.sum(d * d) / (2 * n), d / np.float32(n)
    measure(fn, elements=int(pred.size))


@pytest.mark.benchmark(group="cuda-momentum")
@pytest.mark.parametrize("impl", IMPLS)
def test_momentum(setup, measure, impl):
    cp, ck, _ = setup
    model = SRCNN(init="he", seed=0, xp=cp)
    params = model.params if impl == "tinysr-cuda" else dict(model.params)  # plain dict: the loop
    opt = MomentumSGD(params, lr={"conv1": 1e-4, "conv2": 1e-4, "conv3": 1e-5})
    grads = SRCNN(init="he", seed=1, xp=cp).params  # a flat buffer of views, like a model's gradients
    measure(lambda: opt.step(params, grads), elements=int(sum(p.size for p in params.values())))


@pytest.mark.benchmark(group="cuda-im2col-5x5")
@pytest.mark.parametrize("impl", IMPLS)
def test_im2col(setup, measure, impl):
    cp, ck, n = setup
    x = _rand(cp, (n, 32, 25, 25))
    if impl == "tinysr-cuda":
        fn = lambda: ck.im2col_gpu(x, 5, 5)  # noqa: E731
    else:
        def fn():
            cols = cp.empty((n, 32, 5, 5, 21, 21), dtype=x.dtype)
            for i in range(5):
                for j in range(5):
                    cols[:, :, i, j] = x[:, :, i:i + 21, j:j + 21]
            return cols.reshape(n, 800, 441)
    measure(fn, elements=int(n * 800 * 441))


@pytest.mark.benchmark(group="cuda-col2im-5x5")
@pytest.mark.parametrize("impl", IMPLS)
def test_col2im(setup, measure, impl):
    cp, ck, n = setup
    cols = _rand(cp, (n, 800, 441))
    if impl == "tinysr-cuda":
        fn = lambda: ck.col2im_gpu(cols, (n, 32, 25, 25), 5, 5)  # noqa: E731
    else:
        cols6 = cols.reshape(n, 32, 5, 5, 21, 21)

        def fn():
            out = cp.zeros((n, 32, 25, 25), dtype=cols.dtype)
            for i in range(5):
                for j in range(5):
                    out[:, :, i:i + 21, j:j + 21] += cols6[:, :, i, j]
            return out
    measure(fn, elements=int(cols.size))
