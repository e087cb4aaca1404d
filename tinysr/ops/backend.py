"""The one place that chooses between NumPy (CPU) and CuPy (GPU).

Rules kept everywhere in tinysr:

- CuPy is imported lazily and guarded: importing tinysr never needs CuPy or a GPU, and
  nothing is compiled at import time.
- There is no global "current device": the array module is taken from the arrays
  themselves (:func:`get_array_module`) or chosen once by name (:func:`resolve_backend`).
- Host/device transfers are explicit: :func:`to_device` and :func:`to_numpy`. Layers never
  move data between host and device on their own; mixing the two raises.
- A CuPy that imports is not yet a CuPy that works: the first time the ``cupy`` backend is
  resolved on a device, :func:`resolve_backend` compiles and loads a tiny kernel through NVRTC,
  runs one CuPy elementwise kernel (CUDA headers) and one ``matmul`` (cuBLAS), once per process
  and device. Any missing piece (driver, GPU, NVRTC, headers, cuBLAS) becomes one
  :class:`BackendError` line that names the fix, e.g. ``pip install "tinysr[cuda12]"``.
"""

from __future__ import annotations

import importlib
import sys
import threading

import numpy as np

BACKENDS = ("numpy", "cupy", "auto")


class BackendError(RuntimeError):
    """The requested backend cannot run here; the message names what is missing."""


# The probe kernel: no #include, like kernels/*.cu, compiled with the options cuda_kernels uses.
_PROBE_SOURCE = r'''
extern "C" __global__ void tinysr_probe(float* x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = 2.0f * x[i] + 1.0f;
}
'''
_PROBE_OPTIONS = ("-std=c++17",)
_PROBE_LOCK = threading.Lock()
# (id(cupy module), device id) -> (module, None when usable or the one-line error message)
_PROBE_CACHE: dict[tuple[int, int], tuple[object, str | None]] = {}


