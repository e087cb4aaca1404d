"""SRCNN's layers with explicit ``forward`` and ``backward``; no autograd engine.

Each layer caches in ``forward`` exactly what its ``backward`` needs (one comment says what), and
its ``backward`` returns the input gradient and fills its parameter gradients. Arrays are NCHW,
float32 (float64 for gradient checks), all on one device. The conv's algorithms are
:mod:`tinysr.nn.conv`; device code comes from :func:`tinysr.ops.backend.primitives`; threads and kept arrays from the layer's :class:`tinysr.ops.engine.Engine`.
"""

from __future__ import annotations

import numpy as np

from tinysr.nn.conv import ALGORITHMS, Context
from tinysr.ops.backend import get_array_module, primitives
from tinysr.ops.engine import Engine
from tinysr.ops.primitives import CONV_ALGORITHMS
from tinysr.ops.shapes import check_padding, conv_output_hw


class Conv2d:
    """Stride-1 2-D correlation (no kernel flip), optionally followed by a fused ReLU.

    ``y[n, o, r, s] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, r + i, s + j]``, then
    ``max(y, 0)`` with ``relu=True``. ``weight`` ``(O, C, kh, kw)`` and ``bias`` ``(O,)`` are updated
    in place by the optimiser; :meth:`backward` fills ``grad_weight`` and ``grad_bias``.
    ``need_input_grad=False`` (SRCNN's first layer) skips the input gradient.

    Algorithms (:mod:`tinysr.nn.conv`, each a forward/backward pair), the same function up to float
    rounding: ``im2col``, ``im2col_flip`` (im2col's forward, the input gradient as a convolution with
    the flipped kernel), ``output_side`` and ``direct`` (a device kernel for one input channel).
    ``algo="auto"`` takes the first that the device's primitives offer for the layer
    (``conv_algorithms``); a named one must be among them.

    Not every convolution runs here: :meth:`tinysr.nn.model.SRCNN.predict` of a 9-1-5-like network
    (a 1x1 middle layer) runs the fused paths of :meth:`tinysr.ops.engine.Engine.predict`
    (:mod:`tinysr.ops.fused_predict` on the CPU, ``kernels/fused.cu`` on the GPU), the same function
    written again; ``tests/test_fused_predict.py`` and ``tests/test_cuda_fused.py`` hold them equal
    to these layers. A change to the algorithms here must be made there too.
    """

    ALGOS = ("auto", *CONV_ALGORITHMS)

    def __init__(self, weight, bias, need_input_grad: bool = True, algo: str = "auto", relu: bool = False,
                 engine: Engine | None = None, grads: tuple | None = None):
        _check_params(weight, bias, algo, self.ALGOS)
        self.weight, self.bias, self.grad_weight, self.grad_bias = weight, bias, None, None
        self.need_input_grad, self.algo, self.relu = need_input_grad, algo, bool(relu)
        self.engine = engine if engine is not None else Engine()
        self._grads, self._cache = grads, None  # grads: arrays backward writes into (a model's flat buffer)

    def forward(self, x, padding: str = "valid", train: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, O, Ho, Wo)``; padding ``valid``/``zero``/``replicate``.
        ``train=False`` keeps no cache (inference)."""
        prim = _check_input(x, self.weight, padding)
        algo = self._algorithm(prim, train)
        ctx = Context(prim, get_array_module(x), self.engine, self, train)
        y, cache = ALGORITHMS[algo].forward(x, self.weight, self.bias, padding, self.relu, ctx)
        # Cache: the algorithm that ran and its own cache (what its backward needs).
        self._cache = (algo, cache) if train else None
        return y

    def backward(self, dy):
        """``dy`` ``(N, O, Ho, Wo)`` (after the ReLU when ``relu``) -> ``dx`` ``(N, C, H, W)`` (or None);
        fills ``grad_weight`` and ``grad_bias``."""
        if self._cache is None:
            raise RuntimeError("Conv2d.backward called before forward")
        (algo, cache), self._cache = self._cache, None
        ctx = Context(primitives(dy), get_array_module(dy), self.engine, self, True)
        dx, gw, gb = ALGORITHMS[algo].backward(dy, cache, ctx, self.need_input_grad)
        self._keep_grads(gw, gb)
        return dx

    def _algorithm(self, prim, train: bool) -> str:
        offered = prim.conv_algorithms(tuple(self.weight.shape), train, self.need_input_grad)
        if self.algo == "auto":
            return offered[0]
        if self.algo not in offered:
            mode = "training with an input gradient" if train and self.need_input_grad else "training" if train else "inference"
            raise ValueError(f"conv algorithm {self.algo!r} does not run on the {prim.kind} for weight "
                             f"{tuple(self.weight.shape)} in {mode}; it runs {', '.join(offered)}")
        return self.algo

    def _keep_grads(self, gw, gb) -> None:
        if self._grads is None:
            gw = get_array_module(gw).ascontiguousarray(gw)
        else:  # copied into the arrays given (views into a model's flat gradient buffer)
            self._grads[0][...], self._grads[1][...] = gw, gb
            gw, gb = self._grads
        self.grad_weight, self.grad_bias = gw, gb


def _check_params(weight, bias, algo: str, algos: tuple) -> None:
    if weight.ndim != 4:
        raise ValueError(f"conv weight must be (O, C, kh, kw), got shape {weight.shape}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"conv bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if weight.dtype != bias.dtype:
        raise TypeError(f"conv weight is {weight.dtype} but bias is {bias.dtype}")
    if algo not in algos:
        raise ValueError(f"unknown conv algorithm {algo!r}: choose one of {', '.join(algos)}")


def _check_input(x, weight, padding: str):
    """Raise on a bad conv input or padding; return the primitives of its device."""
    if x.ndim != 4:
        raise ValueError(f"conv input must be NCHW (4-D), got shape {x.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv input has {x.shape[1]} channels, the layer expects {weight.shape[1]}")
    if x.dtype != weight.dtype:
        raise TypeError(f"conv input is {x.dtype} but the weights are {weight.dtype}")
    prim = primitives(x, weight)  # raises on a host/device mix
    check_padding(padding)
    conv_output_hw(x.shape[2], x.shape[3], weight.shape[2], weight.shape[3], padding)  # raises on a too-small input
    return prim


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
