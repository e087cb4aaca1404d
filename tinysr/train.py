"""``python train.py``: train SRCNN on T91 patches, evaluating on Set5 under the exact protocol.

The default is the paper's recipe (ECCV 2014, 9-1-5): MomentumSGD 0.9, batch 128, learning
rates 1e-4 / 1e-4 / 1e-5, Gaussian(0, 0.001) weights. The loss is Caffe's Euclidean loss,
``sum over batch and pixels of (pred - label)^2 / (2 * batch)`` on [0, 1] pixels, the
normalisation those learning rates were set for. ``--optimizer adam --init he`` with a cosine
schedule is a much faster recipe (README.md has the measured numbers).

Output folder (``--out``): ``last.npz`` (checkpoint: weights, optimiser state, epoch, RNG state,
config; written atomically after every epoch), ``best.npz`` (weights with the best Set5 PSNR),
``log.jsonl`` (one JSON object per epoch). ``--resume auto`` continues from ``last.npz``.

``mpiexec -n N python train.py --distributed ...`` trains data-parallel over MPI
(``tinysr/distributed.py``): ``--batch-size`` stays the global batch, each rank trains on its
``1/N`` slice of every global batch and gradients are averaged before each update, so the run
takes the same steps as one process; rank 0 alone prints, evaluates and writes files.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .backend import BACKENDS, BackendError, get_array_module, resolve_backend, to_device, to_numpy
from .cli import OneLineParser, positive_int
from .data import load_or_build_cache
from .distributed import DEFAULT_TIMEOUT, SOLO, init_mpi, shard_indices
from .inference import restore_y
from .layers import MSELoss
from .model import INITS, SRCNN, parse_arch
from .optim import Adam, MomentumSGD
from .paths import data_dir
from .protocol import evaluate_dir
from .serialization import read_npz, save_checkpoint, save_model
from .weights import load_weights
from .workspace import Workspace

PROG = "train.py"
PAPER_PSNR_915 = {2: 36.34, 3: 32.39, 4: 30.08}  # authors' 9-1-5 (T91) Set5 PSNR, REFERENCE.md


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to a flag's help, except where the default is None (the help says it)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says why."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=_DefaultsFormatter)
    p.add_argument("--backend", choices=BACKENDS, default="numpy", help="array backend")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=3, help="upscaling factor")
    p.add_argument("--arch", default="9-1-5", help="f1-f2-f3 kernel sizes (9-1-5, 9-3-5, 9-5-5)")
    p.add_argument("--epochs", type=int, default=100, help="passes over the patch set")
    p.add_argument("--batch-size", type=int, default=128,
                   help="patches per step; with --distributed the global batch, split evenly over the ranks")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="sgd: the paper's MomentumSGD; adam: faster, not the paper's")
    p.add_argument("--lr", type=float, nargs=3, metavar=("L1", "L2", "L3"), default=(1e-4, 1e-4, 1e-5),
                   help="per-layer learning rates (paper: 1e-4 1e-4 1e-5)")
    p.add_argument("--momentum", type=float, default=0.9, help="MomentumSGD momentum")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule over --epochs (cosine decays to 1%%)")
    p.add_argument("--augment", action="store_true",
                   help="each batch in one of the 8 flips/rotations of the square (drawn from the seeded generator)")
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="start from these weights (.npz or .mat, same arch) instead of --init; "
                        "fresh optimiser state (a second training stage)")
    p.add_argument("--init", choices=INITS, default="gaussian",
                   help="gaussian: the paper's N(0, 0.001); he: N(0, sqrt(2/fan_in))")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling")
    p.add_argument("--train-dir", default=None, help="training images (default: shared T91)")
    p.add_argument("--eval-dir", default=None, help="evaluation images (default: shared Set5)")
    p.add_argument("--cache", default=None, help="HDF5 patch cache (default: OUT/patches.h5)")
    p.add_argument("--out", default=None, help="output folder (default: runs/xS)")
    p.add_argument("--resume", default=None, help="checkpoint to continue from, or 'auto' for OUT/last.npz")
    p.add_argument("--eval-every", type=int, default=1, help="epochs between Set5 evaluations (0: never)")
    p.add_argument("--loss-normalisation", default="caffe", choices=("caffe",),
                   help="loss = sum((pred-label)^2)/(2*batch), pixels in [0,1]")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads over each batch on --backend numpy (default: as many as BLAS uses, i.e. the "
                        "cores or OPENBLAS_NUM_THREADS); the trained weights do not depend on it")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as 'mpiexec -n N python train.py --distributed ...'")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="with --distributed: a rank waiting this long for the others (one died or hangs) "
                        "aborts the job; must exceed rank 0's evaluation and checkpoint time")
    return p


def _make_optimizer(name: str, params: dict, lr, momentum: float):
    lrs = {"conv1": lr[0], "conv2": lr[1], "conv3": lr[2]}
    if name == "adam":
        return Adam(params, lr=lrs)
    return MomentumSGD(params, lr=lrs, momentum=momentum)


def _schedule_factor(kind: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``."""
    if kind == "constant":
        return 1.0
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def dihedral(a, k: int):
    """``a`` ``(N, C, H, W)`` (host or device) rotated by ``k % 4`` quarter turns, then transposed
    if ``k >= 4``: the 8 symmetries of the square (``k`` in 0..7), as a contiguous copy on
    ``a``'s device. Bicubic degradation commutes with them, so an input patch and its label
    stay a valid pair."""
    xp = get_array_module(a)
    a = xp.rot90(a, k % 4, axes=(2, 3))
    return xp.ascontiguousarray(a.transpose(0, 1, 3, 2) if k >= 4 else a)


