"""The layers' primitives on the GPU: :class:`tinysr.ops.primitives.Primitives` for CuPy arrays.

Each runs on the whole batch (the engine does not split device work), mostly one raw CUDA kernel
(:mod:`tinysr.ops.cuda_kernels`). ``cols`` layout for a kernel larger than 1x1: ``(C*kh*kw, N, Ho*Wo)``,
the rows outermost, so that the forward and backward products are 2-D GEMMs on views of it; a 1x1
kernel keeps the CPU layout ``(N, C, Ho*Wo)``, a view of the input. Also here: what only the GPU has, the direct
convolution (:class:`tinysr.ops.primitives.DirectConv`) and the output side's inference in one
tap-sum launch that pads by indexing (:func:`output_side_conv`).
"""

from __future__ import annotations

from tinysr.ops import cuda_kernels as ck
from tinysr.ops.backend import get_array_module
from tinysr.ops.cuda_kernels import direct_backward_params, direct_forward  # noqa: F401
from tinysr.ops.primitives_cpu import tap_spread  # noqa: F401  (array code, the same on CuPy)

kind = "cuda"
host_threads = False  # every call runs on the whole batch


def conv_algorithms(weight_shape: tuple, train: bool, need_input_grad: bool) -> tuple[str, ...]:
    """The direct conv first where it applies (one input channel, kernels up to
    :data:`tinysr.ops.cuda_kernels.DIRECT_KMAX`, no input gradient to train); then the output side
    first for inference of a layer with fewer outputs than inputs and a kernel larger than 1x1, else
    im2col (training unfolds: its unfold and fold are one launch each)."""
    o, c, kh, kw = weight_shape
    direct = ("direct",) if c == 1 and max(kh, kw) <= ck.DIRECT_KMAX and not (train and need_input_grad) else ()
    return direct + (("output_side", "im2col") if o < c and kh * kw > 1 and not train else ("im2col", "output_side"))


def free_bytes(a) -> int:
    """Free bytes on ``a``'s GPU (``Device.mem_info``)."""
    return int(a.device.mem_info[0])


def index_limit() -> int:
    """The 32-bit kernels' largest index, 2^31 - 1."""
    return ck.INDEX_MAX


def _xp(a):
    return get_array_module(a)


def _unfolds(w) -> bool:
    return tuple(w.shape[2:]) != (1, 1)


def cols_shape(n: int, rows: int, p: int) -> tuple:
    """The shape of ``cols`` (a kernel larger than 1x1) for ``n`` samples, ``rows = C*kh*kw``."""
    return (rows, n, p)


def im2col(xpad, kh: int, kw: int, out=None):
    """Unfold ``xpad`` ``(N, C, Hp, Wp)`` into ``cols`` (module layout), one launch; 1x1: a view."""
    if (kh, kw) == (1, 1) and out is None:
        n, c, hp, wp = xpad.shape
        return xpad.reshape(n, c, hp * wp)
    return ck.im2col_gpu(_xp(xpad).ascontiguousarray(xpad), kh, kw, out=out, layout="knp")


def col2im(cols, shape: tuple, kh: int, kw: int):
    """Adjoint of :func:`im2col` -> ``shape = (N, C, Hp, Wp)``, each pixel gathering its taps ``i`` then ``j``."""
    if (kh, kw) == (1, 1):
        return cols.reshape(shape)
    return ck.col2im_gpu(cols, shape, kh, kw, layout="knp")


def cols_gemm(w, cols, y) -> None:
    """``y`` ``(N, O, Ho, Wo)`` <- ``W (O, C*kh*kw) @ cols``: one 2-D GEMM for the batch (with ``O == 1``
    straight into ``y``, else transposed into it)."""
    xp = _xp(y)
    o, n = w.shape[0], y.shape[0]
    w2 = w.reshape(o, -1)
    if not _unfolds(w):
        xp.matmul(w2, cols, out=y.reshape(n, o, -1))
    elif o == 1:
        k, _, p = cols.shape
        xp.matmul(w2, cols.reshape(k, n * p), out=y.reshape(1, n * p))
    else:
        k, _, p = cols.shape
        y[...] = xp.matmul(w2, cols.reshape(k, n * p)).reshape(o, n, *y.shape[2:]).transpose(1, 0, 2, 3)


