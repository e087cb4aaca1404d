"""A CPU stand-in for the slice of CuPy that tinysr uses, so its GPU code runs in CI without a GPU.

What is real and what is not:

- The CUDA kernels are REAL: ``RawModule`` compiles the unmodified ``kernels/*.cu`` text with
  g++ (C++20) and ``tests/cuda_emulator.h``, which maps blocks, threads, ``__shared__`` and
  ``__syncthreads()`` onto OS threads and a barrier. A launch runs every block of the grid the
  wrapper asked for, so launch geometry, grid-stride loops, shared-memory tiling and the
  barrier-separated reductions are all exercised.
- Arrays are NumPy arrays of a subclass whose type reports the module ``cupy`` (what
  :func:`tinysr.ops.backend.is_device_array` checks), on one pretend device, ``Device(0)``.
  Everything else (matmul, pad, ufuncs, reductions) is NumPy.
- Stricter than a GPU in ways that find bugs: ``empty``/``empty_like`` fill floats with NaN
  (an output element a kernel forgets to write shows up); arrays made by ``empty``, ``zeros``,
  ``asarray``... sit between two guard zones of NaN, so an out-of-bounds read yields NaN and an
  out-of-bounds write fails the launch with ``RuntimeError``; a kernel argument must be a
  C-contiguous array of exactly the parameter's element type or a NumPy scalar of exactly its
  type (``np.int32`` for ``int``, ``np.int64`` for ``long long``, ...), where CuPy would pass
  anything; mixing a host (plain NumPy) array into a device operation raises ``TypeError``
  like CuPy does.
- ``Device.mem_info`` reports :data:`MEM_INFO` (16 GiB free by default), which a test may set to
  fake a small GPU (the inference tile policy reads it).
- It counts what matters for the "no host-device synchronisation" rule: :data:`STATS`
  ``["launches"]`` lists the kernels launched and ``STATS["syncs"]`` counts device-to-host
  reads (``get``, ``float``, ``int``, ``bool``, ``item``, ``tolist``, ``asnumpy``).

Not emulated: timing, streams, warps, atomics, several devices, and the NVRTC compiler itself
(``tests/test_cuda_compile.py`` runs nvcc over the same sources where it exists).

Use :func:`install` (a pytest fixture does, through ``monkeypatch``) to make ``import cupy``
return this module.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
import weakref
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("cuda_emulator.h")
__version__ = "0.0-cpu-emulator"

STATS = {"launches": [], "syncs": 0}

# (free, total) bytes that Device.mem_info reports; a test may set it to fake a small GPU.
MEM_INFO = [16 << 30, 16 << 30]


def reset_stats() -> None:
    STATS["launches"].clear()
    STATS["syncs"] = 0


def compiler():
    """The g++ this emulator builds kernels with, or None."""
    return shutil.which("g++")


def unavailable_reason() -> str | None:
    """Why the emulator cannot run here (a skip reason), or None when it can."""
    if compiler() is None or platform.machine() not in ("x86_64", "AMD64"):
        return "the CUDA CPU emulator needs g++ on an x86-64 machine"
    return None


def clear_kernel_caches() -> None:
    """Forget tinysr.ops.cuda_kernels' compiled modules (cached per source and device id), so neither
    real CuPy nor the emulator is handed the other's kernels, or a test's edited source leaks."""
    from tinysr.ops import cuda_kernels  # noqa: PLC0415

    cuda_kernels._function.cache_clear()
    cuda_kernels._module.cache_clear()


# ------------------------------------------------------------------------------------- devices

class Device:
    """The one pretend GPU, id 0; a context manager like ``cupy.cuda.Device``."""

    def __init__(self, device_id: int = 0):
        if int(device_id) != 0:
            raise ValueError(f"the CPU emulator has one device (0), not {device_id}")
        self.id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return self

    @property
    def mem_info(self):
        """``(free, total)`` bytes, as ``cupy.cuda.Device.mem_info``: :data:`MEM_INFO`."""
        return tuple(MEM_INFO)

    def synchronize(self):
        return None


class _Stream:
    def synchronize(self):
        return None


class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802  (CuPy's name)
        return 1


# -------------------------------------------------------------------------------------- arrays

def _host_array(a) -> bool:
    return isinstance(a, np.ndarray) and not isinstance(a, ndarray) and a.ndim > 0


def _check_no_host(args) -> None:
    for a in args:
        if isinstance(a, (list, tuple)):
            _check_no_host(a)
        elif _host_array(a):
            raise TypeError("Unsupported type <class 'numpy.ndarray'>: a host (NumPy) array was mixed "
                            "into a device (CuPy) operation; move it with to_device first")


def _unwrap(a):
    if isinstance(a, ndarray):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_unwrap(x) for x in a)
    return a


def _call_on_device(f, args, kwargs):
    """``f`` (a NumPy function) on device arguments: host arrays refused, results made device arrays."""
    _check_no_host(args)
    _check_no_host(tuple(kwargs.values()))
    return _wrap(f(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))


def _wrap(r):
    """Device arrays for array results; 0-d device arrays for scalars, as CuPy's reductions give."""
    if isinstance(r, np.ndarray):
        return r.view(ndarray)
    if isinstance(r, np.generic):
        return np.asarray(r).view(ndarray)
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    if isinstance(r, list):
        return [_wrap(x) for x in r]
    return r


