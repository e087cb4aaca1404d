"""The Python half of ``bench/gpu_check.sh`` (see there and bench/README.md, "On a GPU").

    python bench/gpu_check.py env                 # versions, GPU, tinysr's cupy probe
    python bench/gpu_check.py gpu                 # exit 0 when --backend cupy can run, else 3 and why
    python bench/gpu_check.py kernels             # NVRTC compile time and resources of every kernel
    python bench/gpu_check.py data DEST [--scale 3] [--patches 21884]

``data`` writes the training and evaluation images for the short ``train.py`` run into
``DEST/train`` and ``DEST/eval`` and prints their folders: links to T91 and Set5 when they are
found (``data/T91`` in the checkout, copied there before a device call, then
``$TINYSR_SHARED/data`` and ``../shared/data``), else synthetic RGB stand-ins whose x3 patch
count (33x33 inputs, stride 14, as :mod:`tinysr.protocol.data` cuts them) equals T91's, 21,884, so a
step and an epoch do the same work. Standard library, NumPy and Pillow; tinysr from the
checkout (no install needed).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tinysr from the checkout, installed or not

INPUT, STRIDE = 33, 14  # tinysr.protocol.data's patch geometry
T91_PATCHES = {2: 21910, 3: 21884, 4: 21772}
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def _version(name: str) -> str:
    try:
        module = __import__(name)
    except Exception as exc:  # noqa: BLE001  (absent or broken: say which)
        return f"not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return str(getattr(module, "__version__", "unknown"))


def cmd_env(_args) -> int:
    print(f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}")
    for name in ("numpy", "numba", "scipy", "h5py", "PIL", "pytest", "pytest_benchmark", "cupy", "torch"):
        print(f"{name}: {_version(name)}")
    try:
        import cupy as cp  # noqa: PLC0415

        rt = cp.cuda.runtime
        print(f"cupy CUDA runtime (built for) {rt.runtimeGetVersion()}, driver supports {rt.driverGetVersion()}")
        print(f"cupy NVRTC {cp.cuda.nvrtc.getVersion()}")
        for i in range(rt.getDeviceCount()):
            p = rt.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
            print(f"cupy device {i}: {name}, sm_{p['major']}{p['minor']}, {p['multiProcessorCount']} SMs, "
                  f"{p['totalGlobalMem'] / 2**30:.1f} GiB, {p['sharedMemPerBlockOptin'] / 1024:.0f} KiB shared/block opt-in")
    except Exception as exc:  # noqa: BLE001
        print(f"cupy device query: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    try:
        import torch  # noqa: PLC0415

        print(f"torch CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
              f"GPU visible: {torch.cuda.is_available()}"
              + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    except Exception as exc:  # noqa: BLE001
        print(f"torch CUDA query: {type(exc).__name__}")
    cmd_gpu(None, quiet=False)
    return 0


def cmd_gpu(_args, quiet: bool = True) -> int:
    """0 when tinysr's ``--backend cupy`` can run here, else 3 with the one-line reason."""
    from tinysr.ops.backend import BackendError, resolve_backend  # noqa: PLC0415

    try:
        resolve_backend("cupy")
    except BackendError as exc:
        print(f"tinysr --backend cupy: not usable: {exc}")
        return 3
    if not quiet:
        print("tinysr --backend cupy: usable (NVRTC kernel, CuPy kernels and cuBLAS matmul probed)")
    return 0


def cmd_kernels(_args) -> int:
    """Per kernel file: NVRTC compile seconds (CuPy's disk cache off); per kernel: registers,
    static shared memory, local (spill/stack) memory, largest block, binary version."""
    from tinysr.ops import cuda_kernels  # noqa: PLC0415
    from tinysr.ops.backend import BackendError, resolve_backend  # noqa: PLC0415

    try:
        cp = resolve_backend("cupy")
    except BackendError as exc:
        print(f"tinysr --backend cupy: not usable: {exc}")
        return 3
    os.environ["CUPY_CACHE_IN_MEMORY"] = "1"  # compile for real: the times below are NVRTC's
    cols = ("file", "kernel", "regs", "static smem B", "local B", "const B", "max threads/block", "sm")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    compile_s = {}
    for name in cuda_kernels.KERNEL_FILES:
        source = cuda_kernels.kernel_source(name)
        t0 = time.perf_counter()
        module = cp.RawModule(code=source, options=("-std=c++17",))  # tinysr.ops.cuda_kernels' options
        if hasattr(module, "compile"):  # cupy.RawModule compiles lazily otherwise
            module.compile()
        compile_s[name] = time.perf_counter() - t0
        for entry in sorted(set(_ENTRY.findall(_COMMENTS.sub("", source)))):
            k = module.get_function(entry)
            values = [getattr(k, a, "?") for a in ("num_regs", "shared_size_bytes", "local_size_bytes",
                                                     "const_size_bytes", "max_threads_per_block", "binary_version")]
            print(f"| {name} | {entry} | " + " | ".join(str(v) for v in values) + " |")
    print()
    for name, s in compile_s.items():
        print(f"NVRTC compile {name}: {s:.2f} s")
    return 0


