"""SRCNN's layers with explicit ``forward`` and ``backward``; no autograd engine.

Each layer caches in ``forward`` exactly what its ``backward`` needs (the comment in each
``forward`` says what) and its ``backward`` returns the input gradient and fills the layer's
parameter gradients. Arrays are NCHW; float32 by default, float64 for gradient checks.
All arrays of one call must live on the same device (see :mod:`tinysr.backend`).
"""

from __future__ import annotations

import numpy as np

from . import cpu_kernels, cuda_kernels
from .backend import get_array_module, is_device_array
from .blas_threads import run_split
from .im2col import col2im, im2col, pad, pad_backward, shift_spread, shift_sum
from .shapes import check_padding, conv_output_hw, pad_amounts
from .workspace import empty

DIRECT_KMAX = cuda_kernels.CONV1_KMAX  # largest kernel edge the direct (GPU) conv kernel holds


class Conv2d:
    """Stride-1 2-D correlation (no kernel flip), optionally followed by a fused ReLU.

    ``y[n, o, r, s] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, r + i, s + j]``, then
    ``max(y, 0)`` when ``relu=True`` (SRCNN's first two layers).

    Parameters ``weight`` ``(O, C, kh, kw)`` and ``bias`` ``(O,)`` are held as arrays and
    updated in place by the optimiser; ``grad_weight`` and ``grad_bias`` are filled by
    :meth:`backward`. ``need_input_grad=False`` (SRCNN's first layer) skips the input gradient.

    Algorithms, all giving the same result up to float rounding:

    - ``"im2col"``: unfold the input (``C*kh*kw`` rows), then one GEMM. Cheapest when ``C <= O``
      (SRCNN's layers 1 and 2; a 1x1 kernel needs no unfolding at all).
    - ``"output_side"``: GEMM on the raw input into ``O*kh*kw`` rows, then a shifted sum
      (:func:`tinysr.im2col.shift_sum`). Cheapest on the CPU when ``O < C`` (layer 3: 32 -> 1
      channels, 25 rows instead of 800).
    - ``"direct"`` (GPU only): the shared-memory CUDA kernel for one input channel
      (:func:`tinysr.cuda_kernels.conv1_forward`, bias and ReLU fused) and its parameter-gradient
      kernel. It computes no input gradient, so it serves layer 1 and inference.

    ``algo="auto"`` picks ``direct`` on the GPU where it applies; otherwise the ``C``-vs-``O``
    rule, except that GPU training always takes ``im2col`` (unfold and fold are raw kernels
    there). For layer 3 at 3840x2160 the output side holds 25 rows per pixel instead of 800.
    On the GPU, the output side's inference adds the taps in one kernel that pads by indexing
    (:func:`tinysr.cuda_kernels.taps_sum`), and ``im2col`` with a kernel larger than 1x1 unfolds
    the batch rows outermost, ``(C*kh*kw, N, Ho*Wo)``, so that forward and backward are 2-D
    GEMMs on views (:meth:`_forward_batch`).
    ``col2im_impl`` chooses the CPU fold (``"numpy"`` or ``"numba"``, same numbers).

    Bias and ReLU: one pass over ``y`` in place, a numba loop on the CPU
    (:func:`tinysr.cpu_kernels.bias_relu_`, the same numbers as ``y += b`` then ``max(y, 0)``) and
    a raw kernel on the GPU (:func:`tinysr.cuda_kernels.bias_relu_`); without ReLU, ``y += b``.
    The ReLU's backward is one pass too (:func:`tinysr.cpu_kernels.relu_backward`).

    CPU threads: forward and backward split the batch into one contiguous run of samples per
    worker thread, BLAS single-threaded inside them, and sum the parameter gradients over the
    batch afterwards in one fixed order (:meth:`_over_batch`). So the numbers are the same for
    any number of threads, and equal to those of the whole-batch code on a one-thread BLAS.
    With a :class:`tinysr.workspace.Workspace` the arrays a call needs are kept for the next.
    """

    ALGOS = ("auto", "im2col", "output_side", "direct")

    def __init__(self, weight, bias, need_input_grad: bool = True, col2im_impl: str = "numpy",
                 algo: str = "auto", relu: bool = False):
        if weight.ndim != 4:
            raise ValueError(f"conv weight must be (O, C, kh, kw), got shape {weight.shape}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"conv bias must have shape ({weight.shape[0]},), got {bias.shape}")
        if weight.dtype != bias.dtype:
            raise TypeError(f"conv weight is {weight.dtype} but bias is {bias.dtype}")
        if algo not in self.ALGOS:
            raise ValueError(f"unknown conv algorithm {algo!r}: choose one of {', '.join(self.ALGOS)}")
        self.weight, self.bias = weight, bias
        self.grad_weight = self.grad_bias = None
        self.need_input_grad = need_input_grad
        self.col2im_impl = col2im_impl
        self.algo = algo
        self.relu = bool(relu)
        self._cache = None

    def _algorithm(self, device: bool = False, train: bool = False) -> str:
        o, c, kh, kw = self.weight.shape
        direct_fits = device and c == 1 and max(kh, kw) <= DIRECT_KMAX and not (train and self.need_input_grad)
        if self.algo == "direct" and not direct_fits:
            raise ValueError("the direct conv kernel runs on the GPU, for one input channel, kernels up to "
                             f"{DIRECT_KMAX}x{DIRECT_KMAX}, and computes no input gradient")
        if self.algo != "auto":
            return self.algo
        if direct_fits:
            return "direct"
        fewer_outputs = o < c and kh * kw > 1
        if device:  # training: unfold + GEMM; inference: the output side keeps O*kh*kw rows, not C*kh*kw
            return "output_side" if fewer_outputs and not train else "im2col"
        return "output_side" if fewer_outputs else "im2col"

    def _check_input(self, x):
        o, c, kh, kw = self.weight.shape
        if x.ndim != 4:
            raise ValueError(f"conv input must be NCHW (4-D), got shape {x.shape}")
        if x.shape[1] != c:
            raise ValueError(f"conv input has {x.shape[1]} channels, the layer expects {c}")
        if x.dtype != self.weight.dtype:
            raise TypeError(f"conv input is {x.dtype} but the weights are {self.weight.dtype}")
        get_array_module(x, self.weight)  # raises on host/device mix

    def forward(self, x, padding: str = "valid", train: bool = True, workers: int | None = None,
                workspace=None):
        """``x`` ``(N, C, H, W)`` -> ``(N, O, Ho, Wo)``; padding ``valid``/``zero``/``replicate``.

        ``train=False`` keeps no cache (inference). ``workers``: on the CPU, threads over the batch
        (``None``: :func:`tinysr.blas_threads.default_workers`; the backward pass uses the same),
        each on a contiguous run of samples with BLAS single-threaded, so the result is the same
        for any worker count (see :meth:`_over_batch`). Ignored on the GPU. ``workspace``: a
        :class:`tinysr.workspace.Workspace` whose arrays this call and its backward reuse (the
        output, the cache and the input gradient then live until the next step; see there).
        """
        self._check_input(x)
        check_padding(padding)
        xp = get_array_module(x)
        device = is_device_array(x)
        o, c, kh, kw = self.weight.shape
        n, _, h, w = x.shape
        ho, wo = conv_output_hw(h, w, kh, kw, padding)
        amounts = pad_amounts(kh, kw, padding)
        algo = self._algorithm(device, train)
        if algo == "im2col" and device and (kh, kw) != (1, 1):
            algo = "im2col_batch"  # the GPU unfold: one 2-D GEMM for the batch (_forward_batch)
        if algo == "im2col_batch":
            xpad = pad(x, amounts, padding)
            xpad_shape = xpad.shape
            y = empty(workspace, self, "y", (n, o, ho, wo), x.dtype, xp)
            # Cache: cols (C*kh*kw, N, Ho*Wo) (for the weight gradient); the geometry folds dx back.
            saved = self._forward_batch(xp.ascontiguousarray(xpad), y, workspace)
        elif algo == "direct":
            x = xp.ascontiguousarray(x)
            y = cuda_kernels.conv1_forward(x, self.weight, self.bias, padding, relu=self.relu)
            # Cache: the input itself; the gradient kernel re-reads each tap from it.
            saved, xpad_shape = x, None
        elif algo == "output_side" and device and not train:
            # GPU inference: z from the unpadded input, then one tap-sum kernel that pads by indexing
            # and adds bias (and ReLU): no padded copy, no launch per tap. Nothing is cached.
            x3 = xp.ascontiguousarray(x).reshape(n, c, h * w)
            w_rows = self.weight.transpose(0, 2, 3, 1).reshape(o * kh * kw, c)  # (O*kh*kw, C)
            z = xp.matmul(w_rows, x3[0])[None] if n == 1 else xp.matmul(w_rows, x3)  # (N, O*kh*kw, H*W)
            y = empty(workspace, self, "y", (n, o, ho, wo), x.dtype, xp)
            cuda_kernels.taps_sum(z.reshape(n, o * kh * kw, h, w), self.bias, kh, kw, padding, self.relu, out=y)
            saved, xpad_shape = None, None
        else:
            xpad = pad(x, amounts, padding)
            xpad_shape = xpad.shape
            hp, wp = xpad_shape[2:]
            y = empty(workspace, self, "y", (n, o, ho, wo), x.dtype, xp)
            y3 = y.reshape(n, o, ho * wo)
            if algo == "im2col":
                unfold = (kh, kw) != (1, 1)
                w2 = self.weight.reshape(o, c * kh * kw)
                # (N, C*kh*kw, Ho*Wo); a 1x1 kernel needs no unfolding (a view of the input)
                cols = empty(workspace, self, "cols", (n, c * kh * kw, ho * wo), x.dtype, xp) if unfold \
                    else im2col(xpad, 1, 1)

                def run(lo, hi):
                    if unfold:
                        im2col(xpad[lo:hi], kh, kw, out=cols[lo:hi])
                    xp.matmul(w2, cols[lo:hi], out=y3[lo:hi])
                    self._bias_act(y[lo:hi], device)

                # Cache: cols (for the weight gradient); the geometry folds the input gradient back.
                saved, sample_bytes = cols, (c * kh * kw + o) * ho * wo * x.itemsize
            else:
                w_rows = self.weight.transpose(0, 2, 3, 1).reshape(o * kh * kw, c)  # (O*kh*kw, C)
                x3 = xpad.reshape(n, c, hp * wp)

                def run(lo, hi):
                    z = xp.matmul(w_rows, x3[lo:hi])  # (m, O*kh*kw, Hp*Wp)
                    shift_sum(z.reshape(hi - lo, o, kh, kw, hp, wp), ho, wo, out=y[lo:hi])
                    self._bias_act(y[lo:hi], device)

                # Cache: the padded input (for the weight gradient) and the geometry.
                saved, sample_bytes = xpad, (c + o * kh * kw) * hp * wp * x.itemsize
            self._over_batch(run, n, device, workers, sample_bytes)
        # Cache, with relu: the output too, whose sign is the ReLU's mask (y > 0 iff y before it > 0);
        # and the worker count and workspace, for backward.
        self._cache = (algo, saved, xpad_shape, amounts, padding, y if self.relu else None, (h, w), workers,
                       workspace) if train else None
        return y

    def _forward_batch(self, xpad, y, workspace):
        """GPU unfold + GEMM for the whole batch: ``xpad`` ``(N, C, Hp, Wp)`` -> ``y`` ``(N, O, Ho, Wo)``
        (written, with bias and ReLU); returns ``cols`` ``(C*kh*kw, N, Ho*Wo)``.

        ``cols`` has its rows outermost (:func:`tinysr.cuda_kernels.im2col_gpu` ``layout="knp"``), so
        ``W (O, C*kh*kw) @ cols (C*kh*kw, N*Ho*Wo)`` is one 2-D GEMM, and the backward's products
        are 2-D GEMMs on views too (no operand is copied to make it contiguous). With ``O == 1``
        (layer 3) the GEMM writes ``y`` directly; otherwise its ``(O, N, ...)`` result is
        transposed into ``y``.
        """
        xp = get_array_module(xpad)
        o, c, kh, kw = self.weight.shape
        n, _, ho, wo = y.shape
        k, p = c * kh * kw, ho * wo
        cols = empty(workspace, self, "cols_knp", (k, n, p), xpad.dtype, xp)
        cuda_kernels.im2col_gpu(xpad, kh, kw, out=cols, layout="knp")
        w2 = self.weight.reshape(o, k)
        if o == 1:
            xp.matmul(w2, cols.reshape(k, n * p), out=y.reshape(1, n * p))
        else:
            y[...] = xp.matmul(w2, cols.reshape(k, n * p)).reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
        self._bias_act(y, True)
        return cols

    def _backward_batch(self, dyr, cols, xpad_shape, amounts, padding, workspace):
        """The backward of :meth:`_forward_batch`: ``dyr`` ``(N, O, Ho, Wo)`` (after the ReLU's mask)
        -> ``dx`` ``(N, C, H, W)`` or None; fills the parameter gradients. 2-D GEMMs only:
        ``dW = dy (O, N*P) @ cols.T`` (a transposed view) and ``dcols = W.T @ dy``."""
        xp = get_array_module(dyr)
        o, c, kh, kw = self.weight.shape
        n = dyr.shape[0]
        k, p = c * kh * kw, dyr.shape[2] * dyr.shape[3]
        if o == 1:
            dy2 = dyr.reshape(1, n * p)
        else:  # (O, N*P): a copy of dy (O values per pixel), not of cols
            dy2 = xp.ascontiguousarray(dyr.reshape(n, o, p).transpose(1, 0, 2)).reshape(o, n * p)
        self.grad_weight = xp.matmul(dy2, cols.reshape(k, n * p).T).reshape(self.weight.shape)
        self.grad_bias = dyr.sum(axis=(0, 2, 3))
        if not self.need_input_grad:
            return None
        dcols = xp.matmul(self.weight.reshape(o, k).T, dy2)  # (C*kh*kw, N*P)
        dxpad = cuda_kernels.col2im_gpu(dcols.reshape(k, n, p), xpad_shape, kh, kw, layout="knp")
        _, _, h, w = xpad_shape
        dx = empty(workspace, self, "dx", (n, c, h - amounts[0] - amounts[1], w - amounts[2] - amounts[3]),
                   dyr.dtype, xp)
        dx[...] = pad_backward(dxpad, amounts, padding)
        return dx

    def _bias_act(self, y, device: bool) -> None:
        """``y += b`` in place, then the ReLU where fused (one pass: see the class)."""
        if device and self.relu:
            cuda_kernels.bias_relu_(y, self.bias)
        elif self.relu:
            cpu_kernels.bias_relu_(y, self.bias)
        else:
            y += self.bias[None, :, None, None]

    # One step of a worker covers this many bytes of its samples' working set (at least one
    # sample), so that a step's unfolded input and output stay in the core's L2 cache.
    STEP_BYTES = 1 << 20

    def _over_batch(self, run, n: int, device: bool, workers: int | None, sample_bytes: int) -> None:
        """``run(lo, hi)`` over the samples ``0..n``, ``run`` writing only their rows of its outputs.

        GPU: one call for the whole batch (one launch per kernel). CPU: the batch is split into one
        contiguous run per worker thread (:func:`tinysr.blas_threads.run_split`), walked in steps
        of ``STEP_BYTES``. Every GEMM is per sample (NumPy's batched matmul makes one BLAS call per
        sample too) and runs on a single-threaded BLAS, and the batch reductions (the parameter
        gradients) run after all workers, in one fixed order: so the numbers are those of a
        one-thread BLAS whatever the worker count. With ``workers=None`` and a single sample, BLAS
        keeps its own threads (a one-image inference through the layers, e.g. 9-5-5).
        """
        if device:
            run(0, n)
            return
        step = max(1, self.STEP_BYTES // max(1, sample_bytes))

        def steps(lo, hi):
            for a in range(lo, hi, step):
                run(a, min(a + step, hi))

        if n == 1 and workers is None:
            run(0, 1)
        else:
            run_split(steps, n, workers)

    def backward(self, dy):
        """``dy`` ``(N, O, Ho, Wo)`` (of the output, after the ReLU when ``relu``) -> ``dx``
        ``(N, C, H, W)`` (or None); fills parameter grads. Runs on the forward's workers."""
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        algo, saved, xpad_shape, amounts, padding, out, (h, w), workers, workspace = self._cache
        self._cache = None
        xp = get_array_module(dy)
        device = is_device_array(dy)
        o, c, kh, kw = self.weight.shape
        if algo == "direct":
            if self.relu:
                dy = cuda_kernels.relu_backward(xp.ascontiguousarray(dy), out)
            self.grad_weight, self.grad_bias = cuda_kernels.conv1_backward_params(
                saved, xp.ascontiguousarray(dy), kh, kw, padding)
            return None  # direct is only chosen when no input gradient is needed
        if algo == "im2col_batch":
            if self.relu:
                dy = cuda_kernels.relu_backward(xp.ascontiguousarray(dy), out)
            return self._backward_batch(xp.ascontiguousarray(dy), saved, xpad_shape, amounts, padding, workspace)
        n, _, hp, wp = xpad_shape
        if self.relu:
            dy = xp.ascontiguousarray(dy)
            dyr = empty(workspace, self, "dyr", dy.shape, dy.dtype, xp)  # dy * (out > 0), each worker its rows
        else:
            dyr = dy
        # The GEMM's output goes straight into dx where padding leaves it as it is.
        direct_dx = padding == "valid" or not any(amounts)
        dx = empty(workspace, self, "dx", (n, c, h, w), dy.dtype, xp) if self.need_input_grad else None
        if algo == "im2col":
            cols = saved  # (N, C*kh*kw, P)
            prods = empty(workspace, self, "prods", (n, o, c * kh * kw), dy.dtype, xp)  # per-sample dW, summed below
            w_t = self.weight.reshape(o, c * kh * kw).T
            fold = (kh, kw) != (1, 1)

            def run(lo, hi):
                m = hi - lo
                if self.relu:
                    self._relu_backward(dy[lo:hi], out[lo:hi], dyr[lo:hi], device)
                dy2 = dyr[lo:hi].reshape(m, o, -1)  # (m, O, P)
                # dW_n[o, k] = sum_p dy[n, o, p] * cols[n, k, p]
                xp.matmul(dy2, cols[lo:hi].transpose(0, 2, 1), out=prods[lo:hi])
                if dx is None:
                    return
                if direct_dx and not fold:
                    xp.matmul(w_t, dy2, out=dx[lo:hi].reshape(m, c, h * w))
                    return
                dcols = xp.matmul(w_t, dy2)  # (m, C*kh*kw, P)
                dx[lo:hi] = pad_backward(col2im(dcols, (m, c, hp, wp), kh, kw, impl=self.col2im_impl),
                                         amounts, padding)

            sample_bytes = (2 * o + 2 * c * kh * kw) * (hp - kh + 1) * (wp - kw + 1) * dy.itemsize
        else:
            x3 = saved.reshape(n, c, hp * wp)
            prods = empty(workspace, self, "prods", (n, o * kh * kw, c), dy.dtype, xp)  # per-sample dW, summed below
            w_cols = self.weight.transpose(1, 0, 2, 3).reshape(c, o * kh * kw)  # (C, O*kh*kw)

            def run(lo, hi):
                m = hi - lo
                if self.relu:
                    self._relu_backward(dy[lo:hi], out[lo:hi], dyr[lo:hi], device)
                d = shift_spread(dyr[lo:hi], kh, kw, hp, wp).reshape(m, o * kh * kw, hp * wp)
                # dW_n[o, i, j, c] = sum_q d[n, (o, i, j), q] * xpad[n, c, q]
                xp.matmul(d, x3[lo:hi].transpose(0, 2, 1), out=prods[lo:hi])
                if dx is None:
                    return
                if direct_dx:
                    xp.matmul(w_cols, d, out=dx[lo:hi].reshape(m, c, h * w))
                else:
                    dx[lo:hi] = pad_backward(xp.matmul(w_cols, d).reshape(m, c, hp, wp), amounts, padding)

            sample_bytes = (2 * o * kh * kw + 2 * c) * hp * wp * dy.itemsize
        self._over_batch(run, n, device, workers, sample_bytes)
        # The batch reductions, after the workers and in a fixed order.
        self.grad_bias = dyr.sum(axis=(0, 2, 3))
        gw = prods.sum(axis=0)
        if algo == "im2col":
            self.grad_weight = gw.reshape(self.weight.shape)
        else:  # (O*kh*kw, C) -> (O, C, kh, kw)
            self.grad_weight = xp.ascontiguousarray(gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
        return dx

    @staticmethod
    def _relu_backward(dy, y, out, device: bool) -> None:
        if device:
            cuda_kernels.relu_backward(dy, y, out=out)
        else:
            cpu_kernels.relu_backward(dy, y, out=out)


class ReLU:
    """``y = max(x, 0)`` elementwise; the gradient at 0 is taken as 0."""

    def __init__(self):
        self._mask = None

    def forward(self, x, train: bool = True):
        """Any shape -> same shape. ``train=False`` keeps no cache."""
        xp = get_array_module(x)
        # Cache: the boolean mask x > 0 (one byte per element), all backward needs.
        self._mask = (x > 0) if train else None
        return xp.maximum(x, 0)

    def backward(self, dy):
        """Gradient w.r.t. the input: ``dy * (x > 0)``."""
        if self._mask is None:
            raise RuntimeError("ReLU.backward called before forward")
        dx = dy * self._mask
        self._mask = None
        return dx


class MSELoss:
    """Caffe's Euclidean loss, the normalisation the paper's learning rates were set for.

    ``loss = sum over batch and pixels of (pred - target)^2 / (2 N)`` with ``N`` the batch size
    (pixel values in [0, 1]). Its gradient is ``(pred - target) / N``. The per-pixel mean squared
    error, which PSNR uses, is ``2 * loss / pixels_per_sample``: see :meth:`per_pixel_mse`.
    The loss is returned as a 0-d array on the inputs' device (no host synchronisation). On
    the GPU one kernel writes the gradient and block sums, a second adds them in a fixed order
    (:func:`tinysr.cuda_kernels.mse_loss_grad`).
    """

    def __init__(self):
        self._cache = None

    def forward(self, pred, target):
        """``pred``, ``target``: same shape ``(N, ...)``, same dtype -> 0-d loss array."""
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: prediction {pred.shape} and target {target.shape} differ in shape")
        if pred.dtype != target.dtype:
            raise TypeError(f"MSELoss: prediction is {pred.dtype} but target is {target.dtype}")
        xp = get_array_module(pred, target)
        if is_device_array(pred):
            loss, grad = cuda_kernels.mse_loss_grad(xp.ascontiguousarray(pred), xp.ascontiguousarray(target))
            # Cache: the gradient itself, computed in the same pass as the loss.
            self._cache = ("grad", grad)
            return loss
        diff = pred - target
        # Cache: the difference and the batch size, all backward needs.
        self._cache = ("diff", (diff, pred.shape[0]))
        return xp.sum(diff * diff) / (2 * pred.shape[0])

    def backward(self):
        """Gradient of the loss w.r.t. ``pred``: ``(pred - target) / N``."""
        if self._cache is None:
            raise RuntimeError("MSELoss.backward called before forward")
        kind, saved = self._cache
        self._cache = None
        if kind == "grad":
            return saved
        diff, n = saved
        return diff / diff.dtype.type(n)

    @staticmethod
    def per_pixel_mse(loss, pixels_per_sample: int) -> float:
        """Convert a loss value to per-pixel MSE (units of [0,1]^2)."""
        return 2.0 * float(loss) / pixels_per_sample


def as_float_dtype(dtype) -> np.dtype:
    """Validate a floating dtype for parameters (float32 or float64)."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"tinysr computes in float32 or float64, not {dt}")
    return dt