def _dy_rows(dy):
    # (O, N*P): a copy of dy (O values per pixel) where O > 1, not of cols
    xp = _xp(dy)
    n, o = dy.shape[:2]
    if o == 1:
        return dy.reshape(1, -1)
    return xp.ascontiguousarray(dy.reshape(n, o, -1).transpose(1, 0, 2)).reshape(o, -1)


def grad_parts_rows(n: int, w) -> int:
    """Rows of partial weight gradients :func:`weight_grad_cols` writes: one for an unfolded batch."""
    return 1 if _unfolds(w) else n


def weight_grad_cols(w, dy, cols, out) -> None:
    """``out`` <- ``dy @ cols.T``: ``(1, O, C*kh*kw)`` in one GEMM (a 1x1 kernel: ``(N, O, C)``, per sample)."""
    xp = _xp(dy)
    if not _unfolds(w):
        xp.matmul(dy.reshape(dy.shape[0], dy.shape[1], -1), cols.transpose(0, 2, 1), out=out)
        return
    k = cols.shape[0]
    xp.matmul(_dy_rows(dy), cols.reshape(k, -1).T, out=out[0])


def input_grad_cols(w, dy, out=None):
    """``dcols = W.T @ dy`` in the layout of ``cols`` (into ``out``, 1x1 only, where given)."""
    xp = _xp(dy)
    o, n = w.shape[0], dy.shape[0]
    if not _unfolds(w):
        dst = None if out is None else out.reshape(n, -1, dy.shape[2] * dy.shape[3])
        return xp.matmul(w.reshape(o, -1).T, dy.reshape(n, o, -1), out=dst)
    return xp.matmul(w.reshape(o, -1).T, _dy_rows(dy)).reshape(-1, n, dy.shape[2] * dy.shape[3])


def relu_backward(dy, y, out=None):
    """``dy * (y > 0)`` (``y``: the ReLU's output), one launch."""
    return ck.relu_backward(_xp(dy).ascontiguousarray(dy), y, out=out)


def bias_relu_(y, bias):
    """``y = max(y + bias[c], 0)`` in place, one launch; returns ``y``."""
    return ck.bias_relu_(y, bias)


def output_side_conv(x, w, b, padding: str, relu: bool, out):
    """Output-side inference: ``z = W (O*kh*kw, C) @ x`` on the unpadded input, then one kernel sums
    the taps, padding by indexing, and adds bias (and ReLU) into ``out`` ``(N, O, Ho, Wo)``."""
    xp = _xp(x)
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    x3 = xp.ascontiguousarray(x).reshape(n, c, h * wd)
    w_rows = w.transpose(0, 2, 3, 1).reshape(o * kh * kw, c)
    z = xp.matmul(w_rows, x3[0])[None] if n == 1 else xp.matmul(w_rows, x3)  # (N, O*kh*kw, H*W)
    return ck.tap_sum(z.reshape(n, o * kh * kw, h, wd), b, kh, kw, padding, relu, out=out)


def tap_sum(z, ho: int, wo: int, out=None):
    """``z`` ``(N, O, kh, kw, Hp, Wp)`` -> ``(N, O, Ho, Wo)``: ``sum_{i,j} z[..., i, j, r+i, s+j]``, one launch
    (:func:`tinysr.ops.cuda_kernels.tap_sum`, valid, zero bias), into ``out`` where given."""
    xp = _xp(z)
    n, o, kh, kw, hp, wp = z.shape
    if (hp - kh + 1, wp - kw + 1) != (ho, wo):
        raise ValueError(f"tap_sum: {hp}x{wp} rows and columns of a {kh}x{kw} kernel give "
                         f"{hp - kh + 1}x{wp - kw + 1} outputs, not {ho}x{wo}")
    zeros = xp.zeros((o,), dtype=z.dtype)
    return ck.tap_sum(xp.ascontiguousarray(z).reshape(n, o * kh * kw, hp, wp), zeros, kh, kw, out=out)


def mse_loss_grad(pred, target):
    """Caffe's Euclidean loss (0-d, on the device) and its gradient, two launches."""
    xp = _xp(pred)
    return ck.mse_loss_grad(xp.ascontiguousarray(pred), xp.ascontiguousarray(target))
