"""The device contract, written once: what a device's primitives module offers the layers.

A device is one module that satisfies :class:`Primitives` (:mod:`tinysr.ops.primitives_cpu` for
NumPy arrays, :mod:`tinysr.ops.primitives_gpu` for CuPy arrays) and one line in
:data:`tinysr.ops.backend.DEVICES`, which maps an array's type to it;
:func:`tinysr.ops.backend.primitives` hands it to the layers. ``tests/test_engine.py`` checks
that both modules satisfy the contract, signatures included. A device that offers the
``"direct"`` conv algorithm also satisfies :class:`DirectConv`.

Notation: ``N`` samples, ``C`` input and ``O`` output channels, ``kh x kw`` kernel, ``Hp x Wp``
padded input, ``Ho x Wo`` output. ``cols``: the unfolded input, ``C*kh*kw`` rows per output pixel,
in the device's own layout (:func:`cols_shape`). Arrays are the device's, float32 or float64.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

CONV_ALGORITHMS = ("im2col", "output_side", "direct", "im2col_flip")  # tinysr.nn.conv's pairs, the names a device may offer


@runtime_checkable
class Primitives(Protocol):
    """The primitives every device offers (module-level names; signatures as below)."""

    kind: str  # "cpu", "cuda": the device, in messages
    host_threads: bool  # True: the engine's CPU threads split a call's batch; False: one call on the whole batch
    # Output-side inference in one call, padding by indexing: ``(x, w, b, padding, relu, out) -> out``
    # (``out`` ``(N, O, Ho, Wo)``; the input unpadded); None where the layer runs it step by step.
    output_side_conv: Callable | None

    # -- device questions
    def conv_algorithms(self, weight_shape: tuple, train: bool, need_input_grad: bool) -> tuple[str, ...]:
        """The conv algorithms (of :data:`CONV_ALGORITHMS`) this device runs for a layer of weight
        ``(O, C, kh, kw)`` in this mode, the one ``algo="auto"`` takes first."""

    def free_bytes(self, a) -> int | None:
        """Free memory on ``a``'s device in bytes; None for the host (no budget to keep)."""

    def index_limit(self) -> int | None:
        """The largest element index the device's kernels take (tiles stay below it); None: no limit."""

    # -- im2col
    def cols_shape(self, n: int, rows: int, p: int) -> tuple:
        """The shape of ``cols`` for ``n`` samples, ``rows = C*kh*kw``, ``p = Ho*Wo``."""

    def im2col(self, xpad, kh: int, kw: int, out=None):
        """``xpad`` ``(N, C, Hp, Wp)`` unfolded into ``cols``, into ``out`` where given."""

    def col2im(self, cols, shape: tuple, kh: int, kw: int):
        """Adjoint of :meth:`im2col`: ``cols`` -> ``shape = (N, C, Hp, Wp)``, taps added ``i`` then ``j``."""

    def cols_gemm(self, w, cols, y) -> None:
        """``y`` ``(m, O, Ho, Wo)`` <- ``W (O, C*kh*kw) @ cols``."""

    def grad_parts_rows(self, n: int, w) -> int:
        """Rows of partial weight gradients :meth:`weight_grad_cols` writes for ``n`` samples."""

    def weight_grad_cols(self, w, dy, cols, out) -> None:
        """``out`` ``(grad_parts_rows, O, C*kh*kw)`` <- ``dy @ cols.T``; the caller sums the rows in order."""

    def input_grad_cols(self, w, dy, out=None):
        """``dcols = W.T @ dy`` in the layout of ``cols`` (into ``out`` where given)."""

    # -- output side
    def tap_sum(self, z, ho: int, wo: int, out=None):
        """``z`` ``(N, O, kh, kw, Hp, Wp)`` -> ``(N, O, Ho, Wo)``: ``sum_{i,j} z[..., i, j, r+i, s+j]``."""

    def tap_spread(self, dy, kh: int, kw: int, hp: int, wp: int):
        """Adjoint of :meth:`tap_sum`: ``dy`` ``(N, O, Ho, Wo)`` -> ``(N, O, kh, kw, Hp, Wp)``."""

    # -- element-wise and the loss
    def bias_relu_(self, y, bias):
        """``y = max(y + bias[None, :, None, None], 0)`` in place on ``(N, C, ...)``; returns ``y``."""

    def relu_backward(self, dy, y, out=None):
        """``dy * (y > 0)`` (``y``: the ReLU's output), into ``out`` where given."""

    def mse_loss_grad(self, pred, target):
        """Caffe's Euclidean loss ``sum((pred - target)^2) / (2 N)`` (0-d) and its gradient."""


@runtime_checkable
class DirectConv(Protocol):
    """The direct conv's primitives, on a device whose :meth:`Primitives.conv_algorithms` offers it."""

    def direct_forward(self, x, w, b, padding: str = "valid", relu: bool = False):
        """``x`` ``(N, 1, H, W)`` -> ``(N, O, Ho, Wo)``, bias and optional ReLU fused."""

    def direct_backward_params(self, x, dy, kh: int, kw: int, padding: str = "valid"):
        """``(dW, db)`` for the layer's input ``x`` and output gradient ``dy`` (after any ReLU)."""
