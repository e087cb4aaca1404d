"""Raw CUDA kernels for the GPU training step, compiled at run time through ``cupy.RawModule``.

Callers: :mod:`tinysr.ops.primitives_gpu` (the layers' GPU primitives: the direct convolution
and its gradients, bias + ReLU, ReLU backward, the batch unfold and fold, the output side's tap
sum, the MSE loss) and :class:`tinysr.ops.engine.Engine` (the fused 9-1-5 inference).
:mod:`tinysr.ops.primitives_cpu` runs the same arithmetic on the CPU.

The CUDA C sources live in the repository's top-level ``kernels/`` folder and ship inside the
wheel as ``tinysr/kernels/*.cu``; :func:`kernel_source` finds them in either place. Nothing is
compiled, and CuPy is not imported, when this module is imported: each source file is compiled
(NVRTC, ``-std=c++17``) the first time one of its kernels is needed on a device, once per
process and per device.

Every kernel has a float32 (``_f32``) and a float64 (``_f64``) entry point; the wrappers pick
one from the arrays' dtype, check dtypes, shapes and contiguity (``TypeError``/``ValueError``),
and launch on the current CuPy stream of the arrays' device. Index arithmetic is 32-bit where the
host has checked that the sizes allow it; the kernels that divide a flat index (``im2col``,
``col2im``, ``bias_relu``) also have ``_i64_`` entry points, which the wrappers pick only for
arrays past 2^31 elements. Scalars are passed as ``np.int32``/``np.int64`` and the arrays' float
type. All results are deterministic: no floating-point atomics, every reduction adds in an order
fixed by the shapes alone.

Wrappers (shapes as NCHW):

- :func:`direct_forward`         ``(N,1,H,W)`` -> ``(N,O,Ho,Wo)``, bias and optional ReLU fused.
- :func:`direct_backward_params` its ``dW`` ``(O,1,kh,kw)`` and ``db`` ``(O,)`` (two passes).
- :func:`bias_relu_`             in place ``y = max(y + b[c], 0)`` on ``(N,C,...)``.
- :func:`relu_backward`          ``dy * (y > 0)``.
- :func:`mse_loss_grad`          Caffe Euclidean loss (0-d) and its gradient.
- :func:`im2col_gpu` / :func:`col2im_gpu`  the layout of :mod:`tinysr.ops.primitives_cpu`.
- :func:`fused_predict`          whole 9-1-5 inference on one Y image in two launches.
- :func:`tap_sum`                the output side's shifted tap sum, padding by indexing.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tinysr.ops.backend import array_device
from tinysr.ops.shapes import check_padding, conv_output_hw, pad_amounts

KERNEL_FILES = ("direct.cu", "elementwise.cu", "col2im.cu", "fused.cu")

# Launch geometry; the numbers must agree with the #defines in the .cu files.
_DIRECT_TILE_W = 32        # direct.cu DIRECT_TILE_W (forward output tile 32 wide ...)
_DIRECT_TILE_H = 16        # direct.cu DIRECT_TILE_H (... by 16 high)
_DIRECT_RPT = 4            # direct.cu DIRECT_RPT (output rows per thread: block 32 x 4)
_DIRECT_OCB = 16           # direct.cu DIRECT_OCB  (output channels per forward block)
_DIRECT_KMAX = 11          # direct.cu DIRECT_KMAX (largest kh, kw)
DIRECT_KMAX = _DIRECT_KMAX  # public: primitives_gpu.conv_algorithms offers the direct conv up to this size
_DIRECT_GRAD_PIX = 128     # direct.cu DIRECT_GRAD_PIX (pixels per gradient tile)
_DIRECT_GRAD_THREADS = 128  # direct.cu DIRECT_GRAD_THREADS (most threads per gradient block)
_DIRECT_GRAD_MAX_SLOTS = 512  # cap on the gradient's partial-sum slots (pass 2 adds them in order)
_EW_RED_THREADS = 256     # elementwise.cu EW_RED_THREADS
_EW_THREADS = 256         # block size of the grid-stride elementwise kernels
_MAX_GRID_X = 1 << 20     # cap on grid-stride launches (each thread then loops)
_MAX_GRID_YZ = 65535      # CUDA's limit on gridDim.y and gridDim.z
_MSE_MAX_BLOCKS = 1024    # cap on MSE partial sums (pass 2 is one block)
_INT32_MAX = 2**31 - 1
INDEX_MAX = _INT32_MAX  # public: the largest index of the 32-bit kernels (primitives_gpu.index_limit)
_FUSED_TILE = 16          # fused.cu FUSED_TILE (fused_z block is 16 x 16)
_FUSED_OCB = 16           # fused.cu FUSED_OCB
_FUSED_KMAX = 11          # fused.cu FUSED_KMAX (largest f1)
_FUSED_N2MAX = 32         # fused.cu FUSED_N2MAX (largest n2)
_FUSED_ZMAX = 25          # fused.cu FUSED_ZMAX (largest f3 * f3)
_PADDING_MODE = {"valid": 0, "zero": 1, "replicate": 2}  # direct.cu DIRECT_MODE_*


# --------------------------------------------------------------------------- sources and compiling

def kernel_dir() -> Path:
    """The folder holding the ``.cu`` files.

    ``<package>/kernels`` when tinysr is installed from the wheel; the repository's top-level
    ``kernels/`` (next to the ``tinysr`` package) in a source checkout. Raises
    ``FileNotFoundError`` naming both places when neither holds the sources.
    """
    package = Path(__file__).resolve().parents[1]  # tinysr/ (this module is tinysr/ops/cuda_kernels.py)
    candidates = [package / "kernels", package.parent / "kernels"]
    for folder in candidates:
        if (folder / KERNEL_FILES[0]).is_file():
            return folder
    raise FileNotFoundError(
        "tinysr's CUDA sources (kernels/*.cu) were not found in "
        + " or ".join(str(c) for c in candidates)
        + "; reinstall tinysr (the wheel ships them as tinysr/kernels/) or run from the repository"
    )


def kernel_source(name: str) -> str:
    """The CUDA C text of ``kernels/<name>`` (``"direct.cu"``; the ``.cu`` suffix is optional).

    Raises ``ValueError`` for a name that is not one of :data:`KERNEL_FILES` and
    ``FileNotFoundError`` (naming the folders searched) when the file cannot be found.
    """
    if not name.endswith(".cu"):
        name += ".cu"
    if name not in KERNEL_FILES:
        raise ValueError(f"unknown kernel source {name!r}: choose one of {', '.join(KERNEL_FILES)}")
    path = kernel_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"CUDA source {path} is missing from tinysr's kernel folder")
    return path.read_text(encoding="utf-8")


def _cupy():
    from tinysr.ops.backend import resolve_backend  # noqa: PLC0415  (kept next to its only use)

    return resolve_backend("cupy")


@functools.lru_cache(maxsize=None)
def _module(name: str, device_id: int):
    """``cupy.RawModule`` of one source file for one device (compiled on first use there)."""
    cp = _cupy()
    with cp.cuda.Device(device_id):
        return cp.RawModule(code=kernel_source(name), options=("-std=c++17",))


@functools.lru_cache(maxsize=None)
def _function(name: str, entry: str, device_id: int):
    """Kernel ``entry`` of source ``name`` on device ``device_id``; compiles at most once."""
    cp = _cupy()
    with cp.cuda.Device(device_id):
        return _module(name, device_id).get_function(entry)


def _launch(name: str, entry: str, device, grid, block, args) -> None:
    """Launch ``entry`` from ``name`` on ``device`` (a ``cupy.cuda.Device``) with its current stream."""
    with device:
        _function(name, entry, device.id)(grid, block, args)


# --------------------------------------------------------------------------- argument checks

def _suffix(dtype) -> str:
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "f32"
    if dt == np.float64:
        return "f64"
    raise TypeError(f"tinysr's CUDA kernels take float32 or float64 arrays, not {dt}")


def _check_device_array(a, what: str):
    """``a`` must be a C-contiguous CuPy array of float32/float64; returns its dtype suffix."""
    if array_device(a) != "cupy":
        raise TypeError(f"{what} must be a CuPy array on the GPU, got {type(a).__name__}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (use cupy.ascontiguousarray)")
    return _suffix(a.dtype)


def _check_same(ref, ref_name: str, *others) -> None:
    """Every ``(array, name)`` in ``others`` is a C-contiguous CuPy float array
    (:func:`_check_device_array`) of ``ref``'s dtype and device."""
    for a, name in others:
        _check_device_array(a, name)
    for a, name in others:
        if a.dtype != ref.dtype:
            raise TypeError(f"{name} is {a.dtype} but {ref_name} is {ref.dtype}")
        if a.device.id != ref.device.id:
            raise ValueError(f"{name} is on GPU {a.device.id} but {ref_name} is on GPU {ref.device.id}")


