"""Backend selection: explicit errors, no hidden transfers."""

import numpy as np
import pytest

from tinysr import backend


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
    with pytest.raises(backend.BackendError, match="CuPy package|CUDA driver|no CUDA device"):
        backend.resolve_backend("cupy")


def test_host_arrays_and_transfers():
    a = np.arange(3.0)
    assert backend.get_array_module(a, None) is np
    assert backend.to_device(a, np) is a
    assert backend.to_numpy(a) is a
    assert backend.backend_name(np) == "numpy"


def test_importing_tinysr_does_not_import_cupy_or_numba():
    import subprocess
    import sys

    code = ("import sys, tinysr.model, tinysr.layers, tinysr.backend, tinysr.serialization;"
            "print('cupy' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
