"""im2col / col2im and padding (with its adjoint), for NumPy and CuPy alike.

Layout (NCHW, stride 1, correlation):

- ``x`` padded input ``(N, C, Hp, Wp)``.
- ``cols`` ``(N, C*kh*kw, Ho*Wo)`` with row index ``c*kh*kw + i*kw + j`` holding
  ``x[n, c, y + i, x + j]`` at column ``y*Wo + x``. A weight ``(O, C, kh, kw)`` reshaped to
  ``(O, C*kh*kw)`` multiplies it directly: ``out = W2 @ cols`` -> ``(N, O, Ho*Wo)``, already NCHW.

Every function takes its array module from its input, so the same code runs on the GPU; there
:func:`im2col` and :func:`col2im` run one raw CUDA kernel each (:mod:`tinysr.cuda_kernels`: a
gather per output element, so the fold adds the taps in this module's order, bit for bit)
instead of one slice copy per tap.
On the CPU :func:`im2col` is one numba pass of plain copies (no GIL, so worker threads can
unfold their own samples at once); ``col2im`` on the CPU can use a numba loop (``impl="numba"``) that adds the taps in the same
order as the NumPy path and so gives bit-identical numbers with no ``(N, C, kh, kw, Ho, Wo)``
temporary beyond ``cols`` itself.
"""

from __future__ import annotations

from .backend import get_array_module, is_device_array
from .shapes import check_padding


def pad(x, amounts: tuple[int, int, int, int], padding: str):
    """Pad ``x`` ``(N, C, H, W)`` by ``(top, bottom, left, right)``.

    ``padding`` is ``"zero"`` (constant 0) or ``"replicate"`` (edge); ``"valid"`` or all-zero
    amounts return ``x`` itself (no copy).
    """
    check_padding(padding)
    t, b, l, r = amounts
    if padding == "valid" or not any(amounts):
        return x
    xp = get_array_module(x)
    mode = "constant" if padding == "zero" else "edge"
    return xp.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=mode)


def pad_backward(dxp, amounts: tuple[int, int, int, int], padding: str):
    """Adjoint of :func:`pad`: gradient w.r.t. the unpadded input, ``(N, C, H, W)``.

    Zero padding drops the border gradient. Replicate padding adds every padded row/column's
    gradient onto the edge row/column it copied.
    """
    check_padding(padding)
    t, b, l, r = amounts
    if padding == "valid" or not any(amounts):
        return dxp
    hp, wp = dxp.shape[2], dxp.shape[3]
    h, w = hp - t - b, wp - l - r
    dx = dxp[:, :, t:t + h, l:l + w]
    if padding == "zero":
        return dx.copy()
    xp = get_array_module(dxp)
    # Rows first on the full width, then columns on the folded rows.
    rows = dxp[:, :, t:t + h, :].copy()
    if t:
        rows[:, :, 0, :] += dxp[:, :, :t, :].sum(axis=2)
    if b:
        rows[:, :, h - 1, :] += dxp[:, :, t + h:, :].sum(axis=2)
    dx = xp.ascontiguousarray(rows[:, :, :, l:l + w])
    if l:
        dx[:, :, :, 0] += rows[:, :, :, :l].sum(axis=3)
    if r:
        dx[:, :, :, w - 1] += rows[:, :, :, l + w:].sum(axis=3)
    return dx


