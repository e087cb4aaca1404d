"""The conv algorithms of :class:`tinysr.nn.layers.Conv2d`, each a forward/backward pair with an explicit cache.

``forward(x, w, b, padding, relu, ctx) -> (y, cache)`` and ``backward(dy, cache, ctx, input_grad)
-> (dx or None, dW, db)``; the cache holds exactly what ``backward`` needs (None at inference).
All compute ``y[n, o, r, s] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, r + i, s + j]`` (then
``max(y, 0)`` with ``relu``), the same function up to float rounding:

- :class:`Im2col`: ``y = W (O, C*kh*kw) @ im2col(xpad) + b``; cheapest when ``C <= O``.
- :class:`Im2colFlip`: its forward and weight gradient, the input gradient as the convolution of
  ``dy`` with the flipped kernel (no col2im).
- :class:`OutputSide`: ``y = tap_sum(W (O*kh*kw, C) @ xpad) + b``; cheapest when ``O < C``.
- :class:`Direct`: one device kernel, bias and ReLU fused (one input channel, no input gradient).

The device's primitives (``ctx.prim``, :class:`tinysr.ops.primitives.Primitives`) say which of them it
runs for a layer (``conv_algorithms``) and do the arithmetic; ``ctx`` also splits the batch over the
engine's threads in steps of about ``step_bytes`` (``over_batch``, with a step's working set per
sample) and hands out the arrays the engine keeps between calls (``empty``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tinysr.ops.engine import Engine
from tinysr.ops.padding import pad, pad_backward
from tinysr.ops.shapes import conv_output_hw, pad_amounts


@dataclass(frozen=True)
class Context:
    """One layer call's device and run settings: ``prim`` (the device's primitives), ``xp`` (its
    array module), ``engine``, ``owner`` (whose kept arrays) and ``train`` (training: arrays kept)."""

    prim: object
    xp: object
    engine: Engine
    owner: object
    train: bool

    def empty(self, name: str, shape: tuple, dtype):
        """An uninitialised array, kept in the engine's workspace between training calls."""
        return self.engine.empty(self.owner, name, shape, dtype, self.xp, self.train)

    def over_batch(self, step, n: int, sample_bytes: int) -> None:
        """``step(s)`` over slices ``s`` of the ``n`` samples (:meth:`tinysr.ops.engine.Engine.over_batch`)."""
        self.engine.over_batch(step, n, sample_bytes, self.prim)

    def timed(self, part: str, f, *args, **kwargs):
        """``f(*args, **kwargs)``, timed as this layer's ``part`` where the engine takes a profile
        (:class:`tinysr.ops.engine.PassProfile`)."""
        prof = self.engine.profile
        if prof is None:
            return f(*args, **kwargs)
        return prof.timed(self.owner, part, f, *args, **kwargs)


def _bias_act(prim, y, b, relu: bool) -> None:
    if relu:
        prim.bias_relu_(y, b)  # one pass: max(y + b, 0)
    else:
        y += b[None, :, None, None]


def _reductions(ctx, prods, dyr):
    # the batch reductions: after the threads, in a fixed order
    return ctx.timed("reduce", prods.sum, axis=0), ctx.timed("reduce", dyr.sum, axis=(0, 2, 3))


def _relu_grad(dy, out, ctx):
    # (dy, dyr): dyr = dy * (out > 0) is written step by step into a kept array (with the ReLU; its
    # output's sign is the mask), else it is dy itself.
    if out is None:
        return dy, dy
    dy = ctx.xp.ascontiguousarray(dy)
    return dy, ctx.empty("dyr", dy.shape, dy.dtype)


