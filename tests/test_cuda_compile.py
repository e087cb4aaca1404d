"""The CUDA sources compile (nvcc -> PTX for sm_80 and sm_90) and are found; no GPU needed.

The nvcc tests skip where ``nvcc`` is not on PATH. At run time the same sources go through
NVRTC (cupy.RawModule); they include no headers, so what nvcc accepts here NVRTC accepts there.
"""

import functools
import re
import shutil
import subprocess
import sys

import pytest

from tinysr.ops import cuda_kernels

ENTRY_POINTS = {
    "direct.cu": ["direct_forward", "direct_grad_partial", "direct_grad_reduce"],
    "elementwise.cu": ["bias_relu", "bias_relu_i64", "relu_backward", "mse_partial", "mse_finalize"],
    "col2im.cu": ["im2col", "col2im", "im2col_i64", "col2im_i64"],
    "fused.cu": ["fused_z", "tap_sum"],
}
ARCHS = ["sm_80", "sm_90"]


def test_kernel_files_are_the_expected_set():
    found = sorted(p.name for p in cuda_kernels.kernel_dir().glob("*.cu"))
    assert found == sorted(ENTRY_POINTS) == sorted(cuda_kernels.KERNEL_FILES)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_kernel_source_finds_every_file(name):
    text = cuda_kernels.kernel_source(name)
    assert text == cuda_kernels.kernel_source(name[:-3])  # the suffix is optional
    for entry in ENTRY_POINTS[name]:
        for sfx in ("f32", "f64"):
            assert re.search(rf'extern "C" __global__ void\s+(__launch_bounds__\([^)]*\)\s+)?{entry}_{sfx}\s*\(', text)
    # NVRTC has no system headers and no atomics are allowed (determinism).
    assert not re.search(r"^\s*#\s*include", text, re.M)
    assert not re.search(r"\batomic\w*\s*\(", text)


def test_kernel_source_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown kernel source"):
        cuda_kernels.kernel_source("nope.cu")


def test_import_does_not_import_cupy():
    code = ("import sys, tinysr.ops.cuda_kernels as k; k.kernel_source('direct.cu'); "
            "assert 'cupy' not in sys.modules, 'tinysr.ops.cuda_kernels imported cupy'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _defines(text):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define\s+(\w+)\s+(\d+)\s*(?://.*)?$", text, re.M)}


def test_launch_constants_match_the_sources():
    direct = _defines(cuda_kernels.kernel_source("direct.cu"))
    ew = _defines(cuda_kernels.kernel_source("elementwise.cu"))
    assert direct["DIRECT_TILE_W"] == cuda_kernels._DIRECT_TILE_W == 32  # a warp is one tile row
    assert direct["DIRECT_TILE_H"] == cuda_kernels._DIRECT_TILE_H
    assert direct["DIRECT_RPT"] == cuda_kernels._DIRECT_RPT and cuda_kernels._DIRECT_TILE_H % cuda_kernels._DIRECT_RPT == 0
    assert direct["DIRECT_OCB"] % 4 == 0  # whole float4 weight loads
    assert direct["DIRECT_OCB"] == cuda_kernels._DIRECT_OCB
    assert direct["DIRECT_KMAX"] == cuda_kernels._DIRECT_KMAX
    assert direct["DIRECT_GRAD_PIX"] == cuda_kernels._DIRECT_GRAD_PIX
    assert direct["DIRECT_GRAD_THREADS"] == cuda_kernels._DIRECT_GRAD_THREADS
    # one thread per tap plus one for the bias, rounded up to whole warps, fits a gradient block
    assert -(-(cuda_kernels._DIRECT_KMAX ** 2 + 1) // 32) * 32 <= cuda_kernels._DIRECT_GRAD_THREADS
    assert ew["EW_RED_THREADS"] == cuda_kernels._EW_RED_THREADS
    fused = _defines(cuda_kernels.kernel_source("fused.cu"))
    for name in ("TILE", "OCB", "KMAX", "N2MAX", "ZMAX"):
        assert fused[f"FUSED_{name}"] == getattr(cuda_kernels, f"_FUSED_{name}"), name
    assert {k: fused[f"TAPS_MODE_{k.upper()}"] for k in ("valid", "zero", "replicate")} == cuda_kernels._PADDING_MODE
    # the input tile's rows fit the padded pitch, which keeps a warp's two rows on disjoint banks
    assert fused["FUSED_PITCH"] >= fused["FUSED_TILE"] + fused["FUSED_KMAX"] - 1 and fused["FUSED_PITCH"] % 32 == 16
    modes = {k: direct[f"DIRECT_MODE_{k.upper()}"] for k in ("valid", "zero", "replicate")}
    assert modes == cuda_kernels._PADDING_MODE


@functools.lru_cache(maxsize=None)
def _nvcc_archs(nvcc):
    """The ``sm_XX`` names this nvcc supports, or None when it cannot list them."""
    proc = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return None
    return set(proc.stdout.replace("compute_", "sm_").split())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_nvcc_compiles_to_ptx(name, arch, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA toolkit is needed to compile-check the kernels")
    archs = _nvcc_archs(nvcc)
    if archs is not None and arch not in archs:
        pytest.skip(f"this nvcc does not support {arch}")
    src = cuda_kernels.kernel_dir() / name
    ptx = tmp_path / f"{src.stem}_{arch}.ptx"
    proc = subprocess.run([nvcc, "-std=c++17", f"-arch={arch}", "--ptx", "-o", str(ptx), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed on {name} for {arch}:\n{proc.stdout}\n{proc.stderr}"
    text = ptx.read_text()
    assert f".target {arch}" in text
    for entry in ENTRY_POINTS[name]:
        for sfx in ("f32", "f64"):
            assert re.search(rf"\.entry\s+{entry}_{sfx}\s*\(", text), f"{entry}_{sfx} missing from the {arch} PTX"