def _check_args(args) -> None:
    parse_arch(args.arch)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.eval_every < 0:
        raise ValueError("--eval-every must be >= 0")
    if any(v <= 0 or not math.isfinite(v) for v in args.lr):
        raise ValueError("--lr values must be positive and finite")


def _log_lines(log_path: Path, upto_epoch: int) -> list[str]:
    """Lines of an existing log for epochs <= ``upto_epoch`` (what a resumed run keeps)."""
    if not log_path.is_file():
        return []
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] <= upto_epoch:
                keep.append(line)
        except (ValueError, KeyError):
            break
    return keep


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def train_step(model: SRCNN, loss_fn: MSELoss, opt, x, t, dist=SOLO, workers: int | None = None,
               workspace: Workspace | None = None):
    """One update from this rank's batch ``x`` ``(n, 1, 33, 33)``, labels ``t`` ``(n, 1, L, L)``:
    forward, backward, gradients averaged over the ranks, optimiser step. Returns the 0-d loss.
    ``workers``: CPU threads over the batch (``None``: as many as BLAS would use); ``workspace``:
    arrays kept from the last step (:mod:`tinysr.workspace`). Neither changes the numbers."""
    loss = loss_fn.forward(model.forward(x, workers=workers, workspace=workspace), t)
    model.backward(loss_fn.backward())
    dist.average(model.grads)
    opt.step(model.params, model.grads)
    return loss


def _quiet(*args, **kwargs) -> None:
    pass


