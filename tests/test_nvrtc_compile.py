"""Every ``kernels/*.cu`` compiles through CuPy's own NVRTC path, for sm_80 and sm_90, without a GPU.

``tinysr.ops.cuda_kernels`` builds each source with ``cupy.RawModule(code=..., options=...)``. Here
the same source and options go through CuPy's ``compile_with_cache`` (what ``RawModule``
calls), so CuPy adds its own include paths and flags (``-ftz=true``, the CUDA headers' folder,
``--device-as-default-execution-space``, ``-arch=sm_XX``) exactly as it does on a GPU. Only the
steps that need a device are replaced: the device's compute capability (we name the arch), the
on-disk kernel cache (off: ``CUPY_CACHE_IN_MEMORY=1``) and loading the cubin into the driver
(we keep the bytes instead). The cubin is an ELF file; its symbol table must hold exactly the
``extern "C" __global__`` entry points of the source.

Skips, with the reason, where CuPy or its NVRTC library is not importable (CI installs
neither: ``pip install "tinysr[cuda12]"`` brings both) or where this CuPy lacks the internals
named below. ``tests/test_cuda_compile.py`` does the same check with nvcc where nvcc exists.
"""

from __future__ import annotations

import ast
import re
import struct

import pytest

from tinysr.ops import cuda_kernels

ARCHS = ("80", "90")  # A100 and H100/H200
EM_CUDA = 190  # ELF e_machine of NVIDIA cubins
STO_CUDA_ENTRY = 0x10  # st_other flag of a kernel entry point in a cubin's symbol table
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def source_entries(text: str) -> set[str]:
    """Names of the ``extern "C" __global__`` kernels declared in CUDA C ``text`` (comments ignored)."""
    return set(_ENTRY.findall(_COMMENTS.sub("", text)))


def tinysr_options() -> tuple[str, ...]:
    """The ``options=`` tuple ``tinysr.ops.cuda_kernels`` hands to ``cupy.RawModule``."""
    import inspect  # noqa: PLC0415

    text = inspect.getsource(cuda_kernels)
    found = re.findall(r"RawModule\([^\n]*?options=(\([^)]*\))", text)
    assert found, "tinysr/ops/cuda_kernels.py no longer calls cupy.RawModule(code=..., options=(...)) on one line"
    return tuple(ast.literal_eval(found[0]))


def cubin_entries(cubin: bytes) -> tuple[int, int, set[str]]:
    """``(e_machine, e_flags, names)`` of an ELF64 cubin: ``names`` are the global function
    symbols flagged as kernel entry points (``STO_CUDA_ENTRY``)."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2 or cubin[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    e_machine, = struct.unpack_from("<H", cubin, 0x12)
    e_flags, = struct.unpack_from("<I", cubin, 0x30)
    e_shoff, = struct.unpack_from("<Q", cubin, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", cubin, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    names = set()
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        str_offset = sections[link][4]
        for pos in range(offset, offset + size, entsize or 24):
            st_name, st_info, st_other = struct.unpack_from("<IBB", cubin, pos)
            if st_info == 0x12 and st_other & STO_CUDA_ENTRY:  # STB_GLOBAL, STT_FUNC
                end = cubin.index(b"\0", str_offset + st_name)
                names.add(cubin[str_offset + st_name:end].decode())
    return e_machine, e_flags, names


def _cupy_compiler():
    """``(cupy, compiler, core)``, or a skip naming what is missing."""
    try:
        import cupy  # noqa: PLC0415
        from cupy._core import core  # noqa: PLC0415
        from cupy.cuda import compiler  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001  (absent, or a broken install)
        pytest.skip(f"CuPy is not importable ({type(exc).__name__}: {exc}); pip install \"tinysr[cuda12]\"")
    if getattr(cupy.cuda.runtime, "is_hip", False):
        pytest.skip("this CuPy is built for ROCm (HIP), not CUDA")
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"CuPy cannot load NVRTC ({type(exc).__name__}: {exc})")
    needed = ("_compile_using_nvrtc_no_warning", "_get_arch", "_get_arch_for_options_for_nvrtc")
    missing = [n for n in needed if not hasattr(compiler, n)] + ([] if hasattr(core, "compile_with_cache")
                                                                 else ["core.compile_with_cache"])
    if missing:
        pytest.skip(f"CuPy {cupy.__version__} lacks the internals this test drives: {', '.join(missing)}")
    return cupy, compiler, core


class _Compiled(Exception):
    """Carries NVRTC's output out of CuPy before it would load it into a (missing) device."""


