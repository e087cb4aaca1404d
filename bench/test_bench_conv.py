"""Each SRCNN 9-1-5 convolution alone, every implementation side by side in one group.

Groups: ``<layer>-train-fwd`` and ``<layer>-train-fwd+bwd`` at the training shape (batch 128,
valid padding) and ``<layer>-infer1080p-fwd`` at the inference shape (one 1920x1080 Y image,
'same' replicate padding). Forward-only runs keep no backward cache (``train=False``,
``torch.no_grad``); forward+backward computes the weight and bias gradients and, except for
conv1, the input gradient (as in training). FLOP = 2 * MACs per pass.

Implementations (where meaningful):

- ``tinysr-numpy-im2col``       unfold + one GEMM.
- ``tinysr-numpy-output_side``  GEMM then shifted sum; only conv3 (O < C). For conv1 its
  ``O*k*k = 5184``-row intermediate is pointless, for the 1x1 conv2 it is im2col.
- ``tinysr-cupy-im2col`` / ``tinysr-cupy-output_side``  the same layer on CuPy arrays.
- ``tinysr-cuda-conv1``         the raw CUDA direct-conv kernels on conv1 (:mod:`tinysr.ops.cuda_kernels`).
- ``torch-cpu`` / ``torch-cuda``  ``F.conv2d`` (+ ``F.pad(mode="replicate")``) and autograd;
  ``torch-cuda`` in plain float32 (TF32 off), ``torch-cuda-tf32`` with TF32 allowed.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from benchutil import (IMAGE_SIZES, LAYERS, QUICK_IMAGE_SIZES, QUICK_TRAIN_BATCH, TORCH_TF32, TRAIN_BATCH,
                       conv_arrays, conv_flop, torch_conv, torch_device)

from tinysr.nn.layers import Conv2d
from tinysr.ops.shapes import conv_output_hw

HAS_CUDA_KERNELS = importlib.util.find_spec("tinysr.ops.cuda_kernels") is not None

INFER = "1920x1080"  # one Y image, (H, W) = (1080, 1920)


def impls(layer: str, backward: bool) -> list[str]:
    """The implementations worth comparing for ``layer`` (see the module docstring)."""
    out = ["tinysr-numpy-im2col"]
    if layer == "conv3":
        out.append("tinysr-numpy-output_side")
    out.append("tinysr-cupy-im2col")
    if layer == "conv3":
        out.append("tinysr-cupy-output_side")
    if layer == "conv1" and HAS_CUDA_KERNELS:
        out.append("tinysr-cuda-conv1")
    return out + ["torch-cpu", "torch-cuda", TORCH_TF32]


def cases(kind: str, backward: bool):
    """``(layer, impl)`` parameters, each in its benchmark group ``<layer>-<kind>``."""
    suffix = "fwd+bwd" if backward else "fwd"
    return [pytest.param(layer, impl, id=f"{layer}-{impl}",
                         marks=pytest.mark.benchmark(group=f"{layer}-{kind}-{suffix}"))
            for layer in LAYERS for impl in impls(layer, backward)]


def conv_callable(request, impl: str, layer_name: str, n: int, h: int, w: int, padding: str, backward: bool):
    """A no-argument function running one forward (and backward) of ``impl``, and its FLOP."""
    layer = LAYERS[layer_name]
    x, weight, bias, dy = conv_arrays(layer, n, h, w, padding)
    ho, wo = conv_output_hw(h, w, layer.k, layer.k, padding)
    flop = conv_flop(layer, n, ho, wo, backward)

    if impl.startswith("torch"):
        torch, dev = torch_device(request, impl)
        xt, dyt = torch.from_numpy(x).to(dev), torch.from_numpy(dy).to(dev)
        wt, bt = torch.from_numpy(weight).to(dev), torch.from_numpy(bias).to(dev)
        if not backward:
            def fn():
                with torch.no_grad():
                    return torch_conv(torch, xt, wt, bt, padding)
            return fn, flop
        wt.requires_grad_(True)
        bt.requires_grad_(True)
        xt.requires_grad_(layer.input_grad)
        inputs = (wt, bt, xt) if layer.input_grad else (wt, bt)

        def fn():
            return torch.autograd.grad(torch_conv(torch, xt, wt, bt, padding), inputs, dyt)
        return fn, flop

    if impl == "tinysr-cuda-conv1":
        cp = request.getfixturevalue("cupy")
        from tinysr.ops import cuda_kernels as ck  # noqa: PLC0415  (GPU only)

        xd, wd, bd, dyd = (cp.asarray(a) for a in (x, weight, bias, dy))
        if not backward:
            return (lambda: ck.direct_forward(xd, wd, bd, padding)), flop

        def fn():
            ck.direct_forward(xd, wd, bd, padding)
            return ck.direct_backward_params(xd, dyd, layer.k, layer.k, padding)
        return fn, flop

    # tinysr's Conv2d on NumPy or CuPy arrays: tinysr-<numpy|cupy>-<algo>
    _, lib, variant = impl.split("-", 2)
    if lib == "cupy":
        cp = request.getfixturevalue("cupy")
        x, weight, bias, dy = (cp.asarray(a) for a in (x, weight, bias, dy))
    conv = Conv2d(weight, bias, need_input_grad=layer.input_grad, algo=variant)
    if not backward:
        return (lambda: conv.forward(x, padding, train=False)), flop

    def fn():
        conv.forward(x, padding, train=True)
        return conv.backward(dy)
    return fn, flop


def run_case(measure, request, quick, impl, layer, kind, backward):
    if kind == "train":
        n = QUICK_TRAIN_BATCH if quick else TRAIN_BATCH
        side = LAYERS[layer].train_side
        shape, padding = (n, side, side), "valid"
    else:
        shape, padding = (1, *(QUICK_IMAGE_SIZES if quick else dict(IMAGE_SIZES))[INFER]), "replicate"
    fn, flop = conv_callable(request, impl, layer, *shape, padding, backward)
    measure(fn, flop=flop, memory=impl.startswith("tinysr-numpy"),
            layer=layer, input_shape=[shape[0], LAYERS[layer].c, *shape[1:]], padding=padding,
            dtype=np.dtype(np.float32).name)


@pytest.mark.parametrize("layer,impl", cases("train", backward=False))
def test_conv_train_forward(measure, request, quick, layer, impl):
    run_case(measure, request, quick, impl, layer, "train", backward=False)


@pytest.mark.parametrize("layer,impl", cases("train", backward=True))
def test_conv_train_forward_backward(measure, request, quick, layer, impl):
    run_case(measure, request, quick, impl, layer, "train", backward=True)


@pytest.mark.parametrize("layer,impl", cases("infer1080p", backward=False))
def test_conv_infer_1080p_forward(measure, request, quick, layer, impl):
    run_case(measure, request, quick, impl, layer, "infer", backward=False)
