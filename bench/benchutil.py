"""Helpers shared by the benchmark modules: sizes, FLOP counts, torch twins of tinysr's layers.

Benchmark names ("impls") say who computes and where:

- ``tinysr-numpy-*`` / ``tinysr-numba-*``  tinysr on the CPU (NumPy, numba col2im).
- ``tinysr-cupy-*``                        tinysr's layers on CuPy arrays (GPU).
- ``tinysr-cuda-*``                        tinysr's raw CUDA kernels (:mod:`tinysr.ops.cuda_kernels`).
- ``torch-cpu`` / ``torch-cuda``           the PyTorch yardstick (never a tinysr dependency);
  ``torch-cuda`` runs plain float32 (TF32 off, ``cudnn.benchmark`` on).
- ``torch-cuda-tf32``                      the same with TF32 allowed, labelled apart.

torch is only ever imported through the ``torch`` fixtures of ``conftest.py``; this module
takes it as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinysr.ops.shapes import conv_output_hw, pad_amounts

# The torch device used for "torch-cuda" benchmarks.
TORCH_GPU = "cuda"
# torch on the GPU with TF32 allowed for cuBLAS and cuDNN (faster, ~1e-3 relative error): its
# own labelled rows; "torch-cuda", the yardstick every GPU ratio is taken against, is plain float32.
TORCH_TF32 = "torch-cuda-tf32"

GPU_PREFIXES = ("tinysr-cupy", "tinysr-cuda", "torch-cuda", "cupy")


def torch_device(request, impl: str):
    """``(torch, device)`` for ``torch-cpu``, ``torch-cuda`` (TF32 off) or ``torch-cuda-tf32``
    (TF32 on for this test), through conftest's fixtures; they skip where torch cannot run."""
    if impl == TORCH_TF32:
        return request.getfixturevalue("torch_cuda_tf32"), TORCH_GPU
    if impl == "torch-cuda":
        return request.getfixturevalue("torch_cuda"), TORCH_GPU
    if impl == "torch-cpu":
        return request.getfixturevalue("torch"), "cpu"
    raise ValueError(f"not a torch impl: {impl!r}")


def device_of(impl: str) -> str:
    """``"gpu"`` for an impl that runs on the GPU, ``"cpu"`` otherwise."""
    return "gpu" if impl.startswith(GPU_PREFIXES) else "cpu"


@dataclass(frozen=True)
class Layer:
    """One SRCNN 9-1-5 convolution: ``c`` -> ``o`` channels, ``k x k`` kernel."""

    name: str
    c: int
    o: int
    k: int
    train_side: int        # input side at the training shape (valid convolutions)
    input_grad: bool       # layer 1 computes no input gradient

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.o, self.c, self.k, self.k)


LAYERS = {
    "conv1": Layer("conv1", c=1, o=64, k=9, train_side=33, input_grad=False),   # 1x33x33 -> 64x25x25
    "conv2": Layer("conv2", c=64, o=32, k=1, train_side=25, input_grad=True),   # 64x25x25 -> 32x25x25
    "conv3": Layer("conv3", c=32, o=1, k=5, train_side=25, input_grad=True),    # 32x25x25 -> 1x21x21
}

# (name, (H, W)) of whole images: the names are the real sizes, --bench-quick shrinks the pixels.
IMAGE_SIZES = [("256x256", (256, 256)), ("512x512", (512, 512)),
               ("1920x1080", (1080, 1920)), ("3840x2160", (2160, 3840))]
QUICK_IMAGE_SIZES = {"256x256": (24, 24), "512x512": (32, 32),
                     "1920x1080": (36, 64), "3840x2160": (72, 128)}
TRAIN_BATCH, QUICK_TRAIN_BATCH = 128, 4
GEMM_N, QUICK_GEMM_N = 2048, 64
QUICK_TILE = 32  # restore_tiles tile in --bench-quick, small enough that the quick images are tiled


def conv_macs(layer: Layer, n: int, ho: int, wo: int) -> int:
    """Multiply-adds of one forward pass: ``N * O * Ho * Wo * C * k * k``."""
    return n * layer.o * ho * wo * layer.c * layer.k * layer.k


def conv_flop(layer: Layer, n: int, ho: int, wo: int, backward: bool) -> int:
    """2 * MACs for the forward; a backward adds the weight gradient and, if any, the input gradient."""
    passes = 1 + (1 + layer.input_grad if backward else 0)
    return 2 * conv_macs(layer, n, ho, wo) * passes


def srcnn_flop(n: int, h: int, w: int, padding: str, backward: bool = False) -> int:
    """FLOP of the whole 9-1-5 network on ``n`` images of ``h x w`` (bias, ReLU, loss not counted)."""
    total = 0
    for layer in LAYERS.values():
        h, w = conv_output_hw(h, w, layer.k, layer.k, padding)
        total += conv_flop(layer, n, h, w, backward)
    return total


def conv_arrays(layer: Layer, n: int, h: int, w: int, padding: str, seed: int = 0):
    """float32 host arrays ``x (N,C,H,W)``, ``weight``, ``bias`` and ``dy`` (the output's shape)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, layer.c, h, w), dtype=np.float32)
    fan_in = layer.c * layer.k * layer.k
    weight = (rng.standard_normal(layer.weight_shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    bias = (rng.standard_normal(layer.o) * 0.01).astype(np.float32)
    ho, wo = conv_output_hw(h, w, layer.k, layer.k, padding)
    dy = rng.standard_normal((n, layer.o, ho, wo)).astype(np.float32)
    return x, weight, bias, dy


def torch_pad(k: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts ``(left, right, top, bottom)`` for tinysr's 'same' padding of a ``k x k`` kernel."""
    top, bottom, left, right = pad_amounts(k, k, "replicate")
    return (left, right, top, bottom)


def torch_conv(torch, x, weight, bias, padding: str):
    """tinysr's ``Conv2d.forward`` in torch: replicate padding by ``F.pad``, then ``conv2d``."""
    F = torch.nn.functional
    if padding == "replicate":
        x = F.pad(x, torch_pad(weight.shape[-1]), mode="replicate")
    elif padding != "valid":
        raise ValueError(f"torch twin supports 'valid' and 'replicate', not {padding!r}")
    return F.conv2d(x, weight, bias)


def torch_srcnn(torch, params: dict, padding: str):
    """The same 9-1-5 network in torch (conv, ReLU, conv, ReLU, conv; padding per layer)."""
    layers = [(params[f"{p}.weight"], params[f"{p}.bias"]) for p in ("conv1", "conv2", "conv3")]

    def forward(x):
        for i, (w, b) in enumerate(layers):
            x = torch_conv(torch, x, w, b, padding)
            if i < 2:
                x = torch.relu(x)
        return x

    return forward


def torch_params(torch, host_params: dict, device: str, requires_grad: bool = False) -> dict:
    """tinysr's host parameters as float32 torch tensors on ``device``."""
    return {k: torch.tensor(np.asarray(v, dtype=np.float32), device=device, requires_grad=requires_grad)
            for k, v in host_params.items()}