class Im2col:
    """Unfold, one GEMM per step: ``y = W (O, C*kh*kw) @ cols + b``; backward ``dW = dy @ cols.T``,
    ``dx = col2im(W.T @ dy)``. Cache: ``cols`` (the unfolded input), ``W``, the input's shape,
    the padding and, with the ReLU, its output."""

    @staticmethod
    def forward(x, w, b, padding: str, relu: bool, ctx: Context):
        prim, (n, _, h, wd), (o, c, kh, kw) = ctx.prim, x.shape, w.shape
        ho, wo = conv_output_hw(h, wd, kh, kw, padding)
        y = ctx.empty("y", (n, o, ho, wo), x.dtype)
        xpad = pad(x, pad_amounts(kh, kw, padding), padding)
        k, unfold = c * kh * kw, (kh, kw) != (1, 1)
        cols = ctx.empty("cols", prim.cols_shape(n, k, ho * wo), x.dtype) if unfold else prim.im2col(xpad, 1, 1)

        def step(s):
            xs = ctx.timed("unfold", prim.im2col, xpad[s], kh, kw, out=cols[s]) if unfold else cols[s]
            ctx.timed("gemm", prim.cols_gemm, w, xs, y[s])
            ctx.timed("bias+relu", _bias_act, prim, y[s], b, relu)

        ctx.over_batch(step, n, (k + o) * ho * wo * x.itemsize)
        return y, (cols, w, x.shape, padding, y if relu else None)

    @staticmethod
    def backward(dy, cache, ctx: Context, input_grad: bool):
        (cols, w, (n, c, h, wd), padding, out), prim = cache, ctx.prim
        o, _, kh, kw = w.shape
        amounts = t, bottom, left, r = pad_amounts(kh, kw, padding)
        hp, wp, fold = h + t + bottom, wd + left + r, (kh, kw) != (1, 1)
        dy, dyr = _relu_grad(dy, out, ctx)
        dx = ctx.empty("dx", (n, c, h, wd), dy.dtype) if input_grad else None
        prods = ctx.empty("prods", (prim.grad_parts_rows(n, w), o, c * kh * kw), dy.dtype)

        def step(s):
            if out is not None:
                ctx.timed("relu grad", prim.relu_backward, dy[s], out[s], out=dyr[s])
            ctx.timed("gemm wgrad", prim.weight_grad_cols, w, dyr[s], cols[s], prods[s])
            if dx is not None and not any(amounts) and not fold:  # the GEMM writes dx itself
                ctx.timed("gemm igrad", prim.input_grad_cols, w, dyr[s], out=dx[s])
            elif dx is not None:
                dcols = ctx.timed("gemm igrad", prim.input_grad_cols, w, dyr[s])
                dx[s] = ctx.timed("fold", lambda: pad_backward(prim.col2im(dcols, (dyr[s].shape[0], c, hp, wp), kh, kw),
                                                               amounts, padding))

        ctx.over_batch(step, n, (2 * o + 2 * c * kh * kw) * (hp - kh + 1) * (wp - kw + 1) * dy.itemsize)
        gw, gb = _reductions(ctx, prods, dyr)
        return dx, gw.reshape(w.shape), gb


class Im2colFlip(Im2col):
    """:class:`Im2col`'s forward and weight gradient; the input gradient as a valid convolution of
    ``dy``, zero-padded by ``kh - 1`` rows and ``kw - 1`` columns a side, with the flipped kernel
    ``W'[c, o, i, j] = W[o, c, kh-1-i, kw-1-j]``: ``dxpad = W' (C, O*kh*kw) @ im2col(dy_full)``.
    A product over ``O*kh*kw`` and no col2im, where :class:`Im2col` multiplies over ``O`` and folds
    ``C*kh*kw`` rows back (a thin product and a scattered sum). Same cache as :class:`Im2col`."""

    @staticmethod
    def backward(dy, cache, ctx: Context, input_grad: bool):
        (cols, w, (n, c, h, wd), padding, out), prim, xp = cache, ctx.prim, ctx.xp
        o, _, kh, kw = w.shape
        amounts = t, bottom, left, r = pad_amounts(kh, kw, padding)
        hp, wp = h + t + bottom, wd + left + r
        ho, wo = hp - kh + 1, wp - kw + 1
        dy, dyr = _relu_grad(dy, out, ctx)
        dx = ctx.empty("dx", (n, c, h, wd), dy.dtype) if input_grad else None
        prods = ctx.empty("prods", (prim.grad_parts_rows(n, w), o, c * kh * kw), dy.dtype)
        if dx is not None:
            w_flip = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, kh, kw)
            dcols = ctx.empty("dcols", prim.cols_shape(n, o * kh * kw, hp * wp), dy.dtype)
            full = (kh - 1, kh - 1, kw - 1, kw - 1)
            dxpad = dx if not any(amounts) else ctx.empty("dxpad", (n, c, hp, wp), dy.dtype)

        def step(s):
            if out is not None:
                ctx.timed("relu grad", prim.relu_backward, dy[s], out[s], out=dyr[s])
            ctx.timed("gemm wgrad", prim.weight_grad_cols, w, dyr[s], cols[s], prods[s])
            if dx is not None:
                ctx.timed("unfold dy", prim.im2col, pad(dyr[s], full, "zero"), kh, kw, out=dcols[s])
                ctx.timed("gemm igrad", prim.cols_gemm, w_flip, dcols[s], dxpad[s])
                if dxpad is not dx:
                    dx[s] = ctx.timed("fold", pad_backward, dxpad[s], amounts, padding)

        ctx.over_batch(step, n, (2 * o + c * kh * kw + o * kh * kw) * ho * wo * dy.itemsize)
        gw, gb = _reductions(ctx, prods, dyr)
        return dx, gw.reshape(w.shape), gb


