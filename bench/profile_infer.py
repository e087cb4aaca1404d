"""Where the time of CPU inference goes: SRCNN 9-1-5 on one 1920x1080 Y image, step by step.

    pip install -e . && OPENBLAS_NUM_THREADS=2 python bench/profile_infer.py [--size 1920x1080] [--tile 512] [--repeat 5]

Runs the steps of :func:`tinysr.fused_predict.predict_fused` (what ``SRCNN.predict`` runs on
NumPy for 9-1-5) inside ``restore_y``'s exact tiles, with a clock around each step, and prints
the median over ``--repeat`` runs of each step's total over all tiles and its share. The same
run, interleaved round by round, times the plain ``restore_y`` call, the layer-by-layer forward
pass in the same tiles (what ``predict`` ran before the fused path), and a float32 2048^3 GEMM
(the machine's BLAS rate), so the ratios hold on a machine whose speed drifts. It is a profile
for reading, not a benchmark with a target.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from tinysr import fused_predict
from tinysr.inference import DEFAULT_TILE, restore_y, tile_spans
from tinysr.model import SRCNN


def profiled_predict(model: SRCNN, y: np.ndarray, t: dict, block: int = fused_predict.DEFAULT_BLOCK) -> np.ndarray:
    """``predict_fused(model, y)`` with each step's seconds added to ``t`` (same steps, same order)."""
    clock = time.perf_counter
    k = dict(fused_predict.NUMPY_STEPS)
    if y.size >= fused_predict.NUMBA_MIN_PIXELS:
        from tinysr.cpu_kernels import fused_kernels

        k.update(fused_kernels())
    w1, b1, w2, b2, w3, b3 = (model.conv1.weight, model.conv1.bias, model.conv2.weight, model.conv2.bias,
                              model.conv3.weight, model.conv3.bias)
    n1, _, f1, _ = w1.shape
    n2, f3 = w2.shape[0], w3.shape[2]
    h, w = y.shape
    dt = w1.dtype
    t0 = clock()
    w1t = np.ascontiguousarray(w1.reshape(n1, f1 * f1).T)
    w2t = np.ascontiguousarray(w2.reshape(n2, n1).T)
    w3r = np.ascontiguousarray(w3.reshape(n2, f3 * f3).T)
    p1, p3 = f1 // 2, f3 // 2
    ypad = np.pad(y, p1, mode="edge")
    zpad = np.empty((f3 * f3, h + 2 * p3, w + 2 * p3), dtype=dt)
    rows = max(1, min(h, block // w))
    cols = np.empty((rows * w, f1 * f1), dtype=dt)
    h1 = np.empty((rows * w, n1), dtype=dt)
    h2 = np.empty((rows * w, n2), dtype=dt)
    zt = np.empty(f3 * f3 * rows * w, dtype=dt)
    t["setup: pad input, allocate"] += clock() - t0
    for r0 in range(0, h, rows):
        n = min(rows, h - r0) * w
        c, a1, a2 = cols[:n], h1[:n], h2[:n]
        z = zt[:f3 * f3 * n].reshape(f3 * f3, n)
        t0 = clock()
        k["unfold_rows"](ypad, r0, f1, c)
        t1 = clock()
        np.matmul(c, w1t, out=a1)
        t2 = clock()
        k["bias_relu"](a1, b1)
        t3 = clock()
        np.matmul(a1, w2t, out=a2)
        t4 = clock()
        k["bias_relu"](a2, b2)
        t5 = clock()
        np.matmul(w3r, a2.T, out=z)
        t6 = clock()
        k["place_rows"](z, zpad, r0, p3)
        t7 = clock()
        for key, dt_ in (("layer 1 unfold", t1 - t0), ("layer 1 GEMM", t2 - t1), ("layer 1 bias+ReLU", t3 - t2),
                         ("layer 2 GEMM", t4 - t3), ("layer 2 bias+ReLU", t5 - t4), ("layer 3 taps GEMM", t6 - t5),
                         ("layer 3 place taps", t7 - t6)):
            t[key] += dt_
    t0 = clock()
    zpad[:, p3:p3 + h, :p3] = zpad[:, p3:p3 + h, p3:p3 + 1]
    zpad[:, p3:p3 + h, p3 + w:] = zpad[:, p3:p3 + h, p3 + w - 1:p3 + w]
    zpad[:, :p3] = zpad[:, p3:p3 + 1]
    zpad[:, p3 + h:] = zpad[:, p3 + h - 1:p3 + h]
    t1 = clock()
    out = np.empty((h, w), dtype=dt)
    k["tap_sum"](zpad, f3, dt.type(b3[0]), out)
    t["layer 3 border"] += t1 - t0
    t["layer 3 tap sum"] += clock() - t1
    return out


def profiled_restore(model, y, tile, t):
    h, w = y.shape
    out = np.empty((h, w), dtype=np.float64)
    for r0, r1, ir0, ir1 in tile_spans(h, tile, model.shrink):
        for c0, c1, ic0, ic1 in tile_spans(w, tile, model.shrink):
            t0 = time.perf_counter()
            piece = np.ascontiguousarray(y[ir0:ir1, ic0:ic1], dtype=model.dtype)
            t["tile copy in/out"] += time.perf_counter() - t0
            res = profiled_predict(model, piece, t)
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

    timed = {"restore_y": lambda: restore_y(model, y, args.tile),
             "layer-by-layer": lambda: layerwise_restore(model, y, args.tile),
             "gemm": lambda: a @ a}
    runs, plain = [], defaultdict(list)
    for i in range(args.repeat + 1):  # round 0 is a warm-up (numba compiles or loads its cache)
        t = defaultdict(float)
        t0 = time.perf_counter()
        profiled_restore(model, y, args.tile, t)
        t["total (profiled)"] = time.perf_counter() - t0
        for name, f in timed.items():
            t0 = time.perf_counter()
            f()
            if i:
                plain[name].append(time.perf_counter() - t0)
        if i:
            runs.append(t)
    gemm_rate = 2 * 2048**3 / np.median(plain["gemm"]) / 1e9
    fast, slow = np.median(plain["restore_y"]), np.median(plain["layer-by-layer"])
    total = np.median([r["total (profiled)"] for r in runs])
    print(f"SRCNN 9-1-5, {w}x{h} Y, tile {args.tile}, float32; median of {args.repeat}, interleaved")
    print(f"restore_y (fused): {fast * 1e3:.0f} ms ({flop_px * w * h / fast / 1e9:.0f} GFLOP/s over {flop_px} "
          f"FLOP/pixel); layer by layer: {slow * 1e3:.0f} ms; float32 GEMM 2048^3: {gemm_rate:.0f} GFLOP/s; "
          f"floor at the GEMM rate: {flop_px * w * h / gemm_rate / 1e6:.0f} ms "
          f"(restore_y reaches {flop_px * w * h / fast / 1e9 / gemm_rate:.0%} of the GEMM rate)")
    print(f"{'step':<30}{'ms':>8}{'share':>8}")
    for key in sorted(runs[0], key=lambda k: -np.median([r[k] for r in runs])):
        ms = np.median([r[key] for r in runs]) * 1e3
        print(f"{key:<30}{ms:8.1f}{ms / total / 1e3:8.1%}")


if __name__ == "__main__":
    main()