def _check_int32(**values) -> None:
    for name, v in values.items():
        if v > _INT32_MAX:
            raise ValueError(f"{name} = {v} does not fit the kernels' 32-bit index ({_INT32_MAX})")


def _index_width(total: int, blocks: int, threads: int) -> str:
    """``""`` (32-bit kernels) when a grid-stride loop over ``total`` elements never passes 2^31 - 1,
    else ``"_i64"`` (64-bit)."""
    return "" if total + blocks * threads <= _INT32_MAX else "_i64"


def _grid_stride_blocks(total: int, threads: int) -> int:
    return max(1, min(-(-total // threads), _MAX_GRID_X))


# --------------------------------------------------------------------------- the direct conv (one input channel)

def direct_forward(x, w, b, padding: str = "valid", relu: bool = False):
    """The direct convolution (one input channel: SRCNN's layer 1), bias and optional ReLU fused.

    ``x`` ``(N, 1, H, W)``, ``w`` ``(O, 1, kh, kw)`` with ``kh, kw <= 11``, ``b`` ``(O,)``, all
    C-contiguous CuPy arrays of one float dtype -> ``y`` ``(N, O, Ho, Wo)`` with
    ``y = b[o] + sum_ij w[o,0,i,j] * xpad[n,0,r+i,s+j]`` (correlation, no flip), then
    ``max(y, 0)`` when ``relu``. ``padding`` is ``"valid"``, ``"zero"`` or ``"replicate"``
    (amounts from :func:`tinysr.ops.shapes.pad_amounts`); the same numbers as
    ``tinysr.nn.layers.Conv2d.forward`` (+ ``ReLU``). A block computes a 32 x 16 output tile for 16
    channels, each thread 4 pixels, from weights staged ``[tap][channel]`` (vector loads).
    """
    cp = _cupy()
    sfx = _check_device_array(x, "direct conv input x")
    _check_same(x, "x", (w, "direct conv weight"), (b, "direct conv bias"))
    check_padding(padding)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"direct conv input must be (N, 1, H, W), got shape {x.shape}")
    if w.ndim != 4 or w.shape[1] != 1:
        raise ValueError(f"direct conv weight must be (O, 1, kh, kw), got shape {w.shape}")
    o, _, kh, kw = w.shape
    if not (1 <= kh <= _DIRECT_KMAX and 1 <= kw <= _DIRECT_KMAX):
        raise ValueError(f"direct conv kernel {kh}x{kw} is larger than the {_DIRECT_KMAX}x{_DIRECT_KMAX} the CUDA kernel holds")
    if b.shape != (o,):
        raise ValueError(f"direct conv bias must have shape ({o},), got {b.shape}")
    n, _, h, wd = x.shape
    ho, wo = conv_output_hw(h, wd, kh, kw, padding)
    top, _, left, _ = pad_amounts(kh, kw, padding)
    jobs = n * -(-o // _DIRECT_OCB)
    _check_int32(input_plane=h * wd, output_plane=ho * wo, jobs=jobs)
    if -(-ho // _DIRECT_TILE_H) > _MAX_GRID_YZ:
        raise ValueError(f"direct conv output height {ho} needs more than {_MAX_GRID_YZ} row tiles")
    with x.device:
        y = cp.empty((n, o, ho, wo), dtype=x.dtype)
    if y.size == 0:
        return y
    grid = (-(-wo // _DIRECT_TILE_W), -(-ho // _DIRECT_TILE_H), min(jobs, _MAX_GRID_YZ))
    args = (x, w, b, y, np.int32(n), np.int32(h), np.int32(wd), np.int32(o), np.int32(kh), np.int32(kw),
            np.int32(ho), np.int32(wo), np.int32(top), np.int32(left), np.int32(_PADDING_MODE[padding]),
            np.int32(1 if relu else 0))
    _launch("direct.cu", f"direct_forward_{sfx}", x.device, grid,
            (_DIRECT_TILE_W, _DIRECT_TILE_H // _DIRECT_RPT, 1), args)
    return y


def direct_grad_tiles(ho: int, wo: int) -> tuple[int, int]:
    """``(TR, TC)``: the pixel tile of the direct conv's gradient pass for an ``ho x wo`` output.

    ``TC = min(wo, 128)`` columns and as many rows as keep ``TR * TC <= 128`` (whole rows of a
    training patch: 5 x 25 for a 25 x 25 layer-1 output), so the tile and its halo fit the
    kernel's static shared buffers.
    """
    tc = max(1, min(wo, _DIRECT_GRAD_PIX))
    tr = max(1, min(ho, _DIRECT_GRAD_PIX // tc))
    return tr, tc


def direct_backward_params(x, dy, kh: int, kw: int, padding: str = "valid"):
    """The direct conv's parameter gradients, deterministic (fixed-order sums, no atomics), in two launches.

    ``x`` ``(N, 1, H, W)`` the layer's input, ``dy`` ``(N, O, Ho, Wo)`` the gradient of its
    output (before any ReLU: apply :func:`relu_backward` first), ``kh, kw <= 11`` -> ``(dW, db)``
    with ``dW`` ``(O, 1, kh, kw)``, ``dW[o,0,i,j] = sum_{n,r,s} dy[n,o,r,s] * xpad[n,0,r+i,s+j]``
    and ``db`` ``(O,)`` ``= sum_{n,r,s} dy[n,o,r,s]``: ``Conv2d.backward``'s
    ``grad_weight``/``grad_bias``.

    Pass 1 reads each pixel tile of ``x`` and ``dy`` once per group of 16 channels and writes
    every tap's partial sum per block slot (at most 512 slots, a number fixed by the shapes);
    pass 2 adds the slots in order (see ``kernels/direct.cu``).
    """
    cp = _cupy()
    sfx = _check_device_array(x, "direct conv input x")
    _check_same(x, "x", (dy, "direct conv output gradient dy"))
    check_padding(padding)
    kh, kw = int(kh), int(kw)
    if kh < 1 or kw < 1:
        raise ValueError(f"direct conv kernel size must be positive, got {kh}x{kw}")
    if kh > _DIRECT_KMAX or kw > _DIRECT_KMAX:
        raise ValueError(f"direct conv kernel {kh}x{kw} is larger than the {_DIRECT_KMAX}x{_DIRECT_KMAX} the CUDA kernel holds")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"direct conv input must be (N, 1, H, W), got shape {x.shape}")
    n, _, h, wd = x.shape
    ho, wo = conv_output_hw(h, wd, kh, kw, padding)
    if dy.ndim != 4 or dy.shape[0] != n or dy.shape[2:] != (ho, wo):
        raise ValueError(f"direct conv dy must be ({n}, O, {ho}, {wo}) for input {x.shape}, got {dy.shape}")
    o = dy.shape[1]
    top, _, left, _ = pad_amounts(kh, kw, padding)
    kk = kh * kw
    tr, tc = direct_grad_tiles(ho, wo)
    tiles_r, tiles_c = -(-ho // tr), -(-wo // tc)
    tiles = n * tiles_r * tiles_c
    groups = -(-o // _DIRECT_OCB)
    _check_int32(input_plane=h * wd, output_plane=ho * wo, tiles=tiles, partials_per_slot=o * (kk + 1))
    if groups > _MAX_GRID_YZ:
        raise ValueError(f"direct conv gradient: {o} channels need more than {_MAX_GRID_YZ} channel groups")
    with x.device:
        dw = cp.empty((o, 1, kh, kw), dtype=x.dtype)
        db = cp.empty((o,), dtype=x.dtype)
    if o == 0:
        return dw, db
    if tiles == 0:
        dw[...] = 0
        db[...] = 0
        return dw, db
    slots = min(tiles, _DIRECT_GRAD_MAX_SLOTS)
    threads = -(-(kk + 1) // 32) * 32  # one per tap and one for the bias, whole warps
    with x.device:
        partials = cp.empty((slots, o, kk + 1), dtype=x.dtype)
    args = (x, dy, partials, np.int32(h), np.int32(wd), np.int32(o), np.int32(kh), np.int32(kw),
            np.int32(ho), np.int32(wo), np.int32(top), np.int32(left), np.int32(_PADDING_MODE[padding]),
            np.int32(tr), np.int32(tc), np.int32(tiles_r), np.int32(tiles_c), np.int32(tiles), np.int32(slots))
    _launch("direct.cu", f"direct_grad_partial_{sfx}", x.device, (slots, groups, 1), (threads, 1, 1), args)
    outputs = o * (kk + 1)
    _launch("direct.cu", f"direct_grad_reduce_{sfx}", x.device, (_grid_stride_blocks(outputs, _EW_THREADS), 1, 1),
            (_EW_THREADS, 1, 1), (partials, dw, db, np.int32(o), np.int32(kk), np.int32(slots)))
    return dw, db


# --------------------------------------------------------------------------- elementwise

def bias_relu_(y, b):
    """In place ``y[n, c, ...] = max(y[n, c, ...] + b[c], 0)``; returns ``y``.

    ``y`` ``(N, C, ...)`` (e.g. ``(N, C, P)`` or NCHW) and ``b`` ``(C,)``, C-contiguous, one dtype.
    No mask is kept: :func:`relu_backward` reads the output itself.
    """
    sfx = _check_device_array(y, "y")
    _check_same(y, "y", (b, "bias b"))
    if y.ndim < 2 or b.shape != (y.shape[1],):
        raise ValueError(f"bias_relu_ needs y (N, C, ...) and b (C,), got {y.shape} and {b.shape}")
    c = y.shape[1]
    if y.size == 0:
        return y
    plane = y.size // (y.shape[0] * c)
    _check_int32(channels=c)
    blocks = _grid_stride_blocks(y.size, _EW_THREADS)
    width = _index_width(y.size, blocks, _EW_THREADS)
    index = np.int32 if not width else np.int64
    args = (y, b, index(y.size), np.int32(c), index(plane))
    _launch("elementwise.cu", f"bias_relu{width}_{sfx}", y.device, (blocks, 1, 1), (_EW_THREADS, 1, 1), args)
    return y


def relu_backward(dy, y, out=None):
    """``dx = dy * (y > 0)`` with ``y`` the ReLU's output (``y > 0`` iff its input ``> 0``).

    ``dy``, ``y``: same shape, C-contiguous, one dtype -> ``dx`` of that shape: ``out`` where
    given (C-contiguous, same shape, dtype and device), else a new array.
    """
    cp = _cupy()
    sfx = _check_device_array(dy, "dy")
    _check_same(dy, "dy", (y, "y"))
    if dy.shape != y.shape:
        raise ValueError(f"relu_backward: dy {dy.shape} and y {y.shape} differ in shape")
    if out is None:
        with dy.device:
            dx = cp.empty_like(dy)
    else:
        _check_same(dy, "dy", (out, "out"))
        if out.shape != dy.shape:
            raise ValueError(f"relu_backward: out {out.shape} and dy {dy.shape} differ in shape")
        dx = out
    if dy.size == 0:
        return dx
    args = (dy, y, dx, np.int64(dy.size))
    _launch("elementwise.cu", f"relu_backward_{sfx}", dy.device,
            (_grid_stride_blocks(dy.size, _EW_THREADS), 1, 1), (_EW_THREADS, 1, 1), args)
    return dx


def mse_loss_grad(pred, target):
    """Caffe's Euclidean loss and its gradient in two launches, deterministic.

    ``pred``, ``target``: same shape ``(N, ...)``, C-contiguous, one dtype -> ``(loss, grad)``
    with ``loss`` a 0-d device array ``sum((pred - target)^2) / (2 N)`` and ``grad``
    ``(pred - target) / N`` of ``pred``'s shape: :class:`tinysr.nn.layers.MSELoss`'s numbers. The
    partial sums' count depends only on the size, so repeated calls give identical bits.
    """
    cp = _cupy()
    sfx = _check_device_array(pred, "pred")
    _check_same(pred, "pred", (target, "target"))
    if pred.shape != target.shape:
        raise ValueError(f"mse_loss_grad: prediction {pred.shape} and target {target.shape} differ in shape")
    if pred.ndim < 1 or pred.shape[0] < 1:
        raise ValueError(f"mse_loss_grad needs a batch (N, ...) with N >= 1, got shape {pred.shape}")
    n = pred.shape[0]
    scalar = pred.dtype.type
    blocks = max(1, min(-(-pred.size // _EW_RED_THREADS), _MSE_MAX_BLOCKS))
    with pred.device:
        grad = cp.empty_like(pred)
        loss = cp.empty((1,), dtype=pred.dtype)
        partials = cp.empty((blocks,), dtype=pred.dtype)
    _launch("elementwise.cu", f"mse_partial_{sfx}", pred.device, (blocks, 1, 1), (_EW_RED_THREADS, 1, 1),
            (pred, target, grad, partials, np.int64(pred.size), scalar(n)))
    _launch("elementwise.cu", f"mse_finalize_{sfx}", pred.device, (1, 1, 1), (_EW_RED_THREADS, 1, 1),
            (partials, np.int32(blocks), loss, scalar(2 * n)))
    return loss.reshape(()), grad


_LAYOUTS = {"nkp": 0, "knp": 1}  # col2im.cu's kn flag


def _cols_shape(layout: str, n: int, rows: int, p: int) -> tuple:
    if layout not in _LAYOUTS:
        raise ValueError(f"unknown cols layout {layout!r}: choose 'nkp' (N, C*kh*kw, P) or 'knp' (C*kh*kw, N, P)")
    return (n, rows, p) if layout == "nkp" else (rows, n, p)


def _launch_fold(entry: str, sfx: str, src, dst, dims, layout: str) -> None:
    """Launch ``col2im.cu``'s ``entry`` (``"im2col"`` or ``"col2im"``) from ``src`` into ``dst``,
    one thread per element written, with 32-bit indices where the sizes allow.
    ``dims``: ``(N, C, Hp, Wp, kh, kw, Ho, Wo)``."""
    blocks = _grid_stride_blocks(dst.size, _EW_THREADS)
    width = _index_width(max(src.size, dst.size), blocks, _EW_THREADS)
    total = np.int32(dst.size) if not width else np.int64(dst.size)
    args = (src, dst, *(np.int32(d) for d in dims), np.int32(_LAYOUTS[layout]), total)
    _launch("col2im.cu", f"{entry}{width}_{sfx}", src.device, (blocks, 1, 1), (_EW_THREADS, 1, 1), args)


def im2col_gpu(xpad, kh: int, kw: int, out=None, layout: str = "nkp"):
    """Unfold ``xpad`` ``(N, C, Hp, Wp)`` into ``cols``, into ``out`` (C-contiguous, that shape and
    dtype, on the same device; returned) where given.

    ``layout="nkp"``: ``(N, C*kh*kw, Ho*Wo)``, :func:`tinysr.ops.primitives_cpu.im2col`'s layout. ``"knp"``:
    ``(C*kh*kw, N, Ho*Wo)``, the same values with the rows outermost, so that
    ``cols.reshape(C*kh*kw, N*Ho*Wo)`` is one 2-D GEMM operand for the whole batch.
    """
    cp = _cupy()
    sfx = _check_device_array(xpad, "xpad")
    if xpad.ndim != 4:
        raise ValueError(f"im2col_gpu needs a 4-D (N, C, Hp, Wp) input, got shape {xpad.shape}")
    n, c, hp, wp = xpad.shape
    kh, kw = int(kh), int(kw)
    ho, wo = hp - kh + 1, wp - kw + 1
    if kh < 1 or kw < 1 or ho < 1 or wo < 1:
        raise ValueError(f"im2col_gpu: kernel {kh}x{kw} does not fit the padded input {hp}x{wp}")
    shape = _cols_shape(layout, n, c * kh * kw, ho * wo)
    _check_int32(rows=c * kh * kw, input_plane=hp * wp, output_plane=ho * wo, batch=n, channels=c)
    if out is None:
        with xpad.device:
            cols = cp.empty(shape, dtype=xpad.dtype)
    else:
        _check_same(xpad, "xpad", (out, "out"))
        if out.shape != shape:
            raise ValueError(f"im2col_gpu: out must have shape {shape}, got {out.shape}")
        cols = out
    if cols.size == 0:
        return cols
    _launch_fold("im2col", sfx, xpad, cols, (n, c, hp, wp, kh, kw, ho, wo), layout)
    return cols


def col2im_gpu(cols, shape, kh: int, kw: int, layout: str = "nkp"):
    """Fold ``cols`` back to ``shape = (N, C, Hp, Wp)`` (adjoint of im2col).

    ``cols`` is ``(N, C*kh*kw, Ho*Wo)`` for ``layout="nkp"``, ``(C*kh*kw, N, Ho*Wo)`` for
    ``"knp"`` (see :func:`im2col_gpu`). Each output pixel gathers its own taps in the order ``i``
    then ``j`` (no atomics), the order of :func:`tinysr.ops.primitives_cpu.col2im`, so it matches the CPU fold
    bit for bit.
    """
    cp = _cupy()
    sfx = _check_device_array(cols, "cols")
    n, c, hp, wp = (int(s) for s in shape)
    kh, kw = int(kh), int(kw)
    ho, wo = hp - kh + 1, wp - kw + 1
    if kh < 1 or kw < 1 or ho < 1 or wo < 1:
        raise ValueError(f"col2im_gpu: kernel {kh}x{kw} does not fit the padded shape {hp}x{wp}")
    want = _cols_shape(layout, n, c * kh * kw, ho * wo)
    if cols.shape != want:
        raise ValueError(f"col2im_gpu: cols must be {want} for shape {tuple(shape)} "
                         f"and kernel {kh}x{kw}, got {cols.shape}")
    _check_int32(rows=c * kh * kw, input_plane=hp * wp, output_plane=ho * wo, batch=n, channels=c)
    with cols.device:
        out = cp.empty((n, c, hp, wp), dtype=cols.dtype)
    if out.size == 0:
        return out
    _launch_fold("col2im", sfx, cols, out, (n, c, hp, wp, kh, kw, ho, wo), layout)
    return out


# --------------------------------------------------------------------------- fused inference

def fused_supports(w1_shape, w2_shape, w3_shape) -> bool:
    """Whether :func:`fused_predict` runs a network with these weight shapes: ``(n1, 1, f1, f1)``
    with odd ``f1 <= 11``, a 1x1 middle layer ``(n2, n1, 1, 1)`` with ``n2 <= 32`` and
    ``(1, n2, f3, f3)`` with odd ``f3``, ``f3 * f3 <= 25`` (9-1-5, 9-1-3, 5-1-5, ...)."""
    n1, c1, f1, f1b = w1_shape
    n2, c2, k2, k2b = w2_shape
    o3, c3, f3, f3b = w3_shape
    return (c1 == 1 and f1 == f1b and f1 % 2 == 1 and f1 <= _FUSED_KMAX and c2 == n1 and (k2, k2b) == (1, 1)
            and 1 <= n2 <= _FUSED_N2MAX and o3 == 1 and c3 == n2 and f3 == f3b and f3 % 2 == 1
            and f3 * f3 <= _FUSED_ZMAX)


def fused_bytes_per_pixel(f3: int, itemsize: int) -> int:
    """Device bytes per image pixel that :func:`fused_predict` holds: the input, the ``f3*f3``
    planes of layer 3's products and the output."""
    return (f3 * f3 + 2) * itemsize


def fused_fits_int32(h: int, w: int, f3: int) -> bool:
    """Whether an ``h x w`` image's ``f3*f3`` product planes fit the fused kernels' 32-bit index."""
    return f3 * f3 * h * w <= _INT32_MAX


def fused_predict(y, w1, b1, w2, b2, w3, b3):
    """A 1x1-middle SRCNN (:func:`fused_supports`) on one Y image, replicate padding at every layer.

    ``y`` ``(H, W)`` on [0, 1] and the six parameters (``w1`` ``(n1, 1, f1, f1)``, ``b1``
    ``(n1,)``, ``w2`` ``(n2, n1, 1, 1)``, ``b2`` ``(n2,)``, ``w3`` ``(1, n2, f3, f3)``, ``b3``
    ``(1,)``): C-contiguous CuPy arrays of one float dtype -> ``(H, W)`` of that dtype, unclipped:
    :meth:`tinysr.nn.model.SRCNN.forward` with ``padding="replicate"`` to float rounding. Layers 1
    and 2 and layer 3's per-pixel products run in one launch that keeps the activations in
    registers, writing ``f3*f3`` planes; a second launch adds their shifted taps (the edge
    padding is clamped indexing in both: no padded copy).
    """
    cp = _cupy()
    sfx = _check_device_array(y, "y")
    names = tuple(f"layer {i} {kind}" for i in (1, 2, 3) for kind in ("weight", "bias"))
    params = (w1, b1, w2, b2, w3, b3)
    _check_same(y, "y", *zip(params, names))
    if y.ndim != 2:
        raise ValueError(f"fused_predict needs an (H, W) image, got shape {y.shape}")
    if not fused_supports(w1.shape, w2.shape, w3.shape):
        raise ValueError(f"fused_predict runs f1 <= {_FUSED_KMAX}, a 1x1 middle layer, n2 <= {_FUSED_N2MAX} and "
                         f"f3*f3 <= {_FUSED_ZMAX}; got weights {w1.shape}, {w2.shape}, {w3.shape}")
    n1, n2, f1, f3 = w1.shape[0], w2.shape[0], w1.shape[2], w3.shape[2]
    if b1.shape != (n1,) or b2.shape != (n2,) or b3.shape != (1,):
        raise ValueError(f"fused_predict: biases {b1.shape}, {b2.shape}, {b3.shape} do not match the weights")
    h, w = y.shape
    if not fused_fits_int32(h, w, f3):
        raise ValueError(f"fused_predict: a {h}x{w} image's {f3 * f3} product planes exceed the 32-bit index; "
                         "run it in tiles")
    if -(-h // _FUSED_TILE) > _MAX_GRID_YZ:
        raise ValueError(f"fused_predict: image height {h} needs more than {_MAX_GRID_YZ} row tiles")
    with y.device:
        out = cp.empty((h, w), dtype=y.dtype)
        if out.size == 0:
            return out
        z = cp.empty((f3 * f3, h, w), dtype=y.dtype)
    grid = (-(-w // _FUSED_TILE), -(-h // _FUSED_TILE), 1)
    _launch("fused.cu", f"fused_z_{sfx}", y.device, grid, (_FUSED_TILE, _FUSED_TILE, 1),
            (y, w1, b1, w2, b2, w3, z, np.int32(h), np.int32(w), np.int32(n1), np.int32(n2), np.int32(f1),
             np.int32(f3)))
    _tap_sum_launch(z, b3, out, (1, 1, f3, f3, h, w), "replicate", False, sfx)
    return out


def _tap_sum_launch(z, b, y, geometry, padding: str, relu: bool, sfx: str) -> None:
    n, o, kh, kw, h, w = geometry
    ho, wo = y.shape[-2:]
    top, _, left, _ = pad_amounts(kh, kw, padding)
    blocks = _grid_stride_blocks(y.size, _EW_THREADS)
    if _index_width(max(z.size, y.size), blocks, _EW_THREADS):
        raise ValueError(f"output-side tap sum: {z.size} products exceed the kernel's 32-bit index; use tiles")
    _launch("fused.cu", f"tap_sum_{sfx}", y.device, (blocks, 1, 1), (_EW_THREADS, 1, 1),
            (z, b, y, np.int32(n), np.int32(o), np.int32(h), np.int32(w), np.int32(kh), np.int32(kw),
             np.int32(ho), np.int32(wo), np.int32(top), np.int32(left), np.int32(_PADDING_MODE[padding]),
             np.int32(1 if relu else 0)))


def tap_sum(z, b, kh: int, kw: int, padding: str = "valid", relu: bool = False, out=None):
    """The output side of a stride-1 correlation: ``z`` ``(N, O*kh*kw, H, W)`` (or any shape of that
    size and layout), each UNPADDED input pixel's products with every tap, row ``o*kh*kw + i*kw + j``
    holding ``sum_c W[o, c, i, j] x[n, c]`` -> ``y`` ``(N, O, Ho, Wo)`` with
    ``y[n,o,r,s] = act(sum_{i,j} zpad[n, o*kh*kw + i*kw + j, r+i, s+j] + b[o])`` (taps ``i``-major)
    and ``zpad`` ``z`` padded under ``padding`` (``valid``/``zero``/``replicate``, amounts from
    :func:`tinysr.ops.shapes.pad_amounts`; replicate is clamped indexing, no padded copy), ``act`` the
    ReLU when ``relu``. ``z``, ``b`` ``(O,)``: C-contiguous, one dtype; ``z`` and ``y`` below 2^31
    elements. ``out`` (C-contiguous, ``(N, O, Ho, Wo)``, same dtype) receives ``y`` where given.
    """
    cp = _cupy()
    sfx = _check_device_array(z, "z")
    _check_same(z, "z", (b, "bias b"))
    check_padding(padding)
    if z.ndim != 4:
        raise ValueError(f"tap_sum needs z (N, O*kh*kw, H, W), got shape {z.shape}")
    n, rows, h, w = z.shape
    kh, kw = int(kh), int(kw)
    o = b.shape[0] if b.ndim == 1 else -1
    if kh < 1 or kw < 1 or o * kh * kw != rows:
        raise ValueError(f"tap_sum: z has {rows} rows, bias {b.shape} and kernel {kh}x{kw} need O*kh*kw")
    ho, wo = conv_output_hw(h, w, kh, kw, padding)
    if out is None:
        with z.device:
            out = cp.empty((n, o, ho, wo), dtype=z.dtype)
    else:
        _check_same(z, "z", (out, "out"))
        if out.shape != (n, o, ho, wo):
            raise ValueError(f"tap_sum: out must have shape {(n, o, ho, wo)}, got {out.shape}")
    if out.size:
        _tap_sum_launch(z, b, out, (n, o, kh, kw, h, w), padding, relu, sfx)
    return out
