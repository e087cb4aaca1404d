"""Where the time of CPU inference goes: SRCNN 9-1-5 on one 1920x1080 Y image, step by step.

    pip install -e . && OPENBLAS_NUM_THREADS=2 python bench/profile_infer.py [--size 1920x1080] [--tile 512] [--repeat 5]

Runs :func:`tinysr.ops.fused_predict.predict_fused` (what ``SRCNN.predict`` runs on NumPy for
9-1-5) in the tiles of ``--tile`` (``infer.py``'s tiles; 4096: one piece) with its ``timings``
clock around each step, and prints the median over ``--repeat`` runs of each step's total over
all tiles and its share, and how much more the tiles cost than ``restore_y``'s one streaming
pass against how many more pixels they cover (the halos). The steps
run on several threads, so their times are thread-seconds: they add up to about the wall time
times the number of threads, and a step's share is its share of the threads' busy time. The same
run, interleaved round by round, times the plain ``restore_y`` call (one pass), the same tiles
through ``restore_tiles``, the layer-by-layer forward pass in those tiles (what ``predict`` ran
before the fused path), and a float32 2048^3 GEMM (the machine's BLAS rate), so the ratios hold
on a machine whose speed drifts. It is a profile
for reading, not a benchmark with a target.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from tinysr.image.inference import DEFAULT_TILE, restore_tiles, restore_y, tile_spans
from tinysr.nn.model import SRCNN
from tinysr.ops import fused_predict
from tinysr.ops.blas_threads import default_workers


def profiled_restore(model, y, tile, t):
    h, w = y.shape
    out = np.empty((h, w), dtype=np.float64)
    for r0, r1, ir0, ir1 in tile_spans(h, tile, model.shrink):
        for c0, c1, ic0, ic1 in tile_spans(w, tile, model.shrink):
            t0 = time.perf_counter()
            piece = np.ascontiguousarray(y[ir0:ir1, ic0:ic1], dtype=model.dtype)
            t["tile copy in/out"] += time.perf_counter() - t0
            res = fused_predict.predict_fused(model, piece, timings=t)
            t0 = time.perf_counter()
            out[r0:r1, c0:c1] = res[r0 - ir0:r1 - ir0, c0 - ic0:c1 - ic0]
            t["tile copy in/out"] += time.perf_counter() - t0
    return out


def layerwise_restore(model, y, tile):
    """``restore_y`` with the layer-by-layer forward pass in each tile."""
    h, w = y.shape
    out = np.empty((h, w), dtype=np.float64)
    for r0, r1, ir0, ir1 in tile_spans(h, tile, model.shrink):
        for c0, c1, ic0, ic1 in tile_spans(w, tile, model.shrink):
            piece = np.ascontiguousarray(y[ir0:ir1, ic0:ic1], dtype=model.dtype)
            res = model.forward(piece[None, None], padding="replicate", train=False)[0, 0]
            out[r0:r1, c0:c1] = res[r0 - ir0:r1 - ir0, c0 - ic0:c1 - ic0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1920x1080", help="WxH")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    y = np.random.default_rng(0).random((h, w), dtype=np.float32)
    model = SRCNN(init="he", seed=0, dtype=np.float32)
    flop_px = 2 * (81 * 64 + 64 * 32 + 32 * 25)
    a = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)

    timed = {"tiles": lambda: restore_tiles(model, y, args.tile),
             "restore_y": lambda: restore_y(model, y),
             "layer-by-layer": lambda: layerwise_restore(model, y, args.tile),
             "gemm": lambda: a @ a}
    runs, plain = [], defaultdict(list)
    for i in range(args.repeat + 1):  # round 0 is a warm-up (numba compiles or loads its cache)
        t = defaultdict(float)
        t0 = time.perf_counter()
        profiled_restore(model, y, args.tile, t)
        t["wall"] = time.perf_counter() - t0
        for name, f in timed.items():
            t0 = time.perf_counter()
            f()
            if i:
                plain[name].append(time.perf_counter() - t0)
        if i:
            runs.append(t)
    gemm_rate = 2 * 2048**3 / np.median(plain["gemm"]) / 1e9
    fast, slow = np.median(plain["tiles"]), np.median(plain["layer-by-layer"])
    wall = np.median([r.pop("wall") for r in runs])
    busy = np.median([sum(r.values()) for r in runs])
    print(f"SRCNN 9-1-5, {w}x{h} Y, tile {args.tile}, float32; median of {args.repeat}, interleaved")
    whole = np.median(plain["restore_y"])
    rate = flop_px * w * h / whole / 1e9
    print(f"restore_y (one streaming pass): {whole * 1e3:.0f} ms ({rate:.0f} GFLOP/s over {flop_px} FLOP/pixel); "
          f"float32 GEMM 2048^3: {gemm_rate:.0f} GFLOP/s; floor at the GEMM rate: "
          f"{flop_px * w * h / gemm_rate / 1e6:.0f} ms (restore_y reaches {rate / gemm_rate:.0%} of the GEMM rate)")
    spans = [(ir1 - ir0) * (ic1 - ic0) for _, _, ir0, ir1 in tile_spans(h, args.tile, model.shrink)
             for _, _, ic0, ic1 in tile_spans(w, args.tile, model.shrink)]
    print(f"in tiles of {args.tile} (restore_tiles, infer.py's tiles): {fast * 1e3:.0f} ms, {fast / whole - 1:+.1%}; "
          f"{len(spans)} tiles, {sum(spans)} tile pixels for {w * h} ({sum(spans) / (w * h) - 1:+.1%}: the halos); "
          f"layer by layer in those tiles: {slow * 1e3:.0f} ms")
    print(f"profiled run: {wall * 1e3:.0f} ms wall, {busy * 1e3:.0f} thread-ms in the steps below "
          f"({default_workers()} worker threads)")
    print(f"{'step':<30}{'thread-ms':>10}{'share':>8}")
    for key in sorted(runs[0], key=lambda k: -np.median([r[k] for r in runs])):
        ms = np.median([r[key] for r in runs]) * 1e3
        print(f"{key:<30}{ms:10.1f}{ms / busy / 1e3:8.1%}")


if __name__ == "__main__":
    main()