def compile_like_rawmodule(monkeypatch, source: str, options: tuple[str, ...], arch: str):
    """The cubin CuPy's ``RawModule(code=source, options=options)`` builds for ``sm_<arch>``,
    and the NVRTC options it used (CuPy's additions included)."""
    cupy, compiler, core = _cupy_compiler()
    nvrtc = compiler._compile_using_nvrtc_no_warning
    seen = {}

    def keep_output(source, options=(), arch=None, *args, **kwargs):
        out = nvrtc(source, options, arch, *args, **kwargs)
        seen["options"] = tuple(options)
        raise _Compiled(out[0] if isinstance(out, tuple) else out)

    with monkeypatch.context() as m:
        m.setenv("CUPY_CACHE_IN_MEMORY", "1")
        m.setattr(compiler, "_get_arch", lambda: arch)
        m.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
        m.setattr(compiler, "_compile_using_nvrtc_no_warning", keep_output)
        try:
            core.compile_with_cache(source, options, prepend_cupy_headers=False)
        except _Compiled as done:
            return bytes(done.args[0]), seen["options"]
    raise AssertionError("CuPy returned without running NVRTC (a cached module?)")


def test_source_entries_ignore_comments():
    text = ('// extern "C" __global__ void old_f32(\n/* extern "C" __global__ void gone(int) */\n'
            'extern "C" __global__ void __launch_bounds__(256) a_f32(float* x) {}\n'
            'extern "C" __global__ void b_f64 (double* x) {}\n__global__ void mangled(int) {}\n')
    assert source_entries(text) == {"a_f32", "b_f64"}


def test_cubin_entries_reads_an_elf_symbol_table():
    """A hand-made ELF64 with one kernel entry, one device function and one local symbol."""
    strtab = b"\0kern_f32\0helper\0local\0"
    symbols = b"".join([
        struct.pack("<IBBHQQ", 0, 0, 0, 0, 0, 0),
        struct.pack("<IBBHQQ", 1, 0x12, STO_CUDA_ENTRY, 1, 0, 16),   # the kernel
        struct.pack("<IBBHQQ", 10, 0x12, 0, 1, 0, 16),               # a global non-entry function
        struct.pack("<IBBHQQ", 17, 0x02, STO_CUDA_ENTRY, 1, 0, 16),  # a local symbol
    ])
    header_size, shentsize = 64, 64
    strtab_off = header_size
    symtab_off = strtab_off + len(strtab)
    shoff = symtab_off + len(symbols)
    sections = b"".join([
        struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, strtab_off, len(strtab), 0, 0, 1, 0),      # SHT_STRTAB
        struct.pack("<IIQQQQIIQQ", 0, 2, 0, 0, symtab_off, len(symbols), 1, 1, 8, 24),    # SHT_SYMTAB
    ])
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, EM_CUDA, 1, 0, 0, shoff, 0x5a055a,
                                 header_size, 0, 0, shentsize, 3, 0)
    assert len(header) == header_size
    machine, flags, names = cubin_entries(header + strtab + symbols + sections)
    assert (machine, flags & 0xFF, names) == (EM_CUDA, 90, {"kern_f32"})
    with pytest.raises(ValueError, match="not a little-endian ELF64"):
        cubin_entries(b"\x7fELF\x01\x01" + b"\0" * 60)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", cuda_kernels.KERNEL_FILES)
def test_nvrtc_compiles_every_kernel_like_rawmodule(monkeypatch, name, arch):
    source = cuda_kernels.kernel_source(name)
    wanted = source_entries(source)
    assert wanted, f"no extern \"C\" __global__ kernel found in {name}"
    cubin, options = compile_like_rawmodule(monkeypatch, source, tinysr_options(), arch)
    assert set(tinysr_options()) <= set(options)
    machine, flags, entries = cubin_entries(cubin)
    assert machine == EM_CUDA
    assert int(arch) in (flags & 0xFF, (flags >> 8) & 0xFF), f"cubin e_flags {flags:#x} is not for sm_{arch}"
    assert entries == wanted, (f"{name} for sm_{arch}: missing from the cubin {sorted(wanted - entries)}, "
                               f"not declared extern \"C\" in the source {sorted(entries - wanted)}")