def _first_line(exc: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, at most ``limit`` characters, for one-line errors."""
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else ""
    # NVRTC logs put the useful line after the file name; keep the error itself.
    for candidate in text:
        if "error" in candidate.lower():
            line = candidate.strip()
            break
    out = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _cuda_major(cupy) -> int | None:
    """The CUDA major version this CuPy was built for (12, 13, ...), or None when unknown."""
    try:
        version = int(cupy.cuda.runtime.runtimeGetVersion())
        if version > 0:
            return version // 1000
    except Exception:  # noqa: BLE001  (a stand-in without it, or a broken runtime)
        pass
    try:
        from importlib import metadata  # noqa: PLC0415

        for major in (13, 12, 11):
            try:
                metadata.distribution(f"cupy-cuda{major}x")
            except metadata.PackageNotFoundError:
                continue
            return major
    except Exception:  # noqa: BLE001
        pass
    return None


def _driver_major(cupy) -> int | None:
    """The CUDA major version the installed NVIDIA driver supports; 0 when there is no driver."""
    try:
        return int(cupy.cuda.runtime.driverGetVersion()) // 1000
    except Exception:  # noqa: BLE001
        return None


def _install_fix(cupy) -> str:
    major = _cuda_major(cupy)
    if major in (12, 13):
        return f'pip install "tinysr[cuda{major}]"'
    return 'pip install "tinysr[cuda12]" (or "tinysr[cuda13]", matching your CuPy)'


def _describe_failure(cupy, exc: BaseException, step: str) -> str:
    """One line naming what is missing and the fix, for ``exc`` raised by probe ``step``."""
    detail = _first_line(exc)
    text = f"{type(exc).__name__} {exc}".lower()
    fix = _install_fix(cupy)
    built = _cuda_major(cupy)
    built_for = f"CUDA {built}" if built else "its CUDA version"
    if "cudaerrornodevice" in text or "no cuda-capable device" in text:
        return (f"the cupy backend needs an NVIDIA GPU and none is visible ({detail}); "
                "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --backend numpy")
    if "insufficientdriver" in text or "driver version is insufficient" in text or "cudaerrornodriver" in text:
        driver = _driver_major(cupy)
        if not driver:
            return (f"the cupy backend needs the NVIDIA driver and none is installed ({detail}); "
                    "install the NVIDIA driver, or use --backend numpy")
        if driver in (12, 13) and built and driver < built:
            return (f"the NVIDIA driver supports CUDA {driver} but CuPy was built for CUDA {built} ({detail}); "
                    f'pip uninstall cupy-cuda{built}x && pip install "tinysr[cuda{driver}]", or update the driver')
        return f"the NVIDIA driver is too old for CuPy's {built_for} ({detail}); update the NVIDIA driver"
    if "nvrtc" in text and ("load" in text or "find" in text or "no such file" in text or "cannot open shared" in text):
        return f"CuPy cannot load NVRTC, the CUDA run-time compiler ({detail}); {fix}"
    if ("cuda headers" in text or "cuda_fp16.h" in text or "cuda_runtime.h" in text
            or "cannot open source file" in text or "cuda_path" in text):
        return f"CuPy cannot find the CUDA headers its kernels compile against ({detail}); {fix}"
    if "cublas" in text:
        return f"CuPy cannot load cuBLAS ({detail}); {fix}"
    if ("gpu-architecture" in text or "no_binary_for_gpu" in text or "no kernel image" in text
            or "unsupported_ptx_version" in text or "unsupported toolchain" in text):
        return (f"CuPy's {built_for} cannot build kernels for this GPU and driver ({detail}); "
                "update the NVIDIA driver, or install the CuPy of its CUDA: "
                'pip install "tinysr[cuda13]" (or "tinysr[cuda12]")')
    return f"CuPy is installed but cannot {step} ({detail}); {fix}"


def _probe(cupy, device_id: int) -> str | None:
    """Run the probe on ``device_id``; None when CuPy works there, else the one-line reason."""
    step = "select the GPU"
    try:
        with cupy.cuda.Device(device_id):
            nvrtc = getattr(cupy.cuda, "nvrtc", None)
            if nvrtc is not None and hasattr(nvrtc, "getVersion"):
                step = "load NVRTC"
                nvrtc.getVersion()
            step = "compile a kernel through NVRTC"
            cupy.RawModule(code=_PROBE_SOURCE, options=_PROBE_OPTIONS).get_function("tinysr_probe")
            step = "run its own elementwise kernels"
            x = cupy.ones((2, 2), dtype=np.float32) * np.float32(2.0) + np.float32(1.0)
            step = "run a matmul through cuBLAS"
            y = x @ x
            step = "finish work on the GPU"
            cupy.cuda.Device(device_id).synchronize()
            del x, y
    except Exception as exc:  # noqa: BLE001  (every failure becomes one line)
        return _describe_failure(cupy, exc, step)
    return None


def _current_device(cupy) -> int:
    try:
        return int(cupy.cuda.Device().id)
    except Exception as exc:  # noqa: BLE001
        raise BackendError(_describe_failure(cupy, exc, "select the GPU")) from None


def _check_cupy_works(cupy) -> None:
    """Probe the current device once per process (cached, failures too); BackendError on failure."""
    device_id = _current_device(cupy)
    key = (id(cupy), device_id)
    hit = _PROBE_CACHE.get(key)  # the common case, lock-free: kernel wrappers resolve on every call
    if hit is None or hit[0] is not cupy:
        with _PROBE_LOCK:
            hit = _PROBE_CACHE.get(key)
            if hit is None or hit[0] is not cupy:
                hit = (cupy, _probe(cupy, device_id))
                _PROBE_CACHE[key] = hit
    if hit[1] is not None:
        raise BackendError(hit[1])


def _import_cupy():
    """Return the ``cupy`` module or raise :class:`BackendError` saying why it is unusable.

    Checks that CuPy imports and sees a device; :func:`_check_cupy_works` then probes it.
    """
    try:
        import cupy  # noqa: PLC0415  (guarded, optional import)
    except ImportError as exc:
        raise BackendError(
            'the cupy backend needs the CuPy package: pip install "tinysr[cuda12]" '
            f'(or "tinysr[cuda13]" for a CUDA 13 driver) ({_first_line(exc)})'
        ) from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when the driver is absent or too old
        raise BackendError(_describe_failure(cupy, exc, "use the CUDA driver")) from None
    if n < 1:
        raise BackendError("CuPy is installed but no CUDA device is visible; check nvidia-smi and "
                           "CUDA_VISIBLE_DEVICES, or use --backend numpy")
    return cupy


def _usable_cupy():
    cupy = _import_cupy()
    _check_cupy_works(cupy)
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports, sees a CUDA device and passes the probe (kernel, cuBLAS)."""
    try:
        _usable_cupy()
    except BackendError:
        return False
    return True


def resolve_backend(name: str):
    """Return the array module for ``name`` in ``{"numpy", "cupy", "auto"}``.

    ``auto`` takes CuPy only when it imports, a GPU is visible and the probe passes, NumPy
    otherwise. ``cupy`` where it cannot run raises :class:`BackendError`: one line naming the
    missing piece and the fix. The probe runs once per process and device.
    """
    if name == "numpy":
        return np
    if name == "cupy":
        return _usable_cupy()
    if name == "auto":
        try:
            return _usable_cupy()
        except BackendError:
            return np
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def auto_choice() -> tuple[object, str]:
    """``resolve_backend("auto")`` and one line saying what it chose and why, for a command to
    print: ``"--backend auto: cupy on GPU 0"`` or ``"--backend auto: numpy, CuPy cannot run here (<why>)"``."""
    try:
        cupy = _usable_cupy()
    except BackendError as exc:
        return np, f"--backend auto: numpy, CuPy cannot run here ({exc})"
    return cupy, f"--backend auto: cupy on GPU {_current_device(cupy)}"


# The devices: an array type's top-level module -> the primitives module of that device
# (:class:`tinysr.ops.primitives.Primitives`). Host data of any other type counts as NumPy's.
# A new device is one primitives module and one line here.
DEVICES = {
    "numpy": "tinysr.ops.primitives_cpu",
    "cupy": "tinysr.ops.primitives_gpu",
}


def array_device(a) -> str:
    """The :data:`DEVICES` key that owns array ``a``: ``"cupy"`` for a CuPy array, ``"numpy"`` for host data."""
    root = type(a).__module__.partition(".")[0]
    return root if root in DEVICES else "numpy"


def _device_of(arrays) -> str:
    # The one device that owns every array (None ignored); TypeError on a mix.
    found = {array_device(a) for a in arrays if a is not None}
    if len(found) > 1:
        if found == {"numpy", "cupy"}:
            raise TypeError("host (NumPy) and device (CuPy) arrays mixed; move them with to_device/to_numpy")
        raise TypeError(f"arrays of {' and '.join(sorted(found))} mixed; move them with to_device/to_numpy")
    return found.pop() if found else "numpy"


def get_array_module(*arrays):
    """The array module (``numpy`` or ``cupy``) that owns ``arrays``; NumPy for host data.

    Raises ``TypeError`` when host and device arrays are mixed, since combining them would
    need a hidden transfer.
    """
    device = _device_of(arrays)
    if device == "numpy":
        return np
    return sys.modules.get(device) or importlib.import_module(device)  # only reached when such an array exists


def is_device_array(a) -> bool:
    """True for an array of a device other than the host (a CuPy array)."""
    return array_device(a) != "numpy"


def to_device(a, xp):
    """Copy ``a`` into array module ``xp`` (``numpy`` or ``cupy``); no copy when already there."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


def to_numpy(a):
    """Return ``a`` as a NumPy array, copying from the GPU when it is a CuPy array."""
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


def backend_name(xp) -> str:
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "numpy" if xp is np else "cupy"


def primitives(*arrays):
    """The layers' primitives for ``arrays``' device (:data:`DEVICES`): :mod:`tinysr.ops.primitives_gpu`
    for CuPy arrays, else :mod:`tinysr.ops.primitives_cpu`; both satisfy
    :class:`tinysr.ops.primitives.Primitives`. Raises ``TypeError`` on a host/device mix."""
    module = DEVICES[_device_of(arrays)]
    return sys.modules.get(module) or importlib.import_module(module)  # imported on first use (numba, CUDA)
