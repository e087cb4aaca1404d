"""Where a CPU training step's time goes, per layer and pass, against the machine's GEMM rate and PyTorch.

    pip install -e . && python bench/train_passes.py --arch 9-5-5 --batch 16 [--threads 2] [--rounds 5] [--steps 20]

One training step as ``tinysr.nn.training.train_epoch`` runs it (a batch gathered from a set of
random 33x33 patches by a permutation, one of the 8 dihedral symmetries when ``--augment``, then
forward, Caffe Euclidean loss, backward, MomentumSGD update) on ``--threads`` worker threads with a
workspace, as ``tinysr train`` does. Each round times, in one process and in turn: ``--steps``
tinysr steps after two untimed ones, the same number of PyTorch steps of the same network (where
torch is installed; ``torch.set_num_threads(--threads)``), and a 2048^3 float32 sgemm on
``--threads`` BLAS threads. Printed: the medians over every round's steps of

- each layer's forward and backward call (wall time) and the step's other parts (batch gather
  and augmentation, loss, optimiser);
- inside the layers, each part of the work (GEMM of the forward, weight-gradient and
  input-gradient products, unfold, fold / shifted sums, bias + ReLU, ReLU mask, the batch
  reductions) as summed over the worker threads and divided by their number (an estimate of its
  wall time: the parts of one layer call add up to that call's wall time when the workers are
  evenly loaded);
- the whole step's GFLOP/s and share of the sgemm rate, and PyTorch's step time.

FLOPs: 2 x multiply-adds of layer 1's forward and weight gradient and of the other layers'
forward, weight and input gradients, each ``N * O * Ho * Wo * C * kh * kw`` (no bias, ReLU or loss).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
from threadpoolctl import threadpool_limits

from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD
from tinysr.nn.training import dihedral
from tinysr.ops.engine import Engine, PassProfile
from tinysr.ops.workspace import Workspace

PATCHES = 2048  # the pool the batches are gathered from (T91 at x3 has about 22,000)
FORWARD_PARTS = ("unfold", "gemm", "tap sum", "bias+relu")
PARTS = (*FORWARD_PARTS, "relu grad", "tap spread", "gemm wgrad", "unfold dy", "gemm igrad", "fold", "reduce")


def step_flop(model: SRCNN, n: int, side: int = 33) -> int:
    """The FLOPs the issue counts for one step on ``n`` patches of ``side x side`` (module docstring)."""
    total, h = 0, side
    for i, layer in enumerate(model.layers):
        o, c, kh, kw = layer.weight.shape
        h = h - kh + 1
        total += 2 * n * o * h * h * c * kh * kw * (2 if i == 0 else 3)
    return total


def sgemm_rate(threads: int, a: np.ndarray) -> float:
    """GFLOP/s of one 2048^3 float32 GEMM on ``threads`` BLAS threads (median of 3)."""
    ts = []
    with threadpool_limits(threads, user_api="blas"):
        for _ in range(3):
            t0 = time.perf_counter()
            a @ a
            ts.append(time.perf_counter() - t0)
    return 2 * a.shape[0] ** 3 / np.median(ts) / 1e9


class Tinysr:
    """tinysr's step, each part timed."""

    def __init__(self, arch: str, batch: int, threads: int, augment: bool, inputs, labels, algos=()):
        self.model = SRCNN.from_arch(arch, init="he", seed=0, engine=Engine(threads, workspace=Workspace()))
        for name, algo in algos:  # e.g. ("conv2", "output_side"): a formulation forced, to compare
            getattr(self.model, name).algo = algo
        self.profile = PassProfile()
        self.model.engine.profile = self.profile
        self.loss, self.opt = MSELoss(), MomentumSGD(self.model.params, lr=1e-4)
        self.inputs, self.labels, self.batch, self.augment, self.threads = inputs, labels, batch, augment, threads
        self.rng = np.random.default_rng(0)
        self.times = defaultdict(list)  # part -> seconds per step

    def step(self, keep: bool) -> None:
        m, times, t = self.model, defaultdict(float), time.perf_counter
        self.profile.clear()
        c0 = time.process_time()
        t0 = t()
        idx = self.rng.integers(0, self.inputs.shape[0], self.batch)
        x, y = self.inputs[idx], self.labels[idx]
        if self.augment:
            k = int(self.rng.integers(8))
            x, y = dihedral(x, k), dihedral(y, k)
        t1 = t()
        times["gather+augment"] = t1 - t0
        h = x
        for name, layer in m.named_layers():
            a = t()
            h = layer.forward(h)
            times[f"{name} forward"] = t() - a
        a = t()
        self.loss.forward(h, y)
        d = self.loss.backward()
        times["loss"] = t() - a
        for name, layer in reversed(list(m.named_layers())):
            a = t()
            d = layer.backward(d)
            times[f"{name} backward"] = t() - a
        a = t()
        self.opt.step(m.params, m.grads)
        times["optimiser"] = t() - a
        times["step"] = t() - t1
        times["step + gather"] = t() - t0
        times["cpu"] = time.process_time() - c0
        names = {id(layer): name for name, layer in m.named_layers()}
        for (owner, part), s in self.profile.seconds.items():
            times[f"  {names[id(owner)]} {part}"] = s / self.threads
        if keep:
            for k, v in times.items():
                self.times[k].append(v)


