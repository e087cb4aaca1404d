"""Peak memory and wall time of ``infer.py`` on one very large image on the CPU (tiled pipeline).

Not part of the test suite (``tests/test_enlarge_tiled.py`` checks that the tiled pipeline equals
the whole-image one bit for bit and bounds its traced memory on a 600x400 image). Run from the
repository root with a few GB of free memory::

    OPENBLAS_NUM_THREADS=1 python bench/peak_memory_infer.py --size 8000 --scale 2

It writes a synthetic photo-like RGB PNG of ``size x size`` pixels into a temporary folder, then

1. runs ``tinysr upscale INPUT -s SCALE --tile TILE`` in a child process and takes its
   wall time and peak resident memory (``ru_maxrss`` of that child from ``os.wait4``), after a
   first child that only imports tinysr (the interpreter's own baseline). The input is made by
   another child: on Linux a child's ``ru_maxrss`` starts at its parent's peak (it survives
   ``fork``/``exec``), so this parent stays small;
2. with ``--phases``, a second child does infer's steps one at a time (``read_pixels``,
   ``enlarge``, ``write_png``) and reports the peak RSS reached by the end of each (a peak only
   grows, so each figure is the peak up to and including that step). ``--whole`` makes that child
   use the whole-image float pipeline (``super_resolve`` + ``quantize``) instead of ``enlarge``,
   for comparison at moderate sizes: it needs far more memory.

Weights: ``--weights``, by default the authors' 9-1-5 ``x{scale}.mat`` from the shared data when
present, else a random 9-1-5 network (same cost). Prints one JSON object; sizes are width x
height, memory in MiB (2**20 bytes) unless named ``_bytes``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinysr.image.inference import DEFAULT_TILE

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def _maxrss_self_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # ru_maxrss is KiB on Linux


def run_measured(cmd: list[str], env: dict, stdout=subprocess.DEVNULL) -> tuple[float, float, str]:
    """Run ``cmd``; return ``(wall seconds, peak RSS MiB of that child alone, its stdout)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall, usage.ru_maxrss * 1024 / MIB, out


def make_image(path: Path, size: int, band: int = 500) -> None:
    """A ``size x size`` RGB PNG with smooth gradients, stripes and mild noise (compresses like a photo)."""
    from PIL import Image

    img = np.empty((size, size, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float64)[None, :]
    for r0 in range(0, size, band):
        y = np.arange(r0, min(r0 + band, size), dtype=np.float64)[:, None]
        for c in range(3):
            v = (128 + 60 * np.sin((x + 2 * c * y) / (97.0 + 31 * c)) + 50 * np.cos(y / 211.0 - c)
                 + rng.normal(0, 6, (len(y), size)))
            img[r0:r0 + len(y), :, c] = np.clip(v, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


def default_weights(scale: int, folder: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from tinysr.protocol.paths import reference_models_dir

    mat = reference_models_dir() / "9-1-5_91images" / f"x{scale}.mat"
    if mat.is_file():
        return str(mat)
    from tinysr.nn.model import SRCNN
    from tinysr.nn.serialization import save_model

    return str(save_model(folder / "random_9-1-5.npz", SRCNN(init="he", seed=0)))


def child_phases(args) -> None:
    """Infer's steps in this process, peak RSS after each; prints one JSON line."""
    from tinysr.cli.common import write_png
    from tinysr.image.io import read_pixels
    from tinysr.image.enlarge import enlarge, quantize

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the whole-image pipeline is a test reference
    from tests.reference_pipeline import super_resolve
    from tinysr.weights import load_weights

    report = {"baseline_peak_rss_mib": _maxrss_self_mib()}
    model = load_weights(args.weights)
    t0 = time.perf_counter()
    pixels, kind = read_pixels(Path(args.input))
    report.update(read_s=time.perf_counter() - t0, after_read_peak_rss_mib=_maxrss_self_mib())
    t0 = time.perf_counter()
    if args.whole:
        img = pixels.astype(np.float64) / 255.0
        del pixels
        sr = quantize(super_resolve(img, kind, model, args.scale, tile=args.tile or None)[0], kind)
        del img
    else:
        sr, _ = enlarge(pixels, kind, model, args.scale, tile=args.tile or None)
        del pixels
    report.update(enlarge_s=time.perf_counter() - t0, after_enlarge_peak_rss_mib=_maxrss_self_mib(),
                  output_bytes=int(sr.nbytes))
    t0 = time.perf_counter()
    write_png(Path(args.output), sr)
    report.update(write_s=time.perf_counter() - t0, after_write_peak_rss_mib=_maxrss_self_mib())
    print(json.dumps(report))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=8000, help="input edge in pixels (square RGB), default 8000")
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"infer.py --tile (default {DEFAULT_TILE}; 0: whole image)")
    p.add_argument("--weights", help="weights file (default: shared x{scale}.mat or a random 9-1-5)")
    p.add_argument("--phases", action="store_true", help="also measure read / enlarge / write separately")
    p.add_argument("--whole", action="store_true", help="phases with the whole-image float pipeline")
    p.add_argument("--no-cli", action="store_true", help="skip the infer.py child (phases only)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--make-image", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_phases(args)
        return 0
    if args.make_image:
        make_image(Path(args.make_image), args.size)
        return 0

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="tinysr_peak_") as tmp:
        tmp = Path(tmp)
        src = tmp / f"big_{args.size}.png"
        make_s, _, _ = run_measured([sys.executable, __file__, "--make-image", str(src), "--size", str(args.size)], env)
        weights = args.weights or default_weights(args.scale, tmp)
        out_hw = args.size * args.scale
        report = {
            "input": f"{args.size}x{args.size} RGB", "input_png_bytes": src.stat().st_size,
            "scale": args.scale, "output": f"{out_hw}x{out_hw} RGB", "output_bytes": out_hw * out_hw * 3,
            "tile": args.tile, "weights": Path(weights).name,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
            "make_input_s": round(make_s, 1),
        }
        _, base, _ = run_measured([sys.executable, "-c", "import tinysr.cli.upscale, tinysr.weights"], env)
        report["python_baseline_peak_rss_mib"] = round(base, 1)
        if not args.no_cli:
            cmd = [sys.executable, "-m", "tinysr.cli.upscale", str(src), "-o", str(tmp / "out"), "-s", str(args.scale),
                   "--weights", weights, "--tile", str(args.tile)]
            wall, peak, _ = run_measured(cmd, env)
            report["cli_wall_s"] = round(wall, 1)
            report["cli_peak_rss_mib"] = round(peak, 1)
            report["cli_peak_rss_over_output_bytes"] = round(report["cli_peak_rss_mib"] * MIB / report["output_bytes"], 2)
            report["output_png_bytes"] = (tmp / "out" / f"{src.stem}_srcnn_x{args.scale}.png").stat().st_size
        if args.phases or args.whole:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--input", str(src),
                   "--output", str(tmp / "phases.png"), "--scale", str(args.scale), "--tile", str(args.tile),
                   "--weights", weights] + (["--whole"] if args.whole else [])
            wall, _, out = run_measured(cmd, env, stdout=subprocess.PIPE)
            phases = {k: round(v, 1) if isinstance(v, float) else v for k, v in json.loads(out).items()}
            phases["pipeline"] = "whole-image float (super_resolve)" if args.whole else "tiled (enlarge)"
            phases["wall_s"] = round(wall, 1)
            report["phases"] = phases
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