# ------------------------------------------------------------------------------------ data

def patch_count(h: int, w: int, scale: int) -> int:
    """tinysr.protocol.data's patch count of an ``h x w`` image at ``scale`` (after modcrop)."""
    h, w = h - h % scale, w - w % scale
    return len(range(0, h - INPUT + 1, STRIDE)) * len(range(0, w - INPUT + 1, STRIDE))


def side(n: int, scale: int) -> int:
    """The smallest side, a multiple of ``scale``, that gives ``n`` patch rows."""
    s = INPUT + STRIDE * (n - 1)
    return s + (-s) % scale


def synthetic_sizes(total: int, scale: int, per_side: int = 40) -> list[tuple[int, int]]:
    """``(h, w)`` of images whose patch counts add up to ``total``: full ``per_side`` squares,
    then one ``r x per_side`` image and one ``1 x c`` image for the remainder."""
    full, rest = divmod(total, per_side * per_side)
    sizes = [(side(per_side, scale), side(per_side, scale))] * full
    rows, cols = divmod(rest, per_side)
    if rows:
        sizes.append((side(rows, scale), side(per_side, scale)))
    if cols:
        sizes.append((side(1, scale), side(cols, scale)))
    assert sum(patch_count(h, w, scale) for h, w in sizes) == total
    return sizes


def _texture(h: int, w: int, seed: int):
    """A photo-like uint8 RGB image: smooth gradients, edges and noise (not constant, not white noise)."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for _ in range(6):
        fy, fx, phase = rng.uniform(0.005, 0.08), rng.uniform(0.005, 0.08), rng.uniform(0, 6.3)
        img += rng.uniform(10, 40, 3) * np.sin(fy * yy + fx * xx + phase)[..., None]
    img += 60 * (((xx // rng.integers(20, 60)) + (yy // rng.integers(20, 60))) % 2)[..., None]
    img += rng.normal(0, 6, img.shape) + 100
    return np.clip(img, 0, 255).astype(np.uint8)


def _find(name: str) -> Path | None:
    candidates = [ROOT / "data" / name]
    if os.environ.get("TINYSR_SHARED"):
        candidates.append(Path(os.environ["TINYSR_SHARED"]) / "data" / name)
    candidates.append(ROOT.parent / "shared" / "data" / name)
    return next((c for c in candidates if c.is_dir() and any(c.iterdir())), None)


def cmd_data(args) -> int:
    from PIL import Image  # noqa: PLC0415

    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    train, ev = _find("T91"), _find("Set5")
    if args.synthetic:
        train = ev = None
    if train is None:
        target = args.patches or T91_PATCHES[args.scale]
        train = dest / "train"
        train.mkdir(parents=True, exist_ok=False)
        sizes = synthetic_sizes(target, args.scale)
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(_texture(h, w, i)).save(train / f"synthetic_{i:02d}.png")
        print(f"train: {train} (synthetic stand-in: {len(sizes)} images, {target} x{args.scale} patches, "
              "the T91 count; T91 not found in data/T91, $TINYSR_SHARED/data or ../shared/data)")
    else:
        print(f"train: {train}")
    if ev is None:
        ev = dest / "eval"
        ev.mkdir(parents=True, exist_ok=False)
        for i in range(2):
            Image.fromarray(_texture(120 + 12 * i, 132, 100 + i)).save(ev / f"synthetic_eval_{i}.png")
        print(f"eval: {ev} (synthetic stand-in: 2 images; Set5 not found)")
    else:
        print(f"eval: {ev}")
    (dest / "dirs").write_text(f"{train}\n{ev}\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="versions, GPU, tinysr's cupy probe").set_defaults(fn=cmd_env)
    sub.add_parser("gpu", help="exit 0 when --backend cupy can run, else 3").set_defaults(fn=cmd_gpu)
    sub.add_parser("kernels", help="NVRTC compile time and per-kernel resources").set_defaults(fn=cmd_kernels)
    d = sub.add_parser("data", help="training/evaluation folders for the short train.py run")
    d.add_argument("dest", help="an empty or new folder for synthetic stand-ins and the 'dirs' file")
    d.add_argument("--scale", type=int, default=3, choices=(2, 3, 4))
    d.add_argument("--patches", type=int, default=None, help="synthetic patch count (default: T91's at --scale)")
    d.add_argument("--synthetic", action="store_true", help="stand-ins even where T91 and Set5 are found")
    d.set_defaults(fn=cmd_data)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
