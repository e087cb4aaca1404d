"""The whole SRCNN 9-1-5 network: inference per image size, one training step, a GEMM yardstick.

Groups:

- ``srcnn-infer-<W>x<H>`` (256x256, 512x512, 1920x1080, 3840x2160): one Y image from a host
  float32 array to a host float64 array (``restore_y``'s contract), transfers included.
  ``tinysr-numpy`` is ``restore_y`` as it is called by default (9-1-5 on the CPU: one streaming
  pass, no tiles), ``tinysr-numpy-tiles`` the network in the 512-pixel tiles ``infer.py`` takes
  (``restore_tiles``), ``tinysr-cupy`` one piece on the GPU; torch runs the identical network
  with replicate padding per layer, one piece. NumPy entries record ``peak_mb``: the host memory
  one call allocates at its peak (``tracemalloc``).
- ``srcnn-train-step-b128``: batch 128 of 33x33 -> 21x21 (valid), forward, Caffe Euclidean
  loss, backward and a MomentumSGD update (paper's per-layer rates, momentum 0.9); the batch
  already on the device. ``tinysr-*`` run ``tinysr.nn.training.train_step`` with a workspace kept
  between steps, as ``train.py`` does; ``tinysr-numpy-no-workspace`` allocates every array anew.
  Their ``peak_mb`` is a step's whole working set: the workspace's arrays count (the traced call
  starts with an empty one).
- ``srcnn-train-epoch-x3``: one epoch over 21,884 patches (the x3 T91 count) with batch 128,
  as ``train.py`` runs it on the GPU: patches resident on the device, one upload of the epoch's
  order, each step gathering its batch there, the loss summed on the device and read once at
  the end. GPU only (issue 7's target: <= 0.5 s on an H100); random patch values.
- ``gemm-f32-2048``: ``(2048, 2048) @ (2048, 2048)`` float32, the BLAS rate the convolutions
  are built on.

Weights are He-initialised (normal magnitudes, no denormals); timings do not depend on values.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchutil import (GEMM_N, IMAGE_SIZES, QUICK_GEMM_N, QUICK_IMAGE_SIZES, QUICK_TILE, QUICK_TRAIN_BATCH,
                       TORCH_TF32, TRAIN_BATCH, torch_device, srcnn_flop, torch_params, torch_srcnn)

from tinysr.nn.training import train_step
from tinysr.image.inference import DEFAULT_TILE, restore_tiles, restore_y
from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace

PAPER_LR = {"conv1": 1e-4, "conv2": 1e-4, "conv3": 1e-5}
INFER_IMPLS = ["tinysr-numpy", "tinysr-numpy-tiles", "tinysr-cupy", "torch-cpu", "torch-cuda", TORCH_TF32]
TRAIN_IMPLS = ["tinysr-numpy", "tinysr-numpy-no-workspace", "tinysr-cupy", "torch-cpu", "torch-cuda", TORCH_TF32]
EPOCH_IMPLS = ["tinysr-cupy", "torch-cuda", TORCH_TF32]
EPOCH_PATCHES, QUICK_EPOCH_PATCHES = 21884, 3 * QUICK_TRAIN_BATCH + 1
GEMM_IMPLS = ["numpy", "cupy", "torch-cpu", "torch-cuda", TORCH_TF32]


def torch_for(request, impl: str):
    """``(torch, device)`` for a ``torch-cpu`` / ``torch-cuda`` / ``torch-cuda-tf32`` impl (skips
    where it cannot run; sets the impl's TF32 mode)."""
    return torch_device(request, impl)


# ------------------------------------------------------------------------------------- inference

@pytest.mark.parametrize("size,impl", [
    pytest.param(size, impl, id=f"{size}-{impl}", marks=pytest.mark.benchmark(group=f"srcnn-infer-{size}"))
    for size, _ in IMAGE_SIZES for impl in INFER_IMPLS])
def test_srcnn_inference(measure, request, quick, size, impl):
    h, w = QUICK_IMAGE_SIZES[size] if quick else dict(IMAGE_SIZES)[size]
    y = np.random.default_rng(0).random((h, w), dtype=np.float32)
    model = SRCNN(init="he", seed=0, dtype=np.float32)
    tile = None
    if impl.startswith("torch"):
        torch, dev = torch_for(request, impl)
        net = torch_srcnn(torch, torch_params(torch, model.params, dev), "replicate")

        def fn():
            with torch.inference_mode():
                out = net(torch.from_numpy(y).to(dev)[None, None])
            return out[0, 0].cpu().numpy().astype(np.float64)
    else:
        if impl == "tinysr-cupy":
            model = model.to(request.getfixturevalue("cupy"))

            def fn():
                return restore_y(model, y, None)
        elif impl == "tinysr-numpy-tiles":
            tile = QUICK_TILE if quick else DEFAULT_TILE

            def fn():
                return restore_tiles(model, y, tile)
        else:
            def fn():
                return restore_y(model, y)
    measure(fn, flop=srcnn_flop(1, h, w, "replicate"), memory=impl.startswith("tinysr-numpy"),
            image_hw=[h, w], tile=tile)


# ------------------------------------------------------------------------------- training step

def tinysr_step(model, x, t, workspace):
    """One paper-recipe step on tinysr (forward, loss, backward, MomentumSGD), ``train_step`` with
    ``workspace`` (a :class:`Workspace`, or None for new arrays every step)."""
    opt, loss_fn = MomentumSGD(model.params, lr=PAPER_LR, momentum=0.9), MSELoss()
    model.engine = Engine(workspace=workspace)
    return lambda: train_step(model, loss_fn, opt, x, t)


def torch_trainer(torch, dev, host_params):
    """``(net, opt)``: the network with valid convolutions and SGD with momentum at the paper's rates."""
    p = torch_params(torch, host_params, dev, requires_grad=True)
    net = torch_srcnn(torch, p, "valid")
    opt = torch.optim.SGD([{"params": [p[f"{layer}.weight"], p[f"{layer}.bias"]], "lr": lr}
                           for layer, lr in PAPER_LR.items()], momentum=0.9)
    return net, opt


def torch_step(torch, dev, host_params, x, t):
    """The same step in torch: valid convolutions, sum of squares / (2 N), SGD with momentum."""
    net, opt = torch_trainer(torch, dev, host_params)
    xt, tt = torch.from_numpy(x).to(dev), torch.from_numpy(t).to(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = ((net(xt) - tt) ** 2).sum() / (2 * xt.shape[0])
        loss.backward()
        opt.step()
        return loss
    return step


@pytest.mark.benchmark(group="srcnn-train-step-b128")
@pytest.mark.parametrize("impl", TRAIN_IMPLS)
def test_srcnn_train_step(measure, request, quick, impl):
    n = QUICK_TRAIN_BATCH if quick else TRAIN_BATCH
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 33, 33), dtype=np.float32)
    t = rng.random((n, 1, 21, 21), dtype=np.float32)
    if impl.startswith("torch"):
        torch, dev = torch_for(request, impl)
        step = torch_step(torch, dev, SRCNN(init="he", seed=0, dtype=np.float32).params, x, t)
        memory_fn = None
    else:
        xp = request.getfixturevalue("cupy") if impl == "tinysr-cupy" else np
        xd, td = xp.asarray(x), xp.asarray(t)
        keep = impl != "tinysr-numpy-no-workspace"
        step = tinysr_step(SRCNN(init="he", seed=0, xp=xp), xd, td, Workspace() if keep else None)
        # the peak memory of one step, workspace included: a step that starts from an empty one
        memory_fn = tinysr_step(SRCNN(init="he", seed=0, xp=xp), xd, td, Workspace() if keep else None)
    measure(step, flop=srcnn_flop(n, 33, 33, "valid", backward=True),
            memory=impl.startswith("tinysr-numpy"), memory_fn=memory_fn, batch=n)