def im2col(xp_in, kh: int, kw: int, out=None):
    """Unfold a padded input ``(N, C, Hp, Wp)`` into ``(N, C*kh*kw, Ho*Wo)`` (see module doc).

    ``out``: a C-contiguous ``(N, C*kh*kw, Ho*Wo)`` array to write into (returned); otherwise a
    new array, or for a 1x1 kernel a view of the input.
    """
    xp = get_array_module(xp_in)
    n, c, hp, wp = xp_in.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    shape = (n, c * kh * kw, ho * wo)
    if out is not None and (out.shape != shape or out.dtype != xp_in.dtype or not out.flags.c_contiguous):
        raise ValueError(f"im2col: out must be a C-contiguous {xp_in.dtype} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    if kh == 1 and kw == 1:
        if out is None:
            return xp_in.reshape(shape)
        out[...] = xp_in.reshape(shape)
        return out
    if is_device_array(xp_in):
        from .cuda_kernels import im2col_gpu  # noqa: PLC0415  (GPU only)

        return im2col_gpu(xp.ascontiguousarray(xp_in), kh, kw, out=out)
    from .cpu_kernels import im2col_numba  # noqa: PLC0415  (numba compiles lazily)

    return im2col_numba(xp_in, kh, kw, xp.empty(shape, dtype=xp_in.dtype) if out is None else out)


def col2im(cols, shape: tuple[int, int, int, int], kh: int, kw: int, impl: str = "numpy"):
    """Adjoint of :func:`im2col`: fold ``(N, C*kh*kw, Ho*Wo)`` back to ``shape = (N, C, Hp, Wp)``.

    Overlapping taps are summed in the fixed order ``i`` then ``j``, so the result is
    deterministic. ``impl="numba"`` (CPU only) runs :func:`tinysr.cpu_kernels.col2im_numba`,
    which gives the same numbers without the strided temporaries of the slice loop.
    """
    n, c, hp, wp = shape
    ho, wo = hp - kh + 1, wp - kw + 1
    if kh == 1 and kw == 1:
        return cols.reshape(shape)
    xp = get_array_module(cols)
    if is_device_array(cols):
        from .cuda_kernels import col2im_gpu  # noqa: PLC0415  (GPU only)

        return col2im_gpu(xp.ascontiguousarray(cols), shape, kh, kw)
    cols6 = cols.reshape(n, c, kh, kw, ho, wo)
    if impl == "numba" and xp.__name__ == "numpy":
        from .cpu_kernels import col2im_numba  # noqa: PLC0415  (numba compiles lazily)

        return col2im_numba(cols6, hp, wp)
    if impl not in ("numpy", "numba"):
        raise ValueError(f"unknown col2im impl {impl!r}: choose 'numpy' or 'numba'")
    out = xp.zeros(shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + ho, j:j + wo] += cols6[:, :, i, j]
    return out


# --- Output-side correlation: for layers with fewer output than input channels ---------------
#
# y[n, o, r, s] = sum_{i,j} Z[n, o, i, j, r + i, s + j]  where  Z = W(o,i,j ; c) @ xpad(c ; q).
# The GEMM runs first (on O*kh*kw rows, not C*kh*kw), then a small shifted sum. ``shift_sum``
# and ``shift_spread`` are each other's adjoints, as ``im2col`` and ``col2im`` are.


def shift_sum(z, ho: int, wo: int, out=None):
    """``z`` ``(N, O, kh, kw, Hp, Wp)`` -> ``(N, O, Ho, Wo)``: ``sum_{i,j} z[..., i, j, r+i, s+j]``,
    into ``out`` (that shape and dtype; returned) where given."""
    xp = get_array_module(z)
    n, o, kh, kw = z.shape[:4]
    if out is None:
        out = xp.zeros((n, o, ho, wo), dtype=z.dtype)
    elif out.shape != (n, o, ho, wo) or out.dtype != z.dtype:
        raise ValueError(f"shift_sum: out must be a {z.dtype} array of shape {(n, o, ho, wo)}, got {out.dtype} {out.shape}")
    else:
        out[...] = 0
    for i in range(kh):
        for j in range(kw):
            out += z[:, :, i, j, i:i + ho, j:j + wo]
    return out


def shift_spread(dy, kh: int, kw: int, hp: int, wp: int):
    """Adjoint of :func:`shift_sum`: ``dy`` ``(N, O, Ho, Wo)`` -> ``(N, O, kh, kw, Hp, Wp)``
    with ``d[..., i, j, r+i, s+j] = dy[..., r, s]`` and zeros elsewhere."""
    xp = get_array_module(dy)
    n, o, ho, wo = dy.shape
    d = xp.zeros((n, o, kh, kw, hp, wp), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            d[:, :, i, j, i:i + ho, j:j + wo] = dy
    return d
