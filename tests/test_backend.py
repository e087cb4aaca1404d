"""Backend selection: explicit errors, no hidden transfers."""

import numpy as np
import pytest

from tinysr.ops import backend


def test_numpy_and_auto():
    assert backend.resolve_backend("numpy") is np
    xp = backend.resolve_backend("auto")
    assert xp is np or backend.cupy_available()


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        backend.resolve_backend("tpu")


def test_cupy_request_without_gpu_names_the_missing_piece():
    if backend.cupy_available():
        pytest.skip("a usable GPU is present: the error path cannot be exercised here")
    with pytest.raises(backend.BackendError, match="CuPy package|NVIDIA driver|NVIDIA GPU|no CUDA device") as info:
        backend.resolve_backend("cupy")
    assert "\n" not in str(info.value)


def test_host_arrays_and_transfers():
    a = np.arange(3.0)
    assert backend.get_array_module(a, None) is np
    assert backend.to_device(a, np) is a
    assert backend.to_numpy(a) is a
    assert backend.backend_name(np) == "numpy"


def test_importing_tinysr_does_not_import_cupy_or_numba():
    import subprocess
    import sys

    code = ("import sys, tinysr.nn.model, tinysr.nn.layers, tinysr.ops.backend, tinysr.nn.serialization;"
            "print('cupy' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------------
# The probe behind resolve_backend("cupy"): a fake ``cupy`` whose pieces raise the errors real
# CuPy raises when the driver, GPU, NVRTC, CUDA headers or cuBLAS is missing.

import sys  # noqa: E402
import types  # noqa: E402


class CUDARuntimeError(RuntimeError):
    """Stands in for cupy_backends.cuda.api.runtime.CUDARuntimeError (same name and module)."""


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


class CompileException(Exception):
    """Stands in for cupy.cuda.compiler.CompileException."""


CompileException.__module__ = "cupy.cuda.compiler"


class DynamicLibNotFoundError(RuntimeError):
    """Stands in for cuda.pathfinder's error (CuPy 14 loads NVRTC and cuBLAS through it)."""


DynamicLibNotFoundError.__module__ = "cuda.pathfinder._dynamic_libs.load_dl_common"

# What real CuPy raised (cupy-cuda12x 13 and 14), by the step that raises it.
NO_DEVICE = CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
OLD_DRIVER = CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
NVRTC_14 = DynamicLibNotFoundError('Failure finding "libnvrtc.so.13 or libnvrtc.so.12": No such file: '
                                   "libnvrtc.so.13 or libnvrtc.so.12, No such file: libnvrtc.so.13 or libnvrtc.so.12")
NVRTC_13 = RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared "
                        "object file: No such file or directory")
HEADERS = RuntimeError("Failed to find CUDA headers. Please install the CUDA Toolkit or set CUDA_PATH")
HEADERS_COMPILE = CompileException('/tmp/tmpa1b2/kern.cu(3): catastrophic error: cannot open source file "cuda_fp16.h"\n'
                                   "  #include <cuda_fp16.h>\n\n1 catastrophic error detected in the compilation")
CUBLAS_14 = ImportError('Failure finding "libcublasLt.so.13 or libcublasLt.so.12": No such file: '
                        "libcublasLt.so.13 or libcublasLt.so.12")
CUBLAS_13 = RuntimeError("CuPy failed to load libcublas.so.12: OSError: libcublas.so.12: cannot open shared "
                         "object file: No such file or directory")


def fake_cupy(fail=None, runtime=12090, driver=12080, devices=1):
    """A ``cupy`` module whose probe steps raise ``fail[step]``; ``calls`` counts what ran.

    Steps: ``count`` (getDeviceCount), ``nvrtc`` (nvrtc.getVersion), ``compile``
    (RawModule.get_function), ``elementwise`` (``x * 2 + 1``), ``matmul`` (``x @ x``).
    """
    fail = dict(fail or {})
    calls = {k: 0 for k in ("count", "nvrtc", "compile", "elementwise", "matmul")}

    def step(name):
        calls[name] += 1
        if name in fail:
            raise fail[name]

    class Arr:
        def __mul__(self, other):
            step("elementwise")
            return self

        __add__ = __rmul__ = __mul__

        def __matmul__(self, other):
            step("matmul")
            return self

    class Device:
        current = 0

        def __init__(self, device_id=None):
            self.id = Device.current if device_id is None else device_id

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            return None

    class RawModule:
        def __init__(self, code, options=()):
            assert 'extern "C" __global__' in code and "-std=c++17" in options
            self.code = code

        def get_function(self, name):
            step("compile")
            assert name in self.code
            return object()

    def count():
        step("count")
        return devices

    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(
        Device=Device,
        runtime=types.SimpleNamespace(getDeviceCount=count, runtimeGetVersion=lambda: runtime,
                                      driverGetVersion=lambda: driver),
        nvrtc=types.SimpleNamespace(getVersion=lambda: step("nvrtc") or (12, 9)))
    module.RawModule = RawModule
    module.ones = lambda shape, dtype=None: Arr()
    module.calls = calls
    return module