class OutputSide:
    """GEMM on the output side, then the shifted tap sum: ``z = W (O*kh*kw, C) @ xpad``,
    ``y = tap_sum(z) + b``; backward ``dW[o, i, j, c] = tap_spread(dy) @ xpad.T``,
    ``dx = W.T @ tap_spread(dy)``. Cache: the padded input, ``W``, the input's shape, the padding
    and, with the ReLU, its output. At inference a device's ``output_side_conv`` (the GPU's) runs it in one
    call on the unpadded input."""

    @staticmethod
    def forward(x, w, b, padding: str, relu: bool, ctx: Context):
        prim, xp, (n, c, h, wd), (o, _, kh, kw) = ctx.prim, ctx.xp, x.shape, w.shape
        ho, wo = conv_output_hw(h, wd, kh, kw, padding)
        y = ctx.empty("y", (n, o, ho, wo), x.dtype)
        if not ctx.train and prim.output_side_conv is not None:
            return prim.output_side_conv(x, w, b, padding, relu, out=y), None
        xpad = pad(x, pad_amounts(kh, kw, padding), padding)
        hp, wp = xpad.shape[2:]
        w_rows, x3 = w.transpose(0, 2, 3, 1).reshape(o * kh * kw, c), xpad.reshape(n, c, hp * wp)

        def step(s):
            z = ctx.timed("gemm", xp.matmul, w_rows, x3[s])  # (m, O*kh*kw, Hp*Wp)
            ctx.timed("tap sum", prim.tap_sum, z.reshape(-1, o, kh, kw, hp, wp), ho, wo, out=y[s])
            ctx.timed("bias+relu", _bias_act, prim, y[s], b, relu)

        ctx.over_batch(step, n, (c + o * kh * kw) * hp * wp * x.itemsize)
        return y, (xpad, w, x.shape, padding, y if relu else None)

    @staticmethod
    def backward(dy, cache, ctx: Context, input_grad: bool):
        (xpad, w, (n, c, h, wd), padding, out), prim, xp = cache, ctx.prim, ctx.xp
        o, _, kh, kw = w.shape
        amounts = pad_amounts(kh, kw, padding)
        hp, wp = xpad.shape[2:]
        dy, dyr = _relu_grad(dy, out, ctx)
        dx = ctx.empty("dx", (n, c, h, wd), dy.dtype) if input_grad else None
        x3, prods = xpad.reshape(n, c, hp * wp), ctx.empty("prods", (n, o * kh * kw, c), dy.dtype)
        w_cols = w.transpose(1, 0, 2, 3).reshape(c, o * kh * kw)  # (C, O*kh*kw)

        def step(s):
            if out is not None:
                ctx.timed("relu grad", prim.relu_backward, dy[s], out[s], out=dyr[s])
            d = ctx.timed("tap spread", prim.tap_spread, dyr[s], kh, kw, hp, wp).reshape(-1, o * kh * kw, hp * wp)
            ctx.timed("gemm wgrad", xp.matmul, d, x3[s].transpose(0, 2, 1), out=prods[s])
            if dx is not None and not any(amounts):  # the GEMM writes dx itself
                ctx.timed("gemm igrad", xp.matmul, w_cols, d, out=dx[s].reshape(-1, c, h * wd))
            elif dx is not None:
                dxp = ctx.timed("gemm igrad", xp.matmul, w_cols, d).reshape(-1, c, hp, wp)
                dx[s] = ctx.timed("fold", pad_backward, dxp, amounts, padding)

        ctx.over_batch(step, n, (2 * o * kh * kw + 2 * c) * hp * wp * dy.itemsize)
        gw, gb = _reductions(ctx, prods, dyr)
        return dx, gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2), gb


class Direct:
    """The device's direct kernel (:class:`tinysr.ops.primitives.DirectConv`): one input channel, bias
    and ReLU fused; no input gradient. Cache: the (contiguous) input, ``W``, the padding and, with the
    ReLU, its output."""

    @staticmethod
    def forward(x, w, b, padding: str, relu: bool, ctx: Context):
        x = ctx.xp.ascontiguousarray(x)
        y = ctx.prim.direct_forward(x, w, b, padding, relu=relu)
        return y, (x, w, padding, y if relu else None)

    @staticmethod
    def backward(dy, cache, ctx: Context, input_grad: bool):
        x, w, padding, out = cache
        dy = ctx.prim.relu_backward(dy, out) if out is not None else ctx.xp.ascontiguousarray(dy)
        return (None, *ctx.prim.direct_backward_params(x, dy, w.shape[2], w.shape[3], padding))


ALGORITHMS = {"im2col": Im2col, "im2col_flip": Im2colFlip, "output_side": OutputSide, "direct": Direct}