@pytest.mark.benchmark(group="srcnn-train-epoch-x3")
@pytest.mark.parametrize("impl", EPOCH_IMPLS)
def test_srcnn_train_epoch(measure, request, quick, impl):
    n, batch = (QUICK_EPOCH_PATCHES, QUICK_TRAIN_BATCH) if quick else (EPOCH_PATCHES, TRAIN_BATCH)
    steps = n // batch
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 33, 33), dtype=np.float32)
    t = np.ascontiguousarray(x[:, :, 6:27, 6:27])
    order = np.random.default_rng(1).permutation(n)[:steps * batch]
    if impl.startswith("torch-cuda"):
        torch, dev = torch_for(request, impl)
        xt, tt = torch.from_numpy(x).to(dev), torch.from_numpy(t).to(dev)
        net, opt = torch_trainer(torch, dev, SRCNN(init="he", seed=0).params)

        def epoch():
            idx_all = torch.from_numpy(order).to(dev)
            total = torch.zeros((), device=dev)
            for s in range(steps):
                idx = idx_all[s * batch:(s + 1) * batch]
                opt.zero_grad(set_to_none=True)
                loss = ((net(xt[idx]) - tt[idx]) ** 2).sum() / (2 * batch)
                loss.backward()
                opt.step()
                total += loss.detach()
            return float(total)
    else:
        cp = request.getfixturevalue("cupy")
        xd, td = cp.asarray(x), cp.asarray(t)
        model = SRCNN(init="he", seed=0, xp=cp)
        opt, loss_fn = MomentumSGD(model.params, lr=PAPER_LR, momentum=0.9), MSELoss()
        model.engine = Engine(workspace=Workspace())

        def epoch():
            idx_all = cp.asarray(order)
            total = cp.zeros((), dtype=np.float32)
            for s in range(steps):
                idx = idx_all[s * batch:(s + 1) * batch]
                total += train_step(model, loss_fn, opt, xd[idx], td[idx])
            return float(total)
    measure(epoch, flop=steps * srcnn_flop(batch, 33, 33, "valid", backward=True), patches=steps * batch,
            batch=batch)


# ------------------------------------------------------------------------------------------ GEMM

@pytest.mark.benchmark(group="gemm-f32-2048")
@pytest.mark.parametrize("impl", GEMM_IMPLS)
def test_gemm_f32(measure, request, quick, impl):
    n = QUICK_GEMM_N if quick else GEMM_N
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    if impl.startswith("torch"):
        torch, dev = torch_for(request, impl)
        at, bt = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        fn = lambda: at @ bt  # noqa: E731
    else:
        xp = request.getfixturevalue("cupy") if impl == "cupy" else np
        ad, bd = xp.asarray(a), xp.asarray(b)
        fn = lambda: ad @ bd  # noqa: E731
    measure(fn, flop=2 * n**3, n=n)