def train(args, dist=SOLO) -> dict:
    """Run training as configured by parsed ``args``; returns the last log record.

    ``dist`` is this process's place in a data-parallel job (:mod:`tinysr.distributed`); only
    its rank 0 prints, evaluates and writes files.
    """
    _check_args(args)
    if args.batch_size % dist.size:
        raise ValueError(f"--batch-size {args.batch_size} (the global batch) is not a multiple of {dist.size} ranks")
    say = print if dist.is_root else _quiet
    xp = resolve_backend(args.backend)
    transport = dist.use_device(xp)  # before the model is built: picks this rank's GPU
    out = Path(args.out or f"runs/x{args.scale}")
    out.mkdir(parents=True, exist_ok=True)
    train_dir = Path(args.train_dir) if args.train_dir else data_dir("T91")
    eval_dir = Path(args.eval_dir) if args.eval_dir else data_dir("Set5")
    cache = Path(args.cache) if args.cache else out / "patches.h5"
    model = SRCNN.from_arch(args.arch, init=args.init, seed=args.seed, xp=xp)
    if args.init_from:
        start = load_weights(args.init_from)
        if start.config != model.config:
            raise ValueError(f"{args.init_from}: holds {start.config}, this run trains {model.config}")
        model.set_params(start.params)
    # 33x33 inputs; the labels are what the valid convolutions leave (21x21 for 9-1-5, 17x17 for 9-5-5).
    if not dist.is_root:  # rank 0 builds the patch cache first (no deadline: it may take long), then the others
        dist.barrier("waiting for rank 0's patch cache", patient=True)
    inputs, labels, _ = load_or_build_cache(train_dir, args.scale, cache, input_size=33,
                                            label_size=33 - 2 * model.shrink)
    if dist.is_root:
        dist.barrier("waiting for the other ranks' patch caches", patient=True)
    n = inputs.shape[0]
    # The patches live on the training device for the whole run (x3 on T91: 21,884 patches, 133 MB
    # in float32), so a step reads its batch there: no host-to-device copy per step.
    inputs, labels = to_device(inputs, xp), to_device(labels, xp)
    if n < args.batch_size:
        raise ValueError(f"{n} training patches is fewer than one batch of {args.batch_size}")
    opt = _make_optimizer(args.optimizer, model.params, args.lr, args.momentum)
    base_lr = dict(opt.lr)
    rng = np.random.default_rng(args.seed)
    start_epoch, best, elapsed = 0, -math.inf, 0.0
    log_path = out / "log.jsonl"
    log_lines: list[str] = []
    if args.resume:
        ckpt = out / "last.npz" if args.resume == "auto" else Path(args.resume)
        if args.resume == "auto" and not dist.bcast(ckpt.is_file()):
            say(f"no checkpoint at {ckpt}: starting from scratch", flush=True)
        else:
            d = dist.bcast(read_npz(ckpt) if dist.is_root else None, "sending the checkpoint")
            if d["state"] is None or d["optim_state"] is None:
                raise ValueError(f"{ckpt}: a model file, not a training checkpoint (no optimiser state)")
            if d["config"] != model.config or d["optim"]["type"] != type(opt).__name__:
                raise ValueError(f"{ckpt}: was trained with {d['config']} / {d['optim']['type']}, "
                                 f"this run asks for {model.config} / {type(opt).__name__}")
            model.set_params(d["params"])
            opt.load_state_dict({k: to_device(v.astype(model.dtype), xp) for k, v in d["optim_state"].items()},
                                d["optim"])
            st = d["state"]
            start_epoch, best, elapsed = st["epoch"], st["best_psnr"], st["elapsed"]
            rng.bit_generator.state = st["rng"]
            log_lines = _log_lines(log_path, start_epoch)
            say(f"resumed from {ckpt} at epoch {start_epoch}", flush=True)
    if dist.size > 1:  # every rank starts from rank 0's weights
        model.set_params(dist.bcast({k: to_numpy(v) for k, v in model.params.items()}, "sending the weights"))
        say(f"distributed: {dist.size} ranks, global batch {args.batch_size} ({args.batch_size // dist.size} "
            f"per rank), gradients averaged by {transport}", flush=True)
    if dist.is_root:
        atomic_write(log_path, lambda f: f.write("".join(line + "\n" for line in log_lines).encode()))

    loss_fn, workspace = MSELoss(), Workspace()  # the steps' activations and gradients, kept between steps
    steps = n // args.batch_size
    pixels = labels.shape[-1] * labels.shape[-2]
    meta = {"scale": args.scale, "arch": args.arch, "recipe": {k: v for k, v in vars(args).items()
                                                                if k not in ("resume",)}}
    record = {}
    run_seconds = 0.0  # this process's training time (elapsed also counts runs before a resume)
    for epoch in range(start_epoch, args.epochs):
        factor = _schedule_factor(args.schedule, epoch, args.epochs)
        opt.lr = {k: v * factor for k, v in base_lr.items()}
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        # This rank's patch order for the whole epoch, uploaded once; each step slices it on the device.
        order = to_device(np.concatenate([shard_indices(perm, s, args.batch_size, dist.rank, dist.size)
                                          for s in range(steps)]), xp)
        per = args.batch_size // dist.size
        loss_sum = xp.zeros((), dtype=model.dtype)
        for s in range(steps):
            idx = order[s * per:(s + 1) * per]
            x, t = inputs[idx], labels[idx]
            if args.augment:
                k = int(rng.integers(8))
                x, t = dihedral(x, k), dihedral(t, k)
            loss_sum += train_step(model, loss_fn, opt, x, t, dist, args.threads, workspace)
        loss = dist.mean(float(loss_sum) / steps)  # the one host synchronisation per epoch
        seconds = time.perf_counter() - t0
        elapsed += seconds
        run_seconds += seconds
        if not math.isfinite(loss):
            raise TrainingError(f"loss became {loss} in epoch {epoch + 1}; stopped. The last good "
                                f"checkpoint is {out / 'last.npz'}; lower the learning rates")
        record = {"epoch": epoch + 1, "loss": loss, "mse": MSELoss.per_pixel_mse(loss, pixels),
                  "seconds": round(seconds, 3), "elapsed": round(elapsed, 3),
                  "patches_per_s": round(steps * args.batch_size / seconds, 1), "lr_factor": factor}
        if not dist.is_root:
            continue  # rank 0 alone evaluates, writes files and prints
        if args.eval_every and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
            rows = evaluate_dir(eval_dir, args.scale, lambda y: restore_y(model, y))
            record["psnr"] = float(np.mean([r["psnr"] for r in rows]))
            record["ssim"] = float(np.mean([r["ssim"] for r in rows]))
            if record["psnr"] > best:
                best = record["psnr"]
                save_model(out / "best.npz", model, meta={**meta, "epoch": epoch + 1, "set5_psnr": best})
        state = {"epoch": epoch + 1, "best_psnr": best, "elapsed": elapsed, "rng": rng.bit_generator.state}
        save_checkpoint(out / "last.npz", model, opt, state, meta={**meta, "epoch": epoch + 1})
        log_lines.append(json.dumps(record))
        atomic_write(log_path, lambda f: f.write("".join(line + "\n" for line in log_lines).encode()))
        remaining = (args.epochs - epoch - 1) * run_seconds / (epoch + 1 - start_epoch)
        psnr = f" | {eval_dir.name} x{args.scale} PSNR {record['psnr']:.2f} (best {best:.2f})" if "psnr" in record else ""
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4e} (mse {record['mse']:.3e}) "
              f"{record['patches_per_s']:.0f} patches/s {_hms(elapsed)} elapsed {_hms(remaining)} left{psnr}",
              flush=True)
    return record


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM,)}
    dist = SOLO
    try:
        if args.distributed:
            dist = init_mpi(args.dist_timeout, PROG)
        train(args, dist)
        return 0
    except (KeyboardInterrupt, _Stop):
        code = 130
        print(f"{PROG}: {dist.tag}interrupted; the last complete checkpoint is kept "
              f"(resume with --resume auto)", file=sys.stderr)
    except TrainingError as exc:
        code = 1
        print(f"{PROG}: error: {dist.tag}{exc}", file=sys.stderr)
    except (ValueError, OSError, ImportError, BackendError) as exc:
        code = 2
        print(f"{PROG}: error: {dist.tag}{exc}", file=sys.stderr)
    except Exception:
        if dist.size > 1:  # a bug: show it, and end the other ranks rather than leave them waiting
            traceback.print_exc()
            dist.abort(1)
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    dist.abort(code)  # in a job of several ranks, end them all (no-op for one process)
    return code


if __name__ == "__main__":
    sys.exit(main())
