"""Cache-blocked, multi-threaded CPU inference for SRCNN networks whose middle layer is 1x1 (9-1-5).

:meth:`SRCNN.predict` on NumPy runs this instead of the layer-by-layer forward pass. It
computes the same function (equal to float rounding; ``tests/test_fused_predict.py``) with far
less memory traffic, on several cores:

- Layer 1 and layer 2 act on each pixel's 9x9 neighbourhood alone (layer 2 is 1x1), so they run
  over blocks of about ``block`` pixels (whole rows), channel-major: unfold the block into
  ``cols`` ``(f1*f1, n)`` (row ``a*f1+b`` is the input shifted by ``(a, b)``: runs of contiguous
  copies), then ``h1 = relu(W1 @ cols + b1)`` ``(n1, n)`` and ``h2 = relu(W2 @ h1 + b2)``
  ``(n2, n)``. The block's activations stay in the CPU cache, where the layer-by-layer pass writes
  and rereads an ``n1 x H x W`` array several times (64 floats per pixel for 9-1-5).
- Layer 3 (``f3 x f3``, ``n2 -> 1``) is applied "output side": ``z = W3 h2`` gives, per pixel,
  the ``f3*f3`` products of that pixel with every kernel tap, and the output is
  ``b3 + sum_{a,b} z[a*f3+b, i+a, j+b]`` over ``z`` padded by ``f3//2``. Since ``z`` is a
  per-pixel linear map of ``h2``, replicate-padding ``h2`` (the network's own padding before
  layer 3) equals replicate-padding ``z``, so ``h2`` is never stored: the GEMM writes each block's
  ``z`` straight into a small ring of ``z`` rows ``(f3*f3, ring_rows, W+f3-1)``, and as soon as
  the ring holds the ``f3`` rows an output row needs, the tap sum writes that row (the padded
  rows above and below the image are read as the edge rows). For the padded columns the blocks
  span the padded width: layers 1-3 also run on the ``f3//2`` border columns each side (from the
  input padded that much more), and those values are then overwritten with copies of the edge
  columns, as the padding of ``h2`` demands; that costs ``(f3-1)/W`` more work and saves a copy.
  So ``z`` never reaches memory either: the image streams through the cache in row bands.

**Threads.** The output rows are split into ``workers`` contiguous bands, one per thread with its
own buffers and ring. Blocks start at multiples of the block height for every band, and a band
also computes the ``f3//2`` rows of ``z`` beyond each of its edges (the blocks that hold them),
so a block is the same float computation whichever thread runs it. BLAS runs single-threaded
throughout (:func:`tinysr.ops.blas_threads.run_split`): the result is bit-identical for any
``workers``. Where BLAS already runs on one thread (``OPENBLAS_NUM_THREADS=1``, a Dask worker)
and ``workers`` is not given, the prediction runs on one thread and leaves BLAS alone; the result
is the same. The element-wise steps (unfold, bias + ReLU, tap sum) are numba loops that release
the GIL (:data:`STEPS`), so the threads run in parallel.

Shapes and units: ``y`` is one ``(H, W)`` Y image on [0, 1], float32 or float64 (the model's
dtype); the result is ``(H, W)`` of the same dtype, unclipped, with the network's per-layer
replicate padding (output size = input size). Memory beyond ``y`` and the result: the padded
input (one float per pixel) and, per worker, one block's working set and its ring (about 4 MB
per worker at 1920 columns), so :func:`tinysr.image.inference.restore_y` needs no tiles for it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np

from tinysr.ops import primitives_cpu
from tinysr.ops.backend import is_device_array
from tinysr.ops.blas_threads import run_split



def supports(model) -> bool:
    """Whether :func:`predict_fused` applies: NumPy arrays, three layers, a 1x1, single-input-channel
    pair and one output channel."""
    if len(model.layers) != 3:
        return False
    w1, w2, w3 = (layer.weight for layer in model.layers)
    return not is_device_array(w1) and w1.shape[1] == 1 and w2.shape[2:] == (1, 1) and w3.shape[0] == 1


def _tap_sum(ring, f, bias, out, i0, h):
    # out (n, w) <- output rows i0.. of an image of h rows: bias + the tap sum over z rows i0-f//2 ..,
    # each clamped to 0..h-1 (the replicate padding of h2, hence of z) and found in ring slot k % ring_rows.
    n, w = out.shape
    primitives_cpu.tap_sum(ring.reshape(1, 1, f, f, *ring.shape[1:]), n, w, out=out.reshape(1, 1, n, w),
                           rows=(i0 - f // 2, h, ring.shape[1]), start=bias)


def _unfold(ypad, r0, f, cols):
    # cols (f*f, r*wq) <- row a*f+b holds ypad[r0+i+a, j+b] for the block's rows i and columns j: im2col
    r = cols.shape[1] // (ypad.shape[1] - f + 1)
    primitives_cpu.im2col(ypad[None, None, r0:r0 + r + f - 1], f, f, out=cols[None])


# The element-wise steps: numba loops without the GIL (NumPy's float operations, in NumPy's order).
STEPS = {"unfold": _unfold, "bias_relu": lambda act, bias: primitives_cpu.bias_relu_(act[None], bias),
         "tap_sum": _tap_sum}


def predict_fused(model, y: np.ndarray, engine=None, timings: dict | None = None) -> np.ndarray:
    """``model``'s prediction for a host ``(H, W)`` Y image, computed block by block (see the module).

    Args:
        engine: a :class:`tinysr.ops.engine.Engine` (``None``: the model's): its ``block`` (pixels per
            block) and ``workers`` (CPU threads; ``None``: the cores BLAS would use). The result
            does not depend on ``workers``. While a prediction on more than one thread runs, BLAS
            is single-threaded process-wide and another such prediction waits
            (:mod:`tinysr.ops.blas_threads`).
        timings: if a dict, each step's seconds are added to it under the step's name, summed over
            the threads (thread-seconds; ``bench/profile_infer.py`` prints them).
    """
    engine = engine if engine is not None else model.engine
    block, workers = engine.block, engine.workers
    # (n1, 1, f1, f1), (n1,); (n2, n1, 1, 1), (n2,); (1, n2, f3, f3), (1,)
    (w1, b1), (w2, b2), (w3, b3) = ((layer.weight, layer.bias) for layer in model.layers)
    n1, _, f1, _ = w1.shape
    n2 = w2.shape[0]
    f3 = w3.shape[2]
    h, w = y.shape
    dt = w1.dtype
    k = STEPS
    clock, lock = time.perf_counter, threading.Lock()
    spent = defaultdict(float)

    def step(name, fn, *args):
        if timings is None:
            fn(*args)
            return
        t0 = clock()
        fn(*args)
        with lock:
            spent[name] += clock() - t0

    w1r = np.ascontiguousarray(w1.reshape(n1, f1 * f1))  # (n1, f1*f1)
    w2r = np.ascontiguousarray(w2.reshape(n2, n1))  # (n2, n1)
    w3r = np.ascontiguousarray(w3.reshape(n2, f3 * f3).T)  # (f3*f3, n2): row a*f3+b is tap (a, b)
    p1, p3 = f1 // 2, f3 // 2
    wq = w + 2 * p3  # the blocks' width: the image's columns and layer 3's padding columns
    # layer 1's replicate padding, and p3 more columns each side for the border columns' inputs
    ypad = np.pad(np.asarray(y, dtype=dt), ((p1, p1), (p1 + p3, p1 + p3)), mode="edge")
    out = np.empty((h, w), dtype=dt)
    rows = max(1, min(h, block // wq))  # z rows per block; blocks start at multiples of rows
    # A worker's ring of z rows: z row i lives in slot i % ring_rows. It holds one block beyond the
    # 2*p3 rows the oldest pending output row still needs, and a multiple of rows, so that no
    # block wraps around it.
    ring_rows = rows * -(-(rows + 2 * p3) // rows)

    def band(i0: int, i1: int) -> None:
        # output rows i0..i1: the blocks that hold z rows i0-p3 .. i1+p3 (within the image), each
        # followed by the tap sum of the output rows whose z rows are then all in the ring
        n_max = rows * wq
        cols = np.empty(f1 * f1 * n_max, dtype=dt)
        h1 = np.empty(n1 * n_max, dtype=dt)
        h2 = np.empty(n2 * n_max, dtype=dt)
        ring = np.empty((f3 * f3, ring_rows, wq), dtype=dt)
        done = i0
        first = max(i0 - p3, 0) // rows * rows
        for r0 in range(first, min(i1 + p3, h), rows):
            r = min(rows, h - r0)
            n = r * wq
            c, a1, a2 = cols[:f1 * f1 * n].reshape(-1, n), h1[:n1 * n].reshape(n1, n), h2[:n2 * n].reshape(n2, n)
            s0 = r0 % ring_rows
            z = ring[:, s0:s0 + r].reshape(f3 * f3, n)  # a view: the GEMM writes the ring
            step("layer 1 unfold", k["unfold"], ypad, r0, f1, c)
            step("layer 1 GEMM", np.matmul, w1r, c, a1)
            step("layer 1 bias+ReLU", k["bias_relu"], a1, b1)
            step("layer 2 GEMM", np.matmul, w2r, a1, a2)
            step("layer 2 bias+ReLU", k["bias_relu"], a2, b2)
            step("layer 3 taps GEMM", np.matmul, w3r, a2, z)
            step("layer 3 border", _replicate_columns, ring, s0, s0 + r, p3)
            ready = i1 if r0 + r == h else min(i1, r0 + r - p3)  # rows up to r0+r-1 are in the ring
            if ready > done:
                step("layer 3 tap sum", k["tap_sum"], ring, f3, dt.type(b3[0]), out[done:ready], done, h)
                done = ready

    # One band of output rows per worker thread, BLAS single-threaded (or left alone where it
    # already runs one thread and workers is not given): see run_split.
    run_split(band, h, workers)
    if timings is not None:
        for name, sec in spent.items():
            timings[name] = timings.get(name, 0.0) + sec
    return out


def _replicate_columns(ring, i0, i1, p):
    # ring slots i0..i1: the p columns each side <- copies of the first and last interior column.
    wq = ring.shape[2]
    ring[:, i0:i1, :p] = ring[:, i0:i1, p:p + 1]
    ring[:, i0:i1, wq - p:] = ring[:, i0:i1, wq - p - 1:wq - p]