class Torch:
    """PyTorch's same step (valid convolutions, ReLUs, sum-of-squares / 2N, SGD with momentum)."""

    def __init__(self, torch, arch: str, batch: int, threads: int, inputs, labels, src: SRCNN):
        self.torch, self.batch = torch, batch
        torch.set_num_threads(threads)
        layers = []
        for i, layer in enumerate(src.layers):
            o, c, kh, kw = layer.weight.shape
            conv = torch.nn.Conv2d(c, o, (kh, kw))
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.array(layer.weight)))
                conv.bias.copy_(torch.from_numpy(np.array(layer.bias)))
            layers += [conv, torch.nn.ReLU()] if i < 2 else [conv]
        self.net = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=1e-4, momentum=0.9)
        self.inputs, self.labels = torch.from_numpy(inputs), torch.from_numpy(labels)
        self.rng = np.random.default_rng(0)
        self.times = []

    def step(self, keep: bool) -> None:
        torch = self.torch
        idx = torch.from_numpy(self.rng.integers(0, self.inputs.shape[0], self.batch))
        x, y = self.inputs[idx], self.labels[idx]
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = ((self.net(x) - y) ** 2).sum() / (2 * self.batch)
        loss.backward()
        self.opt.step()
        if keep:
            self.times.append(time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="9-1-5")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and engine")
    p.add_argument("--augment", action="store_true", help="a dihedral symmetry per batch, as --augment trains")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--vs-algo", nargs="*", default=[], metavar="LAYER=ALGO",
                   help="also time, interleaved, tinysr with these layers' conv algorithms forced "
                        "(e.g. conv2=im2col_flip on 9-5-5)")
    args = p.parse_args()
    rng = np.random.default_rng(1)
    model = SRCNN.from_arch(args.arch)
    side = 33 - 2 * model.shrink
    inputs = rng.random((PATCHES, 1, 33, 33), dtype=np.float32)
    labels = rng.random((PATCHES, 1, side, side), dtype=np.float32)
    ours = Tinysr(args.arch, args.batch, args.threads, args.augment, inputs, labels)
    forced = [tuple(a.split("=", 1)) for a in args.vs_algo]
    other = Tinysr(args.arch, args.batch, args.threads, args.augment, inputs, labels, forced) if forced else None
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: PLC0415  (the yardstick, never a tinysr dependency)
        except ImportError:
            print("torch is not installed: no PyTorch column (pip install torch into this environment)")
    theirs = Torch(torch, args.arch, args.batch, args.threads, inputs, labels, ours.model) if torch else None
    square = rng.standard_normal((2048, 2048), dtype=np.float32)
    rates = []
    for _ in range(args.rounds):
        for engine in (ours, other, theirs):
            if engine is None:
                continue
            for k in range(2 + args.steps):
                engine.step(keep=k >= 2)
        rates.append(sgemm_rate(args.threads, square))

    med = {k: float(np.median(v)) for k, v in ours.times.items()}
    step, flop, rate = med["step"], step_flop(ours.model, args.batch), float(np.median(rates))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"SRCNN {args.arch} training step, batch {args.batch}, float32, {args.threads} threads, "
          f"{'augmented, ' if args.augment else ''}{args.rounds} rounds x {args.steps} steps, medians; "
          f"load average {load:.2f}")
    print(f"{'part':<24}{'ms':>9}{'share':>8}")
    order = ["gather+augment"] + [f"{n} forward" for n, _ in ours.model.named_layers()] + ["loss"]
    order += [f"{n} backward" for n, _ in reversed(list(ours.model.named_layers()))] + ["optimiser"]
    for name in order:
        print(f"{name:<24}{med[name] * 1e3:9.3f}{med[name] / step:8.1%}")
        layer, _, phase = name.partition(" ")
        parts = [(k, v) for k, v in med.items() if k.startswith(f"  {layer} ")
                 and (k.split(" ", 3)[3] in FORWARD_PARTS) == (phase == "forward")
                 and phase in ("forward", "backward")]
        for k, v in sorted(parts, key=lambda kv: PARTS.index(kv[0].split(" ", 3)[3])):
            print(f"{k:<24}{v * 1e3:9.3f}{v / step:8.1%}")
    inside = sum(v for k, v in med.items() if k.startswith("  ")) + sum(med[k] for k in order) - sum(
        med[k] for k in order if k.endswith(("forward", "backward")))
    print(f"{'step':<24}{step * 1e3:9.3f}   (step + gather {med['step + gather'] * 1e3:.3f} ms; process CPU time "
          f"{med['cpu'] * 1e3:.3f} ms; outside the timed parts: {(med['step + gather'] - inside) * 1e3:.3f} ms)")
    print(f"{flop / 1e9:.3f} GFLOP per step: {flop / step / 1e9:.1f} GFLOP/s, "
          f"{flop / step / 1e9 / rate:.1%} of the 2048^3 sgemm's {rate:.1f} GFLOP/s "
          f"(rounds: {', '.join(f'{r:.0f}' for r in rates)})")
    if other is not None:
        os_ = float(np.median(other.times["step"]))
        print(f"tinysr with {' '.join(args.vs_algo)}: {os_ * 1e3:.3f} ms per step ({flop / os_ / 1e9 / rate:.1%} of sgemm), "
              f"process CPU time {np.median(other.times['cpu']) * 1e3:.3f} ms; default / forced time {step / os_:.2f}")
    if theirs is not None:
        tt = float(np.median(theirs.times))
        print(f"PyTorch {torch.__version__}: {tt * 1e3:.3f} ms per step ({flop / tt / 1e9 / rate:.1%} of sgemm); "
              f"tinysr / PyTorch time {step / tt:.2f} (below 1: tinysr faster)")


if __name__ == "__main__":
    main()
