"""Where the time of one CPU training step goes: SRCNN 9-1-5, batch 128 of 33x33 patches.

    pip install -e . && OPENBLAS_NUM_THREADS=2 python bench/profile_train_step.py [--repeat 20] [--conv1-backward]

Runs the step of ``tinysr.nn.training.train_step`` (forward, Caffe Euclidean loss, backward,
MomentumSGD update) layer by layer (each ReLU is fused into the conv before it) with a clock
around each call, and prints the median of each part over ``--repeat`` steps (after 3 warm-up
steps) and its share of the median step. As ``train.py`` runs it, the layers take their arrays
from a workspace kept between steps; ``--no-workspace`` allocates them anew each step (fresh
memory whose pages the kernel zeroes on first touch). A profile for reading, not a benchmark
with a target.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from threadpoolctl import threadpool_limits

from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD
from tinysr.ops import primitives_cpu
from tinysr.ops.blas_threads import run_split
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--no-workspace", action="store_true", help="allocate every array anew each step")
    p.add_argument("--conv1-backward", action="store_true", help="then time layer 1's backward call by call")
    args = p.parse_args()
    ws = None if args.no_workspace else Workspace()
    model = SRCNN(init="he", seed=0, engine=Engine(workspace=ws))
    rng = np.random.default_rng(0)
    x = rng.random((128, 1, 33, 33), dtype=np.float32)
    t = rng.random((128, 1, 21, 21), dtype=np.float32)
    loss_fn, opt = MSELoss(), MomentumSGD(model.params, lr=1e-4)
    times = defaultdict(list)

    def timed(name, f, *a):
        t0 = time.perf_counter()
        out = f(*a)
        times[name].append(time.perf_counter() - t0)
        return out

    def step():
        t0 = time.perf_counter()
        h = timed("conv1+ReLU fwd", model.conv1.forward, x, "valid", True)
        h = timed("conv2+ReLU fwd", model.conv2.forward, h, "valid", True)
        h = timed("conv3 forward", model.conv3.forward, h, "valid", True)
        timed("loss forward", loss_fn.forward, h, t)
        d = timed("loss backward", loss_fn.backward)
        d = timed("conv3 backward", model.conv3.backward, d)
        d = timed("ReLU+conv2 bwd", model.conv2.backward, d)
        timed("ReLU+conv1 bwd", model.conv1.backward, d)
        timed("update", opt.step, model.params, model.grads)
        times["step"].append(time.perf_counter() - t0)

    for _ in range(3):
        step()
    times.clear()
    for _ in range(args.repeat):
        step()
    total = np.median(times["step"])
    print(f"SRCNN 9-1-5 training step, batch 128, float32, {'no workspace' if ws is None else 'workspace'}; "
          f"median of {args.repeat}")
    for name, v in sorted(times.items(), key=lambda kv: -np.median(kv[1])):
        print(f"{name:<16}{np.median(v) * 1e3:8.2f} ms{np.median(v) / total:8.1%}")
    if args.conv1_backward:
        conv1_backward_parts(args.repeat)


def conv1_backward_parts(repeat: int) -> None:
    """Layer 1's backward call by call, as ``Conv2d.backward`` makes the calls (the first two on
    the worker threads through ``run_split``), on random arrays of the batch-128 shapes."""
    rng = np.random.default_rng(1)
    n, o, k, p = 128, 64, 81, 625
    dy = rng.standard_normal((n, o, 25, 25), dtype=np.float32)
    y = np.maximum(rng.standard_normal((n, o, 25, 25), dtype=np.float32), 0)
    cols = rng.standard_normal((n, k, p), dtype=np.float32)
    dyr, prods = np.empty_like(dy), np.empty((n, o, k), np.float32)

    def relu(lo, hi):
        primitives_cpu.relu_backward(dy[lo:hi], y[lo:hi], out=dyr[lo:hi])

    def gemm(lo, hi):
        np.matmul(dyr[lo:hi].reshape(hi - lo, o, p), cols[lo:hi].transpose(0, 2, 1), out=prods[lo:hi])

    def median_ms(f):
        f()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return np.median(ts) * 1e3

    g = median_ms(lambda: run_split(gemm, n))
    square = rng.standard_normal((2048, 2048), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        one = 2 * 2048**3 / median_ms(lambda: square @ square) / 1e6
    print(f"layer 1 backward, call by call (median of {repeat}):")
    print(f"  ReLU backward (workers)           {median_ms(lambda: run_split(relu, n)):6.2f} ms")
    print(f"  weight-gradient GEMMs (workers)   {g:6.2f} ms  {2 * n * o * k * p / g / 1e6:.0f} GFLOP/s")
    print(f"  bias gradient sum (one thread)    {median_ms(lambda: dyr.sum(axis=(0, 2, 3))):6.2f} ms")
    print(f"  dW sum over the batch             {median_ms(lambda: prods.sum(axis=0)):6.2f} ms")
    print(f"  (2048^3 GEMM on one thread: {one:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
