"""Two source trees of tinysr timed against each other, interleaved (the redesign's before/after).

    python bench/ab_trees.py BEFORE_DIR AFTER_DIR [--kinds train infer upscale] [--rounds 8]

``BEFORE_DIR`` and ``AFTER_DIR`` are checkouts (``git archive COMMIT | tar -x -C DIR``); each round
runs one process per tree, in alternating order, with the tree first on ``PYTHONPATH`` and this
interpreter. A process times one measure (``--time KIND``): ``train``, a 9-1-5 training step of
batch 128 with its workspace kept (15 steps after 3 warm-ups); ``infer``, ``restore_y`` on a 1080p Y
plane (5 calls after 1); ``upscale``, ``enlarge`` of a 640x360 RGB image by 3 (5 calls after 1).
Prints each round's medians (wall time, and the process's CPU time over all its threads, which
the machine's other tenants disturb less) and, per measure, the medians and the median per-round
ratio after/before. Both the package layout by role and the older flat one (before 2026-12-01) import.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

KINDS = ("train", "infer", "upscale")


def _time(kind: str) -> tuple[float, float]:
    import numpy as np  # noqa: PLC0415

    try:
        from tinysr.image.enlarge import enlarge  # noqa: PLC0415
        from tinysr.image.inference import restore_y
        from tinysr.nn.layers import MSELoss
        from tinysr.nn.model import SRCNN
        from tinysr.nn.optim import MomentumSGD
        from tinysr.nn.training import train_step
        from tinysr.ops.engine import Engine
        from tinysr.ops.workspace import Workspace
        flat = False
    except ImportError:  # the flat layout before the redesign
        from tinysr.enlarge import enlarge  # noqa: PLC0415
        from tinysr.inference import restore_y
        from tinysr.layers import MSELoss
        from tinysr.model import SRCNN
        from tinysr.optim import MomentumSGD
        from tinysr.train import train_step
        from tinysr.workspace import Workspace
        flat = True
    rng = np.random.default_rng(0)
    model = SRCNN(init="he", seed=0, dtype=np.float32)
    if kind == "infer":
        y = rng.random((1080, 1920), dtype=np.float32)
        run, warm, reps = (lambda: restore_y(model, y)), 1, 5
    elif kind == "upscale":
        px = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
        run, warm, reps = (lambda: enlarge(px, "RGB", model, 3)), 1, 5
    else:
        x = rng.random((128, 1, 33, 33), dtype=np.float32)
        t = rng.random((128, 1, 21, 21), dtype=np.float32)
        opt, loss_fn, ws = MomentumSGD(model.params, lr=1e-4), MSELoss(), Workspace()
        if flat:
            run = lambda: train_step(model, loss_fn, opt, x, t, workspace=ws)  # noqa: E731
        else:
            model.engine = Engine(workspace=ws)
            run = lambda: train_step(model, loss_fn, opt, x, t)  # noqa: E731
        warm, reps = 3, 15
    for _ in range(warm):
        run()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def _one(tree: str, kind: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--time", kind], env=env, cwd=os.path.abspath(tree),
                         capture_output=True, text=True, check=True)
    wall, cpu = out.stdout.split()[-2:]
    return float(wall), float(cpu)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="*", metavar="TREE", help="BEFORE_DIR AFTER_DIR")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--time", choices=KINDS, help=argparse.SUPPRESS)  # inside one tree's process
    args = p.parse_args()
    if args.time:
        print("%.2f %.2f" % _time(args.time))
        return 0
    if len(args.trees) != 2:
        p.error("give BEFORE_DIR and AFTER_DIR")
    before, after = args.trees
    for kind in args.kinds:
        rows = []
        for r in range(args.rounds):
            order = (before, after) if r % 2 == 0 else (after, before)
            got = {tree: _one(tree, kind) for tree in order}
            rows.append((got[before], got[after]))
            print(f"{kind} round {r + 1}: before {rows[-1][0][0]:.2f} ms (cpu {rows[-1][0][1]:.2f}), "
                  f"after {rows[-1][1][0]:.2f} ms (cpu {rows[-1][1][1]:.2f})", flush=True)
        for i, what in enumerate(("wall", "cpu")):
            b, a = [x[i] for x, _ in rows], [y[i] for _, y in rows]
            ratio = statistics.median(y[i] / x[i] for x, y in rows)
            print(f"{kind} {what}: before {statistics.median(b):.1f} ms, after {statistics.median(a):.1f} ms, "
                  f"median ratio after/before {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
