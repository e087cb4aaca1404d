"""NVRTC compile time of each ``kernels/*.cu``, reported apart from every step and epoch time.

Groups ``nvrtc-compile-<file>`` (``direct.cu``, ``elementwise.cu``, ``col2im.cu``), one impl,
``tinysr-cuda-nvrtc``: one round builds ``cupy.RawModule(code=<file>, options=<tinysr's>)`` and
loads one of its kernels on the device, what the first use of that file costs in a process
whose CuPy kernel cache is cold. ``CUPY_CACHE_IN_MEMORY=1`` keeps CuPy's on-disk kernel cache
out, so every round really runs NVRTC. Elsewhere in bench/ these compiles happen before the
warm-up call (conftest's ``measure``), so no timed round of a step or an epoch includes them.
GPU only: skips with the reason where CuPy or a GPU is missing.
"""

from __future__ import annotations

import re

import pytest

from tinysr.ops import cuda_kernels

OPTIONS = ("-std=c++17",)  # what tinysr.ops.cuda_kernels hands to cupy.RawModule
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')


@pytest.mark.parametrize("name,impl", [
    pytest.param(name, "tinysr-cuda-nvrtc", id=f"{name}-tinysr-cuda-nvrtc", marks=pytest.mark.benchmark(group=f"nvrtc-compile-{name}"))
    for name in cuda_kernels.KERNEL_FILES])
def test_nvrtc_compile(measure, request, monkeypatch, name, impl):
    cp = request.getfixturevalue("cupy")
    source = cuda_kernels.kernel_source(name)
    entry = _ENTRY.search(source).group(1)
    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")  # no on-disk cache: each round compiles

    def build():
        return cp.RawModule(code=source, options=OPTIONS).get_function(entry)

    measure(build, kernel_file=name, options=list(OPTIONS), source_bytes=len(source.encode()))
