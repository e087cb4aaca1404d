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
from .im2col import col2im, im2col, pad, pad_backward, shift_spread, shift_sum
from .shapes import check_padding, conv_output_hw, pad_amounts

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
    ``col2im_impl`` chooses the CPU fold (``"numpy"`` or ``"numba"``, same numbers).

    Bias and ReLU: one pass over ``y`` in place, a numba loop on the CPU
    (:func:`tinysr.cpu_kernels.bias_relu_`, the same numbers as ``y += b`` then ``max(y, 0)``) and
    a raw kernel on the GPU (:func:`tinysr.cuda_kernels.bias_relu_`); without ReLU, ``y += b``.
    The ReLU's backward is one pass too (:func:`tinysr.cpu_kernels.relu_backward`).
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

    def forward(self, x, padding: str = "valid", train: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, O, Ho, Wo)``; padding ``valid``/``zero``/``replicate``.

        ``train=False`` keeps no cache (inference).
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
        if algo == "direct":
            x = xp.ascontiguousarray(x)
            y = cuda_kernels.conv1_forward(x, self.weight, self.bias, padding, relu=self.relu)
            # Cache: the input itself; the gradient kernel re-reads each tap from it.
            saved, xpad_shape = x, None
        else:
            xpad = pad(x, amounts, padding)
            xpad_shape = xpad.shape
            hp, wp = xpad_shape[2:]
            if algo == "im2col":
                cols = im2col(xpad, kh, kw)  # (N, C*kh*kw, Ho*Wo)
                y = xp.matmul(self.weight.reshape(o, c * kh * kw), cols).reshape(n, o, ho, wo)
                # Cache: cols (for the weight gradient); the geometry folds the input gradient back.
                saved = cols
            else:
                w_rows = self.weight.transpose(0, 2, 3, 1).reshape(o * kh * kw, c)  # (O*kh*kw, C)
                z = xp.matmul(w_rows, xpad.reshape(n, c, hp * wp))  # (N, O*kh*kw, Hp*Wp)
                y = shift_sum(z.reshape(n, o, kh, kw, hp, wp), ho, wo)
                # Cache: the padded input (for the weight gradient) and the geometry.
                saved = xpad
            if device and self.relu:
                cuda_kernels.bias_relu_(y, self.bias)
            elif self.relu:
                cpu_kernels.bias_relu_(y, self.bias)
            else:
                y += self.bias[None, :, None, None]
        # Cache, with relu: the output too, whose sign is the ReLU's mask (y > 0 iff y before it > 0).
        self._cache = (algo, saved, xpad_shape, amounts, padding, y if self.relu else None) if train else None
        return y

    def backward(self, dy):
        """``dy`` ``(N, O, Ho, Wo)`` (of the output, after the ReLU when ``relu``) -> ``dx``
        ``(N, C, H, W)`` (or None); fills parameter grads."""
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        algo, saved, xpad_shape, amounts, padding, out = self._cache
        self._cache = None
        xp = get_array_module(dy)
        o, c, kh, kw = self.weight.shape
        if self.relu:
            if is_device_array(dy):
                dy = cuda_kernels.relu_backward(xp.ascontiguousarray(dy), out)
            else:
                dy = cpu_kernels.relu_backward(dy, out)
        if algo == "direct":
            self.grad_weight, self.grad_bias = cuda_kernels.conv1_backward_params(
                saved, xp.ascontiguousarray(dy), kh, kw, padding)
            return None  # direct is only chosen when no input gradient is needed
        n, _, hp, wp = xpad_shape
        self.grad_bias = dy.sum(axis=(0, 2, 3))
        if algo == "im2col":
            cols, dy2 = saved, dy.reshape(n, o, -1)  # (N, C*kh*kw, P), (N, O, P)
            # dW[o, k] = sum_n sum_p dy[n, o, p] * cols[n, k, p]
            self.grad_weight = xp.matmul(dy2, cols.transpose(0, 2, 1)).sum(axis=0).reshape(self.weight.shape)
            if not self.need_input_grad:
                return None
            dcols = xp.matmul(self.weight.reshape(o, c * kh * kw).T, dy2)  # (N, C*kh*kw, P)
            dxpad = col2im(dcols, xpad_shape, kh, kw, impl=self.col2im_impl)
        else:
            xpad = saved.reshape(n, c, hp * wp)
            d = shift_spread(dy, kh, kw, hp, wp).reshape(n, o * kh * kw, hp * wp)  # (N, O*kh*kw, Q)
            # dW[o, i, j, c] = sum_n sum_q d[n, (o, i, j), q] * xpad[n, c, q]
            gw = xp.matmul(d, xpad.transpose(0, 2, 1)).sum(axis=0)  # (O*kh*kw, C)
            self.grad_weight = xp.ascontiguousarray(gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
            if not self.need_input_grad:
                return None
            w_cols = self.weight.transpose(1, 0, 2, 3).reshape(c, o * kh * kw)  # (C, O*kh*kw)
            dxpad = xp.matmul(w_cols, d).reshape(xpad_shape)
        return pad_backward(dxpad, amounts, padding)


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
