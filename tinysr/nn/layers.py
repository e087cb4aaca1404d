"""SRCNN's layers with explicit ``forward`` and ``backward``; no autograd engine.

Each layer caches in ``forward`` exactly what its ``backward`` needs (one comment says what), and
its ``backward`` returns the input gradient and fills its parameter gradients. Arrays are NCHW,
float32 (float64 for gradient checks), all on one device. Device code comes from
:func:`tinysr.ops.backend.primitives`; threads and kept arrays from the layer's :class:`tinysr.ops.engine.Engine`.
"""

from __future__ import annotations

import numpy as np

from tinysr.ops.backend import get_array_module, primitives
from tinysr.ops.cuda_kernels import CONV1_KMAX as DIRECT_KMAX  # largest kernel edge of the direct (GPU) conv
from tinysr.ops.engine import Engine
from tinysr.ops.padding import pad, pad_backward
from tinysr.ops.shapes import check_padding, conv_output_hw, pad_amounts


class Conv2d:
    """Stride-1 2-D correlation (no kernel flip), optionally followed by a fused ReLU.

    ``y[n, o, r, s] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, r + i, s + j]``, then
    ``max(y, 0)`` with ``relu=True``. ``weight`` ``(O, C, kh, kw)`` and ``bias`` ``(O,)`` are updated
    in place by the optimiser; :meth:`backward` fills ``grad_weight`` and ``grad_bias``.
    ``need_input_grad=False`` (SRCNN's first layer) skips the input gradient.

    Algorithms, the same function up to float rounding (``algo="auto"``: :meth:`_algorithm`):

    - ``im2col``: ``y = W (O, C*kh*kw) @ im2col(xpad) + b``; cheapest when ``C <= O``.
    - ``output_side``: ``y = tap_sum(W (O*kh*kw, C) @ xpad) + b``; cheapest when ``O < C`` (layer 3:
      25 rows per pixel, not 800). GPU inference sums the taps in one kernel that pads by indexing.
    - ``direct`` (GPU, one input channel, no input gradient): one CUDA kernel, bias and ReLU fused.
    """

    ALGOS = ("auto", "im2col", "output_side", "direct")

    def __init__(self, weight, bias, need_input_grad: bool = True, algo: str = "auto", relu: bool = False,
                 engine: Engine | None = None, grads: tuple | None = None):
        _check_params(weight, bias, algo, self.ALGOS)
        self.weight, self.bias, self.grad_weight, self.grad_bias = weight, bias, None, None
        self.need_input_grad, self.algo, self.relu = need_input_grad, algo, bool(relu)
        self.engine = engine if engine is not None else Engine()
        self._grads, self._cache = grads, None  # grads: arrays backward writes into (a model's flat buffer)

    def _algorithm(self, device: bool = False, train: bool = False) -> str:
        o, c, kh, kw = self.weight.shape
        direct_fits = device and c == 1 and max(kh, kw) <= DIRECT_KMAX and not (train and self.need_input_grad)
        if self.algo == "direct" and not direct_fits:
            raise ValueError("the direct conv kernel runs on the GPU, for one input channel, kernels up to "
                             f"{DIRECT_KMAX}x{DIRECT_KMAX}, and computes no input gradient")
        if self.algo == "auto" and direct_fits:
            return "direct"
        algo = self.algo
        if algo == "auto":  # GPU training unfolds (its unfold and fold are one launch each)
            algo = "output_side" if o < c and kh * kw > 1 and not (device and train) else "im2col"
        return "taps" if algo == "output_side" and device and not train else algo

    def forward(self, x, padding: str = "valid", train: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, O, Ho, Wo)``; padding ``valid``/``zero``/``replicate``.
        ``train=False`` keeps no cache (inference)."""
        prim, xp, w = _check_input(x, self.weight), get_array_module(x), self.weight
        check_padding(padding)
        o, c, kh, kw = w.shape
        n, _, h, wd = x.shape
        ho, wo = conv_output_hw(h, wd, kh, kw, padding)
        algo = self._algorithm(prim.DEVICE, train)
        y = None if algo == "direct" else self.engine.empty(self, "y", (n, o, ho, wo), x.dtype, xp, train)
        if algo == "direct":
            saved = xp.ascontiguousarray(x)
            y = prim.conv1_forward(saved, w, self.bias, padding, relu=self.relu)
        elif algo == "taps":
            saved = None  # inference only
            prim.taps_conv(x, w, self.bias, padding, self.relu, out=y)
        else:
            xpad = pad(x, pad_amounts(kh, kw, padding), padding)
            hp, wp = xpad.shape[2:]
            if algo == "im2col":
                k, unfold = c * kh * kw, (kh, kw) != (1, 1)
                saved = self.engine.empty(self, "cols", prim.cols_shape(n, k, ho * wo), x.dtype, xp, train) if unfold \
                    else prim.im2col(xpad, 1, 1)

                def step(s):
                    prim.cols_gemm(w, prim.im2col(xpad[s], kh, kw, out=saved[s]) if unfold else saved[s], y[s])
                    self._bias_act(prim, y[s])

                sample_bytes = (k + o) * ho * wo * x.itemsize
            else:
                w_rows, x3 = w.transpose(0, 2, 3, 1).reshape(o * kh * kw, c), xpad.reshape(n, c, hp * wp)

                def step(s):
                    z = xp.matmul(w_rows, x3[s])  # (m, O*kh*kw, Hp*Wp)
                    prim.tap_sum(z.reshape(-1, o, kh, kw, hp, wp), ho, wo, out=y[s])
                    self._bias_act(prim, y[s])

                saved, sample_bytes = xpad, (c + o * kh * kw) * hp * wp * x.itemsize
            self.engine.over_batch(step, n, sample_bytes, prim.DEVICE)
        # Cache: the unfolded input (im2col) or the (padded) input, for the weight gradient; the input's
        # shape and padding, to fold the input gradient back; with the ReLU its output (the sign is its mask).
        self._cache = (algo, saved, x.shape, padding, y if self.relu else None) if train else None
        return y

    def backward(self, dy):
        """``dy`` ``(N, O, Ho, Wo)`` (after the ReLU when ``relu``) -> ``dx`` ``(N, C, H, W)`` (or None);
        fills ``grad_weight`` and ``grad_bias``."""
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        (algo, saved, (n, c, h, wd), padding, out), self._cache = self._cache, None
        prim, xp, w, eng = primitives(dy), get_array_module(dy), self.weight, self.engine
        o, _, kh, kw = w.shape
        if algo == "direct":
            dy = prim.relu_backward(dy, out) if self.relu else xp.ascontiguousarray(dy)
            self._keep_grads(*prim.conv1_backward_params(saved, dy, kh, kw, padding))
            return None
        amounts = t, b, l, r = pad_amounts(kh, kw, padding)
        hp, wp, direct_dx = h + t + b, wd + l + r, not any(amounts)  # direct: the GEMM writes dx itself
        dy = xp.ascontiguousarray(dy) if self.relu else dy
        dyr = eng.empty(self, "dyr", dy.shape, dy.dtype, xp) if self.relu else dy  # dy * (out > 0)
        dx = eng.empty(self, "dx", (n, c, h, wd), dy.dtype, xp) if self.need_input_grad else None
        if algo == "im2col":  # dW = dy @ cols.T; dx = col2im(W.T @ dy)
            k, fold = c * kh * kw, (kh, kw) != (1, 1)
            prods = eng.empty(self, "prods", (prim.grad_parts_rows(n, w), o, k), dy.dtype, xp)

            def step(s):
                if self.relu:
                    prim.relu_backward(dy[s], out[s], out=dyr[s])
                prim.weight_grad_cols(w, dyr[s], saved[s], prods[s])
                if dx is not None and direct_dx and not fold:
                    prim.input_grad_cols(w, dyr[s], out=dx[s])
                elif dx is not None:
                    dcols = prim.input_grad_cols(w, dyr[s])
                    dx[s] = pad_backward(prim.col2im(dcols, (dyr[s].shape[0], c, hp, wp), kh, kw), amounts, padding)

            sample_bytes = (2 * o + 2 * k) * (hp - kh + 1) * (wp - kw + 1) * dy.itemsize
        else:  # dW[o, i, j, c] = tap_spread(dy) @ xpad.T; dx = W.T @ tap_spread(dy)
            x3, prods = saved.reshape(n, c, hp * wp), eng.empty(self, "prods", (n, o * kh * kw, c), dy.dtype, xp)
            w_cols = w.transpose(1, 0, 2, 3).reshape(c, o * kh * kw)  # (C, O*kh*kw)

            def step(s):
                if self.relu:
                    prim.relu_backward(dy[s], out[s], out=dyr[s])
                d = prim.tap_spread(dyr[s], kh, kw, hp, wp).reshape(-1, o * kh * kw, hp * wp)
                xp.matmul(d, x3[s].transpose(0, 2, 1), out=prods[s])
                if dx is not None and direct_dx:
                    xp.matmul(w_cols, d, out=dx[s].reshape(-1, c, h * wd))
                elif dx is not None:
                    dx[s] = pad_backward(xp.matmul(w_cols, d).reshape(-1, c, hp, wp), amounts, padding)

            sample_bytes = (2 * o * kh * kw + 2 * c) * hp * wp * dy.itemsize
        eng.over_batch(step, n, sample_bytes, prim.DEVICE)
        gw = prods.sum(axis=0)  # the batch reductions: after the threads, in a fixed order
        gw = gw.reshape(w.shape) if algo == "im2col" else gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        self._keep_grads(gw, dyr.sum(axis=(0, 2, 3)))
        return dx

    def _keep_grads(self, gw, gb) -> None:
        if self._grads is None:
            gw = get_array_module(gw).ascontiguousarray(gw)
        else:  # copied into the arrays given (views into a model's flat gradient buffer)
            self._grads[0][...], self._grads[1][...] = gw, gb
            gw, gb = self._grads
        self.grad_weight, self.grad_bias = gw, gb

    def _bias_act(self, prim, y) -> None:
        if self.relu:
            prim.bias_relu_(y, self.bias)  # one pass: max(y + b, 0)
        else:
            y += self.bias[None, :, None, None]


def _check_params(weight, bias, algo: str, algos: tuple) -> None:
    if weight.ndim != 4:
        raise ValueError(f"conv weight must be (O, C, kh, kw), got shape {weight.shape}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"conv bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if weight.dtype != bias.dtype:
        raise TypeError(f"conv weight is {weight.dtype} but bias is {bias.dtype}")
    if algo not in algos:
        raise ValueError(f"unknown conv algorithm {algo!r}: choose one of {', '.join(algos)}")


def _check_input(x, weight):
    """Raise on a bad conv input; return the primitives of its device."""
    if x.ndim != 4:
        raise ValueError(f"conv input must be NCHW (4-D), got shape {x.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv input has {x.shape[1]} channels, the layer expects {weight.shape[1]}")
    if x.dtype != weight.dtype:
        raise TypeError(f"conv input is {x.dtype} but the weights are {weight.dtype}")
    return primitives(x, weight)  # raises on a host/device mix


class MSELoss:
    """Caffe's Euclidean loss, the normalisation the paper's learning rates were set for.

    ``loss = sum over batch and pixels of (pred - target)^2 / (2 N)`` with ``N`` the batch size
    (pixel values in [0, 1]). Its gradient is ``(pred - target) / N``. The per-pixel mean squared
    error, which PSNR uses, is ``2 * loss / pixels_per_sample``: see :meth:`per_pixel_mse`.
    The loss is returned as a 0-d array on the inputs' device (no host synchronisation). On
    the GPU one kernel writes the gradient and block sums, a second adds them in a fixed order
    (:func:`tinysr.ops.cuda_kernels.mse_loss_grad`).
    """

    def __init__(self):
        self._cache = None

    def forward(self, pred, target):
        """``pred``, ``target``: same shape ``(N, ...)``, same dtype -> 0-d loss array."""
        if pred.shape != target.shape:
            raise ValueError(f"MSELoss: prediction {pred.shape} and target {target.shape} differ in shape")
        if pred.dtype != target.dtype:
            raise TypeError(f"MSELoss: prediction is {pred.dtype} but target is {target.dtype}")
        loss, grad = primitives(pred, target).mse_loss_grad(pred, target)
        self._cache = grad  # Cache: the gradient, computed in the same pass as the loss.
        return loss

    def backward(self):
        """Gradient of the loss w.r.t. ``pred``: ``(pred - target) / N``."""
        if self._cache is None:
            raise RuntimeError("MSELoss.backward called before forward")
        grad, self._cache = self._cache, None
        return grad

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
