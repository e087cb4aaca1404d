"""Cache-blocked CPU inference for SRCNN networks whose middle layer is 1x1 (9-1-5).

:meth:`SRCNN.predict` on NumPy runs this instead of the layer-by-layer forward pass. It
computes the same function (equal to float rounding; ``tests/test_fused_predict.py``) with far
less memory traffic:

- Layer 1 and layer 2 act on each pixel's 9x9 neighbourhood alone (layer 2 is 1x1), so they run
  over blocks of about ``block`` pixels (whole rows): unfold the block (``(P, 81)``), then
  ``relu(cols @ W1^T + b1)`` ``(P, n1)`` and ``relu(h1 @ W2^T + b2)`` ``(P, n2)``. The block's
  activations stay in the CPU cache, where the layer-by-layer pass writes and rereads an
  ``n1 x H x W`` array several times (64 floats per pixel for 9-1-5).
- Layer 3 (``f3 x f3``, ``n2 -> 1``) is applied "output side": ``z = W3 h2`` gives, per pixel,
  the ``f3*f3`` products of that pixel with every kernel tap, and the output is
  ``b3 + sum_{a,b} z[a*f3+b, i+a, j+b]``. Since ``z`` is a per-pixel linear map of ``h2``,
  replicate-padding ``h2`` (the network's own padding before layer 3) equals replicate-padding
  ``z``, so ``h2`` is never stored: each block writes its ``z`` into the interior of a padded
  ``(f3*f3, H+f3-1, W+f3-1)`` array whose border is filled at the end.

The GEMMs go to BLAS. The unfold and bias + ReLU run as NumPy code or, for images of at least
``NUMBA_MIN_PIXELS``, as the numba loops of :func:`tinysr.cpu_kernels.fused_kernels`, which do
the same float operations in the same order (bit-identical results) in about a third of the
time; below that size numba's start-up would cost more than it saves.

Shapes and units: ``y`` is one ``(H, W)`` Y image on [0, 1], float32 or float64 (the model's
dtype); the result is ``(H, W)`` of the same dtype, unclipped, with the network's per-layer
replicate padding (output size = input size). Memory beyond ``y`` and the result:
``f3*f3 + 1`` floats per padded pixel plus one block's working set.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .backend import is_device_array

DEFAULT_BLOCK = 4096  # pixels per block: h1 (4096 x 64 float32 = 1 MiB) stays in L2/L3
NUMBA_MIN_PIXELS = 1 << 16


def supports(model) -> bool:
    """Whether :func:`predict_fused` applies: NumPy arrays and a 1x1, single-input-channel pair."""
    w1, w2 = model.conv1.weight, model.conv2.weight
    return not is_device_array(w1) and w1.shape[1] == 1 and w2.shape[2:] == (1, 1) \
        and model.conv3.weight.shape[0] == 1


def _unfold_rows(ypad, r0, f, cols):
    # cols (r*w, f*f) <- the f x f window of ypad at rows r0.., one pixel per row of cols.
    w = ypad.shape[1] - f + 1
    r = cols.shape[0] // w
    cols.reshape(r, w, f, f)[...] = sliding_window_view(ypad[r0:r0 + r + f - 1], (f, f))


def _bias_relu(act, bias):
    # act (n, c) <- maximum(act + bias, 0), in place.
    act += bias
    np.maximum(act, 0, out=act)


def _place_rows(z, zpad, r0, p):
    # zpad[k, p + r0 + i, p + j] <- z[k, i * w + j]: a block of rows into the padded planes.
    w = zpad.shape[2] - 2 * p
    zpad[:, p + r0:p + r0 + z.shape[1] // w, p:p + w] = z.reshape(z.shape[0], -1, w)


def _tap_sum(zpad, f, bias, out):
    # out[i, j] <- bias + sum over taps (a, b), a-major, of zpad[a*f + b, i + a, j + b].
    h, w = out.shape
    out[...] = bias
    for a in range(f):
        for b in range(f):
            out += zpad[a * f + b, a:a + h, b:b + w]


# The element-wise steps in NumPy; cpu_kernels.fused_kernels() replaces the first two.
NUMPY_STEPS = {"unfold_rows": _unfold_rows, "bias_relu": _bias_relu, "place_rows": _place_rows, "tap_sum": _tap_sum}


def predict_fused(model, y: np.ndarray, block: int = DEFAULT_BLOCK, kernels: str = "auto") -> np.ndarray:
    """``model.predict(y)`` for a host ``(H, W)`` Y image, computed block by block (see the module).

    ``kernels``: ``"numpy"``, ``"numba"`` or ``"auto"`` (numba from ``NUMBA_MIN_PIXELS`` pixels).
    """
    w1, b1 = model.conv1.weight, model.conv1.bias  # (n1, 1, f1, f1), (n1,)
    w2, b2 = model.conv2.weight, model.conv2.bias  # (n2, n1, 1, 1), (n2,)
    w3, b3 = model.conv3.weight, model.conv3.bias  # (1, n2, f3, f3), (1,)
    n1, _, f1, _ = w1.shape
    n2 = w2.shape[0]
    f3 = w3.shape[2]
    h, w = y.shape
    dt = w1.dtype
    if kernels == "auto":
        kernels = "numba" if h * w >= NUMBA_MIN_PIXELS else "numpy"
    if kernels == "numba":
        from .cpu_kernels import fused_kernels  # noqa: PLC0415  (numba compiles on first use)

        k = {**NUMPY_STEPS, **fused_kernels()}
    elif kernels == "numpy":
        k = NUMPY_STEPS
    else:
        raise ValueError(f"kernels must be 'auto', 'numpy' or 'numba', got {kernels!r}")
    w1t = np.ascontiguousarray(w1.reshape(n1, f1 * f1).T)  # (f1*f1, n1)
    w2t = np.ascontiguousarray(w2.reshape(n2, n1).T)  # (n1, n2)
    w3r = np.ascontiguousarray(w3.reshape(n2, f3 * f3).T)  # (f3*f3, n2): row a*f3+b is tap (a, b)

    p1, p3 = f1 // 2, f3 // 2
    ypad = np.pad(np.asarray(y, dtype=dt), p1, mode="edge")  # layer 1's replicate padding
    zpad = np.empty((f3 * f3, h + 2 * p3, w + 2 * p3), dtype=dt)
    rows = max(1, min(h, block // max(w, 1)))
    cols = np.empty((rows * w, f1 * f1), dtype=dt)
    h1 = np.empty((rows * w, n1), dtype=dt)
    h2 = np.empty((rows * w, n2), dtype=dt)
    zt = np.empty(f3 * f3 * rows * w, dtype=dt)
    for r0 in range(0, h, rows):
        n = min(rows, h - r0) * w
        c, a1, a2 = cols[:n], h1[:n], h2[:n]
        z = zt[:f3 * f3 * n].reshape(f3 * f3, n)  # contiguous, so BLAS writes it directly
        k["unfold_rows"](ypad, r0, f1, c)
        np.matmul(c, w1t, out=a1)
        k["bias_relu"](a1, b1)
        np.matmul(a1, w2t, out=a2)
        k["bias_relu"](a2, b2)
        np.matmul(w3r, a2.T, out=z)  # (f3*f3, n): this block's taps, channel-first
        k["place_rows"](z, zpad, r0, p3)
    # replicate padding of z (= of h2): columns first, then whole rows (corners follow)
    zpad[:, p3:p3 + h, :p3] = zpad[:, p3:p3 + h, p3:p3 + 1]
    zpad[:, p3:p3 + h, p3 + w:] = zpad[:, p3:p3 + h, p3 + w - 1:p3 + w]
    zpad[:, :p3] = zpad[:, p3:p3 + 1]
    zpad[:, p3 + h:] = zpad[:, p3 + h - 1:p3 + h]
    out = np.empty((h, w), dtype=dt)
    k["tap_sum"](zpad, f3, dt.type(b3[0]), out)
    return out