@pytest.fixture
def install(monkeypatch):
    """``install(module)`` makes ``import cupy`` give ``module``, with an empty probe cache."""
    monkeypatch.setattr(backend, "_PROBE_CACHE", {})

    def put(module):
        monkeypatch.setitem(sys.modules, "cupy", module)
        return module
    return put


def one_line_error(name="cupy") -> str:
    with pytest.raises(backend.BackendError) as info:
        backend.resolve_backend(name)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


@pytest.mark.parametrize("step,exc,runtime,what", [
    ("nvrtc", NVRTC_14, 12090, "NVRTC"),
    ("nvrtc", NVRTC_13, 12040, "NVRTC"),
    ("compile", NVRTC_13, 12040, "NVRTC"),
    ("elementwise", HEADERS, 12090, "CUDA headers"),
    ("compile", HEADERS_COMPILE, 13000, "CUDA headers"),
    ("matmul", CUBLAS_14, 13010, "cuBLAS"),
    ("matmul", CUBLAS_13, 12020, "cuBLAS"),
])
def test_missing_toolkit_piece_is_one_line_naming_the_extra(install, step, exc, runtime, what):
    install(fake_cupy({step: exc}, runtime=runtime))
    message = one_line_error()
    major = runtime // 1000
    assert what in message
    assert f'pip install "tinysr[cuda{major}]"' in message
    other = 13 if major == 12 else 12
    assert f"cuda{other}]" not in message  # only the extra of CuPy's own CUDA is offered
    assert type(exc).__name__ in message  # the original error, first line, is kept


def test_no_gpu_and_no_driver_name_the_missing_piece(install):
    install(fake_cupy({"count": NO_DEVICE}))
    message = one_line_error()
    assert "none is visible" in message and "cudaErrorNoDevice" in message and "--backend numpy" in message
    install(fake_cupy(devices=0))
    assert "no CUDA device is visible" in one_line_error()
    install(fake_cupy({"count": OLD_DRIVER}, driver=0))
    assert "install the NVIDIA driver" in one_line_error()


def test_driver_older_than_cupys_cuda_names_the_matching_extra(install):
    install(fake_cupy({"count": OLD_DRIVER}, runtime=13000, driver=12080))
    message = one_line_error()
    assert "supports CUDA 12 but CuPy was built for CUDA 13" in message
    assert 'pip uninstall cupy-cuda13x && pip install "tinysr[cuda12]"' in message


def test_probe_runs_once_per_process_and_device(install):
    cp = install(fake_cupy())
    assert backend.resolve_backend("cupy") is cp
    assert backend.resolve_backend("cupy") is cp
    assert backend.cupy_available()
    assert cp.calls == {"count": 3, "nvrtc": 1, "compile": 1, "elementwise": 2, "matmul": 1}
    cp.cuda.Device.current = 1  # another device is probed on its own
    assert backend.resolve_backend("cupy") is cp
    assert cp.calls["compile"] == 2 and cp.calls["matmul"] == 2


def test_failed_probe_is_cached_and_auto_falls_back_to_numpy(install):
    cp = install(fake_cupy({"matmul": CUBLAS_13}))
    first = one_line_error()
    assert one_line_error() == first
    assert backend.resolve_backend("auto") is np
    assert not backend.cupy_available()
    assert cp.calls["matmul"] == 1


def test_numpy_backend_never_touches_cupy(install):
    cp = install(fake_cupy({"count": NO_DEVICE}))
    assert backend.resolve_backend("numpy") is np
    assert all(n == 0 for n in cp.calls.values())


def test_cli_reports_the_probe_failure_in_one_line(install, capsys):
    from tinysr.cli import evaluate  # noqa: PLC0415

    install(fake_cupy({"elementwise": HEADERS}))
    assert evaluate.main(["--backend", "cupy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "CUDA headers" in err and 'pip install "tinysr[cuda12]"' in err


def test_gpu_newer_than_cupys_nvrtc_says_so(install):
    arch = CompileException("nvrtc: error: invalid value for --gpu-architecture (-arch)")
    install(fake_cupy({"compile": arch}, runtime=12040))
    message = one_line_error()
    assert "CuPy's CUDA 12 cannot build kernels for this GPU" in message
    assert 'pip install "tinysr[cuda13]"' in message and "--gpu-architecture" in message