class ndarray(np.ndarray):  # noqa: N801  (CuPy's name)
    """A "device" array: NumPy memory, CuPy's type module, host reads counted as syncs."""

    @property
    def device(self):
        return Device(0)

    def get(self, stream=None):
        STATS["syncs"] += 1
        return np.array(self.view(np.ndarray), copy=True)

    def set(self, arr, stream=None):
        """Copy a host array of the same shape and dtype in (``cupy.ndarray.set``)."""
        arr = np.asarray(arr)
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: host array {arr.shape} {arr.dtype} does not match {self.shape} {self.dtype}")
        self.view(np.ndarray)[...] = arr

    def __float__(self):
        STATS["syncs"] += 1
        return float(self.view(np.ndarray))

    def __int__(self):
        STATS["syncs"] += 1
        return int(self.view(np.ndarray))

    def __bool__(self):
        STATS["syncs"] += 1
        return bool(self.view(np.ndarray))

    def item(self, *args):
        STATS["syncs"] += 1
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        STATS["syncs"] += 1
        return self.view(np.ndarray).tolist()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _call_on_device(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        return _call_on_device(func, args, kwargs)


ndarray.__module__ = "cupy"


def _poison(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        a.fill(np.nan)
    elif a.dtype.kind in "iu":
        a.fill(np.iinfo(a.dtype).max)
    return a


# Guard zones: arrays made here (empty, zeros, asarray, ...) sit in the middle of a larger
# buffer whose GUARD elements on each side hold the poison value. A kernel reading past its
# array reads poison (NaN for floats); one writing past it changes the guard, which every
# launch checks for each guarded argument afterwards. _GUARDED maps the address of an array's
# first element to (weak reference to the whole buffer, element count).
GUARD = 256
_GUARDED: dict[int, tuple] = {}


def _guarded(shape, dtype, fill=None) -> "ndarray":
    dtype = np.dtype(dtype)
    shape = tuple(int(v) for v in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    n = int(np.prod(shape, dtype=np.int64))
    whole = _poison(np.empty(n + 2 * GUARD, dtype=dtype))
    body = whole[GUARD:GUARD + n].reshape(shape)
    if fill is not None:
        body[...] = fill
    out = body.view(ndarray)
    _GUARDED[out.ctypes.data] = (weakref.ref(whole), n)
    return out


def _guard_intact(a: np.ndarray) -> bool | None:
    """None when ``a`` is not a live guarded array; else whether both guard zones are untouched."""
    entry = _GUARDED.get(a.ctypes.data)
    if entry is None:
        return None
    whole = entry[0]()
    if whole is None or entry[1] != a.size or whole.ctypes.data + GUARD * whole.itemsize != a.ctypes.data:
        _GUARDED.pop(a.ctypes.data, None)  # freed, and the address reused
        return None
    zones = np.concatenate([whole[:GUARD], whole[-GUARD:]])
    return bool(np.all(_poison(np.empty_like(zones)).view(np.uint8) == zones.view(np.uint8)))


def empty(shape, dtype=np.float64, order="C"):
    return _guarded(shape, dtype)


def empty_like(a, dtype=None):
    return _guarded(a.shape, a.dtype if dtype is None else dtype)


def zeros(shape, dtype=np.float64, order="C"):
    return _guarded(shape, dtype, fill=0)


def zeros_like(a, dtype=None):
    return _guarded(a.shape, a.dtype if dtype is None else dtype, fill=0)


def asarray(a, dtype=None, order=None):
    """Host data is copied to the "device" (as ``cupy.asarray``); device data is returned as is."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    host = np.asarray(a, dtype=dtype)
    return _guarded(host.shape, host.dtype, fill=host)


def array(a, dtype=None, copy=True, order="K"):
    host = np.asarray(_unwrap(a), dtype=dtype)
    return _guarded(host.shape, host.dtype, fill=host)


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def __getattr__(name):
    """Any other NumPy name: dtypes as they are, functions wrapped to give device arrays."""
    attr = getattr(np, name)
    if isinstance(attr, type) or not callable(attr):
        return attr

    @functools.wraps(attr)
    def device_function(*args, **kwargs):
        return _call_on_device(attr, args, kwargs)

    return device_function


# ------------------------------------------------------------------------------- raw kernels

_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
                    r'(\w+)\s*\(([^)]*)\)')

# C parameter type (restrict removed, spaces normalised) -> the NumPy type its argument must have.
_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64,
            "unsigned int": np.uint32}


def _parse_params(text: str):
    """``[(c_type, numpy_type, is_pointer, name)]`` of one kernel's parameter list."""
    out = []
    for raw in text.split(","):
        decl = " ".join(raw.replace("__restrict__", " ").replace("*", " * ").split())
        ctype, name = decl.rsplit(" ", 1)
        is_ptr = ctype.endswith("*")
        base = ctype.replace("const", "").replace("*", "").strip()
        base = " ".join(base.split())
        if base not in _SCALARS:
            raise NotImplementedError(f"the CPU emulator cannot pass a {ctype!r} parameter ({name})")
        out.append((ctype.replace(" *", "*"), _SCALARS[base], is_ptr, name))
    return out


def _trampolines(entries) -> str:
    lines = []
    for name, params in entries.items():
        call = ", ".join(f"*reinterpret_cast<{c}*>(args[{i}])" for i, (c, _, _, _) in enumerate(params))
        lines.append(
            f'extern "C" void cuda_emu_launch_{name}(unsigned gx, unsigned gy, unsigned gz, '
            f"unsigned bx, unsigned by, unsigned bz, void** args)\n"
            f"{{ cuda_emu::launch(dim3{{gx, gy, gz}}, dim3{{bx, by, bz}}, [args] {{ {name}({call}); }}); }}")
    return "\n".join(lines) + "\n"


_BUILD_LOCK = threading.Lock()
_BUILD_DIR = None


@functools.lru_cache(maxsize=None)
def _build(code: str) -> tuple:
    """Compile ``code`` once per process; ``(ctypes library, {entry: params})``."""
    global _BUILD_DIR
    gxx = compiler()
    if gxx is None:
        raise RuntimeError("the CUDA CPU emulator needs g++ on PATH")
    entries = {m.group(1): _parse_params(m.group(2)) for m in _ENTRY.finditer(code)}
    if not entries:
        raise RuntimeError('no extern "C" __global__ kernels found in the source')
    with _BUILD_LOCK:
        if _BUILD_DIR is None:
            _BUILD_DIR = Path(tempfile.mkdtemp(prefix="tinysr-cuda-emu-"))
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        src, lib = _BUILD_DIR / f"{digest}.cpp", _BUILD_DIR / f"{digest}.so"
        src.write_text(code + "\n" + _trampolines(entries), encoding="utf-8")
        cmd = [gxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-pthread", "-Wall", "-Wno-unknown-pragmas",
               "-Werror", "-fno-strict-aliasing", "-include", str(HEADER), "-o", str(lib), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise CompileException(proc.stderr)
    return ctypes.CDLL(str(lib)), entries


class CompileException(RuntimeError):
    """The kernel source did not compile (g++'s messages attached)."""


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: compiled with g++ against the emulator header.
    NVRTC's ``options`` do not apply to g++ and are ignored (g++ always gets ``-std=c++17``)."""

    def __init__(self, code: str, options=(), **_ignored):
        self._lib, self._entries = _build(code)

    def get_function(self, name: str):
        if name not in self._entries:
            raise AttributeError(f"kernel {name!r} is not in the module (has {sorted(self._entries)})")
        fn = getattr(self._lib, f"cuda_emu_launch_{name}")
        fn.restype = None
        fn.argtypes = [ctypes.c_uint] * 6 + [ctypes.POINTER(ctypes.c_void_p)]
        return RawFunction(name, self._entries[name], fn)


def _dims(d, what: str) -> tuple:
    d = tuple(int(v) for v in (d if isinstance(d, tuple) else (d,)))
    d = d + (1,) * (3 - len(d))
    if len(d) != 3 or min(d) < 1:
        raise ValueError(f"{what} must be 1 to 3 positive ints, got {d}")
    return d


class RawFunction:
    """One kernel; ``f(grid, block, args)`` checks every argument's type, then runs the launch."""

    def __init__(self, name, params, fn):
        self.name, self.params, self._fn = name, params, fn

    def __call__(self, grid, block, args, **_ignored):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if block[0] * block[1] * block[2] > 1024:
            raise ValueError(f"{self.name}: {block} is more than 1024 threads per block")
        if max(grid[1], grid[2]) > 65535 or grid[0] > 2**31 - 1:
            raise ValueError(f"{self.name}: grid {grid} exceeds CUDA's limits")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        keep = []  # ctypes objects whose addresses go into the argument array
        for a, (ctype, want, is_ptr, pname) in zip(args, self.params):
            if is_ptr:
                if not isinstance(a, ndarray):
                    raise TypeError(f"{self.name}: {pname} ({ctype}) needs a device array, got {type(a).__name__}")
                if a.dtype != want:
                    raise TypeError(f"{self.name}: {pname} ({ctype}) got a {a.dtype} array")
                if not a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: {pname} is not C-contiguous")
                keep.append(ctypes.c_void_p(a.ctypes.data))
            else:
                if type(a) is not want:
                    raise TypeError(f"{self.name}: {pname} ({ctype}) needs numpy.{want.__name__}, "
                                    f"got {type(a).__name__}")
                keep.append(np.ctypeslib.as_ctypes_type(want)(a))
        ptrs = (ctypes.c_void_p * len(keep))(*(ctypes.addressof(k) for k in keep))
        STATS["launches"].append(self.name)
        self._fn(*grid, *block, ptrs)
        for a, (_, _, is_ptr, pname) in zip(args, self.params):
            if is_ptr and _guard_intact(a) is False:
                raise RuntimeError(f"{self.name} wrote outside its argument {pname} (guard zone changed)")


# ------------------------------------------------------------------------------------ install

cuda = types.SimpleNamespace(Device=Device, runtime=_Runtime(), get_current_stream=lambda: _Stream(),
                             Stream=_Stream)


def install(monkeypatch) -> types.ModuleType:
    """Make ``import cupy`` give this module for the rest of a test (pytest ``monkeypatch``)."""
    module = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(module, "MEM_INFO", list(MEM_INFO))
    reset_stats()
    return module
