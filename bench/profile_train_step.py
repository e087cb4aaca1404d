"""Where the time of one CPU training step goes: SRCNN 9-1-5, batch 128 of 33x33 patches.

    pip install -e . && OPENBLAS_NUM_THREADS=2 python bench/profile_train_step.py [--repeat 20]

Runs the step of ``tinysr.train.train_step`` (forward, Caffe Euclidean loss, backward,
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

from tinysr.layers import MSELoss
from tinysr.model import SRCNN
from tinysr.optim import MomentumSGD
from tinysr.workspace import Workspace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--no-workspace", action="store_true", help="allocate every array anew each step")
    args = p.parse_args()
    ws = None if args.no_workspace else Workspace()
    model = SRCNN(init="he", seed=0)
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
        h = timed("conv1+ReLU fwd", model.conv1.forward, x, "valid", True, None, ws)
        h = timed("conv2+ReLU fwd", model.conv2.forward, h, "valid", True, None, ws)
        h = timed("conv3 forward", model.conv3.forward, h, "valid", True, None, ws)
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


if __name__ == "__main__":
    main()
