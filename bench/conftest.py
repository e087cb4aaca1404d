"""Options and fixtures of the benchmark suite (see bench/README.md for the commands).

- ``--bench-quick``: every size shrunk (batch 4, images of a few dozen pixels, GEMM 64) so the
  whole suite runs in seconds; for smoke tests only, its timings mean nothing.
- ``TINYSR_BENCH_THREADS`` (environment, default 2): CPU threads for OpenBLAS (NumPy), numba and
  torch alike, so that the CPU backends compare at the same thread count. It must be set before
  NumPy is first imported, which is why it is an environment variable and not an option.
- ``torch`` / ``torch_cuda`` / ``torch_cuda_tf32`` / ``cupy`` fixtures skip, with the reason,
  where they cannot run. ``torch_cuda`` is the fair yardstick: plain float32 (TF32 off for cuBLAS
  matmuls and cuDNN convolutions) with ``cudnn.benchmark`` on; ``torch_cuda_tf32`` (the
  ``torch-cuda-tf32`` rows) allows TF32 for one test, so those rows are labelled apart.
- ``measure``: for tinysr's GPU entries first builds every ``kernels/*.cu`` module on the device
  (``extra_info["nvrtc_s"]``: NVRTC, or CuPy's kernel cache when warm), then warms up (numba JIT,
  CuPy's own kernel compiles, cuDNN autotuning, torch first call), records that first call's
  time as ``extra_info["compile_s"]``, optionally the host peak memory of one call
  (``tracemalloc``, ``extra_info["peak_mb"]``), then times the call with device
  synchronisation. No compile falls inside a timed round; ``test_bench_nvrtc.py`` times the
  NVRTC compiles themselves.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

THREADS = int(os.environ.get("TINYSR_BENCH_THREADS", "2"))
_NUMPY_WAS_IMPORTED = "numpy" in sys.modules
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import numpy as np  # noqa: E402  (after the thread limits above)
import pytest  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))  # benchutil, whatever the import mode
try:
    import tinysr  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`, run from outside the root
    sys.path.insert(0, str(BENCH_DIR.parent))

from benchutil import TORCH_GPU, device_of  # noqa: E402

from tinysr.ops import backend  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("tinysr-bench")
    group.addoption("--bench-quick", action="store_true", default=False,
                    help="shrink every benchmark size (smoke test; timings are meaningless)")


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return bool(request.config.getoption("--bench-quick"))


@pytest.fixture(scope="session", autouse=True)
def _cpu_threads():
    """Give numba the same thread count as OpenBLAS and torch."""
    import numba  # noqa: PLC0415

    numba.set_num_threads(max(1, min(THREADS, numba.config.NUMBA_NUM_THREADS)))


@pytest.fixture(scope="session")
def torch():
    """The torch module (CPU threads set to ``THREADS``), or a skip saying it is missing."""
    try:
        import torch as torch_module  # noqa: PLC0415  (the yardstick, never a tinysr dependency)
    except ImportError as exc:
        pytest.skip(f"torch is not importable ({exc}); pip install torch for the PyTorch yardstick")
    torch_module.set_num_threads(THREADS)
    return torch_module


def set_torch_tf32(torch, enabled: bool) -> None:
    """TF32 on or off for torch's cuBLAS matmuls and cuDNN convolutions; ``cudnn.benchmark`` on.

    torch >= 2.9 has per-backend ``fp32_precision`` ("ieee" or "tf32") and warns about the
    legacy ``allow_tf32`` flags (mixing the two can raise), so the new API is used where it exists.
    """
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        mode = "tf32" if enabled else "ieee"
        matmul.fp32_precision = mode
        conv.fp32_precision = mode
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32 = enabled
            torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cudnn.benchmark = True


def torch_tf32_state(torch) -> dict:
    """The TF32 and cuDNN autotuning settings as torch reports them (for ``extra_info``)."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        state = {"matmul_fp32_precision": matmul.fp32_precision, "cudnn_conv_fp32_precision": conv.fp32_precision}
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = {"matmul_allow_tf32": bool(matmul.allow_tf32),
                     "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}
    state["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return state


@pytest.fixture(scope="session")
def torch_gpu(torch):
    """torch with a usable CUDA device (its precision settings as they are), or a skip."""
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA device")
    return torch


@pytest.fixture
def torch_cuda(torch_gpu):
    """torch on the GPU in plain float32 (TF32 off) with ``cudnn.benchmark``: the fair yardstick."""
    set_torch_tf32(torch_gpu, False)
    return torch_gpu


@pytest.fixture
def torch_cuda_tf32(torch_gpu):
    """torch on the GPU with TF32 allowed for this test only (``torch-cuda-tf32`` rows)."""
    set_torch_tf32(torch_gpu, True)
    yield torch_gpu
    set_torch_tf32(torch_gpu, False)


@pytest.fixture(scope="session")
def cupy():
    """The cupy module, or a skip naming what is missing (tinysr.ops.backend's own check)."""
    if not backend.cupy_available():
        try:
            backend.resolve_backend("cupy")
        except backend.BackendError as exc:
            pytest.skip(f"no usable GPU for CuPy: {exc}")
    return backend.resolve_backend("cupy")


def gpu_sync(impl: str, request):
    """The device synchronisation for ``impl`` (``None`` on the CPU)."""
    if impl.startswith("torch-cuda"):
        return request.getfixturevalue("torch_gpu").cuda.synchronize
    if device_of(impl) == "gpu":
        cp = request.getfixturevalue("cupy")
        return lambda: cp.cuda.Device().synchronize()
    return None


def host_peak_mb(fn) -> float:
    """Peak host memory allocated by one call of ``fn`` beyond what was live before, in MiB.

    NumPy reports its data buffers to ``tracemalloc``; torch and the GPU do not.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return (peak - before) / 2**20


@pytest.fixture
def measure(benchmark, request, quick):
    """``measure(fn, flop=..., memory=False, memory_fn=None, **info)``: warm up, optionally trace
    memory (of one call of ``memory_fn``, default ``fn``), time ``fn``.

    The impl name comes from the test's ``impl`` parameter; GPU impls are synchronised inside
    the timed function. ``flop`` (the operation's floating-point operations) lets the report
    compute GFLOP/s from the median; extra keyword arguments land in ``extra_info``.
    """

    def run(fn, *, flop: int | None = None, memory: bool = False, memory_fn=None, **info):
        impl = request.node.callspec.params["impl"]
        sync = gpu_sync(impl, request)

        def timed():
            out = fn()
            if sync is not None:
                sync()
            return out

        extra = benchmark.extra_info
        if impl.startswith(("tinysr-cupy", "tinysr-cuda")):
            extra["nvrtc_s"] = build_tinysr_kernels(request.getfixturevalue("cupy"))
        t0 = time.perf_counter()
        timed()  # warm-up: JIT / CuPy compiles, cuDNN autotuning, allocator pools, first-call overheads
        extra.update(impl=impl, device=device_of(impl), compile_s=time.perf_counter() - t0,
                     quick=quick, threads=THREADS, **info)
        if impl.startswith("torch-cuda"):
            extra.update(torch_tf32_state(request.getfixturevalue("torch_gpu")))
        if flop is not None:
            extra["flop"] = int(flop)
        if memory:
            extra["peak_mb"] = host_peak_mb(timed if memory_fn is None else memory_fn)
        result = benchmark(timed)
        if flop is not None and benchmark.stats is not None:
            extra["gflops"] = flop / benchmark.stats.stats.median / 1e9
        return result

    return run


def build_tinysr_kernels(cp) -> float | None:
    """Build every ``kernels/*.cu`` module on the current device, as their first use would
    (NVRTC, or CuPy's on-disk kernel cache when it holds them); seconds taken, None where this
    tinysr has no per-module cache to fill."""
    from tinysr.ops import cuda_kernels  # noqa: PLC0415  (GPU entries only)

    build = getattr(cuda_kernels, "_module", None)
    if build is None:
        return None
    t0 = time.perf_counter()
    for name in cuda_kernels.KERNEL_FILES:
        module = build(name, cp.cuda.Device().id)
        compile_now = getattr(module, "compile", None)  # cupy.RawModule compiles lazily; this forces it
        if compile_now is not None:
            compile_now()
    cp.cuda.Device().synchronize()
    return time.perf_counter() - t0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # noqa: PLC0415

    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        module = __import__(name)
    except Exception:  # noqa: BLE001  (absent or broken: reported as not installed)
        return None
    return getattr(module, "__version__", "unknown")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add what report.py prints: CPU, threads, library versions, BLAS, GPU."""
    import numba  # noqa: PLC0415

    info = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": THREADS,
        "blas_threads_env": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        "blas_threads_applied": not _NUMPY_WAS_IMPORTED,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": _version("torch"),
        "cupy": _version("cupy"),
        "quick": bool(config.getoption("--bench-quick")),
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001  (older NumPy: no dict mode)
        info["blas"] = None
    # Which kernels OpenBLAS runs: this machine's environment pins OPENBLAS_CORETYPE=Haswell
    # (AVX2) on an AVX-512 CPU, which roughly halves the GEMM rate every ratio here is taken against.
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    arch = [lib.get("architecture") for lib in threadpool_info() if lib.get("user_api") == "blas"]
    info["blas_kernels"] = f"{arch[0] if arch else '?'} (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})"
    if backend.cupy_available():
        cp = backend.resolve_backend("cupy")
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
    elif info["torch"]:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(TORCH_GPU)
    machine_info["tinysr_bench"] = info
