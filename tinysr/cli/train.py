"""``python train.py``: train SRCNN on T91 patches, evaluating on Set5 under the exact protocol.

Recipes (``--recipe``; any flag given explicitly overrides the recipe's value):

- ``fast`` (the default): ``--optimizer adam --init he --lr 1e-3 1e-3 1e-3 --batch-size 16
  --schedule cosine --epochs 120 --eval-every 2``, the first stage of the bundled weights
  (tinysr/weights/xS.md), which reaches the authors' 9-1-5 Set5 PSNR within its 120 epochs.
- ``paper``: the paper's recipe (ECCV 2014, 9-1-5): MomentumSGD 0.9, batch 128, learning rates
  1e-4 / 1e-4 / 1e-5, Gaussian(0, 0.001) weights, constant rate, 100 epochs, Set5 every epoch.

The loss is Caffe's Euclidean loss, ``sum over batch and pixels of (pred - label)^2 / (2 * batch)``
on [0, 1] pixels, the normalisation the paper's learning rates were set for.

Output folder (``--out``, default ``runs/xS``, or ``runs/xS-2``, ``-3``, ... when that one holds a
run): ``last.npz`` (checkpoint: weights, optimiser state, epoch, RNG state, the recipe and the
log's records; written atomically after every epoch), ``best.npz`` (weights with the best Set5
PSNR), ``log.jsonl`` (one JSON object per epoch, rewritten from the checkpoint). A folder that
holds a run (``last.npz``, ``best.npz`` or a non-empty ``log.jsonl``) is never started over
unless ``--overwrite`` says so. The folder is claimed before any work (:class:`RunLock`: an
``flock`` on ``OUT/run.lock``, held for the run's life, dropped by the OS if the process dies):
a second run into it is refused naming the first's pid. ``--resume auto`` continues the run in
``OUT/last.npz`` exactly as it was set up: settings not given come from the checkpoint (which
records every one, with absolute paths, and the sha256 of each training image), a given one that
contradicts it is refused (see ``--resume`` in ``--help`` for the few that may change), and so
are changed training images unless ``--allow-changed-data``. The patch cache is shared by every
run on the same images and settings (:func:`tinysr.protocol.data.default_cache_path`).

Ctrl-C, SIGTERM or SIGHUP at any moment ends the process within seconds with exit status 130,
keeping the last complete checkpoint and leaving no temporary file.

Output: the run folder first, a line when the patch cache is built, one per epoch (loss, speed,
time left, Set5 PSNR) and at the end the ``tinysr upscale`` command that uses the weights; on a
terminal also a progress bar of each epoch's steps with the running loss (on stderr), never when
output goes to a file or pipe; ``--quiet`` (``-q``) prints nothing but errors
(:mod:`tinysr.cli.progress` decides, as for the other commands).

``mpiexec -n N python train.py --distributed ...`` trains data-parallel over MPI
(``tinysr/distributed/mpi.py``): ``--batch-size`` stays the global batch, each rank trains on its
``1/N`` slice of every global batch and gradients are averaged before each update, so the run
takes the same steps as one process; rank 0 alone prints, evaluates and writes files.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m tinysr.cli.train: as the root train.py, a signal even during the imports is one line
    from tinysr.cli.entry import run

    run("tinysr.cli.train", "train.py", unstarted="interrupted; nothing was trained")

import argparse
import contextlib
import fcntl
import json
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from tinysr.atomic import atomic_write, remove_stale_temporaries
from tinysr.cli.common import OneLineParser, non_negative_int, positive_int
from tinysr.cli.entry import Interrupted, check_signal, signals_deferred
from tinysr.cli.failure import CommandFailed, exit_status, run_main
from tinysr.cli.progress import Progress
from tinysr.distributed.mpi import DEFAULT_TIMEOUT, SOLO, init_mpi
from tinysr.image.inference import restore_y
from tinysr.nn.layers import MSELoss
from tinysr.nn.model import INITS, SRCNN, parse_arch
from tinysr.nn.serialization import read_npz, save_checkpoint, save_model
from tinysr.nn.training import make_optimizer, schedule_factor, train_epoch
from tinysr.ops.backend import BACKENDS, BackendError, resolve_backend, to_device, to_numpy
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace
from tinysr.protocol.data import (SCALES, cache_settings, default_cache_path, load_or_build_cache, source_files,
                                  without_flag_advice)
from tinysr.protocol.evaluation import evaluate_dir, list_images, prepare_pair, read_y_uint8
from tinysr.protocol.paths import ENV_VAR, data_dir
from tinysr.weights import load_weights

PROG = "train.py"
PAPER_PSNR_915 = {2: 36.34, 3: 32.39, 4: 30.08}  # authors' 9-1-5 (T91) Set5 PSNR, REFERENCE.md

RECIPES = {
    "fast": {"optimizer": "adam", "init": "he", "lr": [1e-3, 1e-3, 1e-3], "batch_size": 16,
             "schedule": "cosine", "epochs": 120, "eval_every": 2, "momentum": 0.9},
    "paper": {"optimizer": "sgd", "init": "gaussian", "lr": [1e-4, 1e-4, 1e-5], "batch_size": 128,
              "schedule": "constant", "epochs": 100, "eval_every": 1, "momentum": 0.9},
}
DEFAULT_RECIPE = "fast"
# Values of the settings no recipe sets (None: the flag's help says what it means).
DEFAULTS = {"backend": "numpy", "scale": 3, "arch": "9-1-5", "augment": False, "init_from": None, "seed": 0,
            "train_dir": None, "eval_dir": None, "cache": None, "out": None, "resume": None,
            "loss_normalisation": "caffe", "threads": None, "dist_timeout": DEFAULT_TIMEOUT,
            "recipe": DEFAULT_RECIPE}
# On --resume: these define the run (taken from the checkpoint; a flag that contradicts one is refused) ...
RUN_SETTINGS = ("scale", "arch", "optimizer", "init", "init_from", "lr", "momentum", "batch_size", "schedule",
                "augment", "seed", "train_dir", "eval_dir", "loss_normalisation")
# ... these may be given anew (else the checkpoint's value) ...
CHANGEABLE = ("epochs", "eval_every", "backend", "threads", "cache", "dist_timeout")
# ... and these belong to one invocation (never stored in the checkpoint's recipe).
NOT_RECORDED = ("resume", "overwrite", "quiet", "allow_changed_data")
RUN_FILES = ("last.npz", "best.npz", "log.jsonl")
LOCK = "run.lock"  # in OUT while a run holds it (an flock: the OS drops it when the process dies, kill -9 too)
PATHS = ("train_dir", "eval_dir", "init_from", "cache", "out")  # recorded absolute and resolved
BAR_LOSS_EVERY = 50  # steps between the step bar's running-mean loss updates (a device sync on the GPU)


class TrainingError(CommandFailed):
    """Training cannot go on (e.g. the loss became NaN); the message says why (exit status 1)."""


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _num(x: float) -> str:
    """``1e-3`` rather than ``0.001`` where that is exact (as the papers write learning rates)."""
    short = f"{x:.0e}".replace("e-0", "e-")
    return short if 0 < abs(x) < 0.01 and float(short) == x else f"{x:g}"


def _recipe_flags(name: str) -> str:
    r = RECIPES[name]
    return " ".join(f"{_flag(k)} {' '.join(map(_num, v)) if k == 'lr' else v}" for k, v in r.items())


DESCRIPTION = "Train SRCNN on T91 patches, evaluating on Set5 under the paper's exact protocol."


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line. Every flag parses to ``None`` when not given (so a resumed run can tell
    what was asked for); :func:`settle` fills in the recipe's, the checkpoint's or the default values."""
    p = OneLineParser(prog=prog, description=DESCRIPTION)
    p.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                   help=f"fast (default): {_recipe_flags('fast')}; paper, the paper's exact recipe: "
                        f"{_recipe_flags('paper')} (Gaussian N(0, 0.001) weights). "
                        "Flags given explicitly override the recipe's values")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="array backend (default: numpy)")
    p.add_argument("-s", "--scale", type=int, choices=SCALES, default=None, help="upscaling factor (default: 3)")
    p.add_argument("--arch", default=None, help="f1-f2-f3 kernel sizes (9-1-5, 9-3-5, 9-5-5; default: 9-1-5)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the patch set (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="patches per step; with --distributed the global batch, split evenly over the ranks")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="sgd: the paper's MomentumSGD; adam: faster, not the paper's")
    p.add_argument("--lr", type=float, nargs=3, metavar=("L1", "L2", "L3"), default=None,
                   help="per-layer learning rates (paper: 1e-4 1e-4 1e-5)")
    p.add_argument("--momentum", type=float, default=None, help="MomentumSGD momentum, in [0, 1) (default: 0.9)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                   help="learning-rate schedule over --epochs (cosine decays to 1%%)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="each batch in one of the 8 flips/rotations of the square (drawn from the seeded "
                        "generator; default: off)")
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="start from these weights (.npz or .mat, same arch) instead of --init; "
                        "fresh optimiser state (a second training stage)")
    p.add_argument("--init", choices=INITS, default=None,
                   help="gaussian: the paper's N(0, 0.001); he: N(0, sqrt(2/fan_in))")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed for initialisation and shuffling (default: 0)")
    p.add_argument("--train-dir", default=None,
                   help=f"training images (default: T91 in the shared data, ${ENV_VAR}/data/T91)")
    p.add_argument("--eval-dir", default=None,
                   help=f"evaluation images (default: Set5 in the shared data, ${ENV_VAR}/data/Set5)")
    p.add_argument("--cache", default=None,
                   help="HDF5 patch cache (default: one shared by every run on the same images and settings, in "
                        "$XDG_CACHE_HOME/tinysr/patches, ~/.cache by default); only a tinysr patch cache is ever "
                        "replaced")
    p.add_argument("--out", default=None,
                   help="output folder (default: runs/xS, or runs/xS-2, -3, ... if that one holds a run)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that holds a run, deleting its last.npz, best.npz "
                        "and log.jsonl")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run of this checkpoint ('auto': OUT/last.npz, from scratch if absent; "
                        "OUT defaults to the checkpoint's folder, or runs/xS for 'auto'). Every setting comes "
                        "from the checkpoint; a flag contradicting it is refused, except --epochs (extends "
                        "the run; a cosine schedule is then spread over the new total), --eval-every, "
                        "--backend, --threads, --cache, --distributed and --dist-timeout; changed training images are refused "
                        "(see --allow-changed-data), and so is a checkpoint that does not record its whole recipe")
    p.add_argument("--eval-every", type=int, default=None,
                   help="epochs between Set5 evaluations (0: never; default: the recipe's)")
    p.add_argument("--loss-normalisation", default=None, choices=("caffe",),
                   help="loss = sum((pred-label)^2)/(2*batch), pixels in [0,1]")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads over each batch on --backend numpy (default: as many as BLAS uses, i.e. the "
                        "cores or OPENBLAS_NUM_THREADS); the trained weights do not depend on it")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="with --resume: continue although the training images differ from those the run "
                        "started on (else refused, naming each image added, removed or replaced)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (no progress bar, no epoch lines; log.jsonl is still written)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as 'mpiexec -n N python train.py --distributed ...'")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --distributed: a rank waiting this long for the others (one died or hangs) "
                        "aborts the job; must exceed rank 0's evaluation and checkpoint time "
                        f"(default: {DEFAULT_TIMEOUT:g})")
    return p


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_num(float(x)) for x in value)
    if value is None:
        return "(default)"
    return str(value)


def _setting(key: str, value) -> str:
    """``value`` of ``key`` as its flag would give it."""
    if isinstance(value, bool):
        return _flag(key) if value else "--no-" + key.replace("_", "-")
    return f"{_flag(key)} {_show(value)}"


_SHARED = {"train_dir": "T91", "eval_dir": "Set5"}  # the shared data a path defaults to


def _effective_path(key: str, value) -> str | None:
    if value is None:
        return str(data_dir(_SHARED[key]).resolve()) if key in _SHARED else None
    return str(Path(value).expanduser().resolve())


def _same(key: str, a, b) -> bool:
    if key == "lr":
        try:
            return [float(x) for x in a] == [float(x) for x in b]
        except (TypeError, ValueError):
            return False
    if key in ("train_dir", "eval_dir", "init_from"):
        return _effective_path(key, a) == _effective_path(key, b)
    return a == b


_NULLABLE = ("train_dir", "eval_dir", "init_from", "cache", "threads")


def _valid_setting(action: argparse.Action, value) -> bool:
    """Whether ``value`` (from a checkpoint's JSON) is one the flag of ``action`` could have given."""
    if value is None:
        return action.dest in _NULLABLE
    if isinstance(action, argparse.BooleanOptionalAction):
        return isinstance(value, bool)
    if action.nargs == 3:
        return (isinstance(value, list) and len(value) == 3
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value))
    if isinstance(value, bool):
        return False
    if action.type is float:
        ok = isinstance(value, (int, float))
    elif action.type is not None:  # int, non_negative_int and positive_int
        least = {positive_int: 1, non_negative_int: 0}.get(action.type)
        ok = isinstance(value, int) and (least is None or value >= least)
    else:
        ok = isinstance(value, str)
    return ok and (action.choices is None or value in action.choices)


def _check_recorded(stored: dict, checkpoint) -> None:
    """Refuse a checkpoint whose recorded recipe lacks a setting, holds one this version does not
    know, or holds a value no flag could have given: resuming it would change the run silently."""
    actions = {a.dest: a for a in build_parser()._actions}
    if not stored:
        raise ValueError(f"{checkpoint}: records no recipe (an older layout), so it cannot be continued as it "
                         f"was trained; start a new run from its weights with --init-from {checkpoint}")
    known = set(actions) - {"help", *NOT_RECORDED}
    missing = sorted((set(RUN_SETTINGS) | set(CHANGEABLE)) - set(stored))
    unknown = sorted(set(stored) - known)
    if missing or unknown:
        what = "; ".join(part for part in (
            f"lacks {', '.join(map(_flag, missing))}" if missing else "",
            f"holds settings this version does not know: {', '.join(unknown)}" if unknown else "") if part)
        raise ValueError(f"{checkpoint}: its recorded recipe {what}; it cannot be continued exactly: start a new "
                         f"run from its weights with --init-from {checkpoint}")
    for key in (*RUN_SETTINGS, *CHANGEABLE):
        if key in stored and not _valid_setting(actions[key], stored[key]):
            raise ValueError(f"{checkpoint}: its recorded recipe holds {key} = {stored[key]!r}, "
                             f"which {_flag(key)} cannot be")


def settle(args, stored: dict | None = None, checkpoint=None) -> argparse.Namespace:
    """The run's settings from the parsed command line ``args`` (``None``: not given).

    A new run (``stored`` is ``None``): the flags given, then the recipe's values, then the
    defaults. A resumed run: ``stored`` is the checkpoint's recipe (its ``meta["recipe"]``); the
    settings that define the run (:data:`RUN_SETTINGS`) are the checkpoint's, and any given
    that differs (a ``--recipe`` given counts as giving its values) raises ``ValueError`` naming
    ``checkpoint`` and each difference; :data:`CHANGEABLE` ones are taken from the command line
    when given, else from the checkpoint.
    """
    given = {k: (list(v) if k == "lr" else v) for k, v in vars(args).items() if v is not None}
    if stored is None:
        recipe = given.get("recipe", DEFAULT_RECIPE)
        values = {**DEFAULTS, **RECIPES[recipe], **given, "recipe": recipe}
        # recorded absolute: a resume from another folder (or with another TINYSR_SHARED) trains on the same data
        values.update({k: _effective_path(k, values[k]) for k in PATHS if values[k] is not None or k in _SHARED})
        return argparse.Namespace(**values)
    _check_recorded(stored, checkpoint)
    asked = {**RECIPES[given["recipe"]], **given} if "recipe" in given else given
    name = stored.get("recipe") if stored.get("recipe") in RECIPES else DEFAULT_RECIPE
    base = {**DEFAULTS, **RECIPES[name]}
    values = {**base, **given, "recipe": stored.get("recipe")}
    differences = []
    for key in RUN_SETTINGS:  # every one is recorded (_check_recorded)
        if key in asked and not _same(key, asked[key], stored[key]):
            differences.append(f"{_setting(key, asked[key])} (it has {_setting(key, stored[key])})")
        values[key] = stored[key]
    if differences:
        raise ValueError(f"{checkpoint}: --resume continues that run as it was trained, but the command line "
                         f"asks for {', '.join(differences)}; drop those flags, or train a new run "
                         f"into another --out")
    for key in CHANGEABLE:
        values[key] = given.get(key, stored.get(key, base[key]))
    if given.get("cache") is not None:
        values["cache"] = _effective_path("cache", given["cache"])
    return argparse.Namespace(**values)


def _check_args(args) -> None:
    try:
        kernels = parse_arch(args.arch)
    except ValueError as exc:
        raise ValueError(f"--arch: {exc}") from None
    if sum(k - 1 for k in kernels) >= 33:  # the valid convolutions must leave a label of a 33x33 patch
        raise ValueError(f"--arch {args.arch}: its kernels take {sum(k - 1 for k in kernels)} pixels off each "
                         f"33-pixel training patch side, leaving no label (at most 32 in total, e.g. 9-1-5)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.eval_every < 0:
        raise ValueError("--eval-every must be >= 0")
    if any(not math.isfinite(v) or v <= 0 for v in args.lr):
        raise ValueError("--lr values must be positive and finite")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise ValueError(f"--momentum must be in [0, 1), got {args.momentum}")
    if not (math.isfinite(args.dist_timeout) and args.dist_timeout > 0):
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got {args.dist_timeout}")


def _check_images(folder: Path, flag: str, shared: str, more: str = "") -> None:
    """Fail up front, naming the flag and TINYSR_SHARED, when ``folder`` holds no usable image."""
    try:
        list_images(folder)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{exc} (give the images with {flag} DIR, or set {ENV_VAR} to the folder holding "
                         f"data/{shared}{more})") from None


def _check_eval_images(folder: Path, scale: int) -> None:
    """Read every evaluation image once before training: an unreadable one is found now, not
    after the first epoch's work."""
    for path in list_images(folder):
        try:
            prepare_pair(read_y_uint8(path), scale)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--eval-dir {folder}: {without_flag_advice(str(exc))} (remove it, or train with "
                             f"--eval-every 0)") from None


def _check_same_data(recorded, now: dict, ckpt, allowed: bool, say) -> None:
    """Refuse to resume on other training images than the run's (``recorded``: the checkpoint's
    ``meta["train_data"]``, ``now``: the same for the images there now) unless ``allowed``
    (``--allow-changed-data``), which continues with a line saying what changed."""
    if isinstance(recorded, dict) and isinstance(recorded.get("files"), dict):
        old, new = recorded["files"], now["files"]
        changes = [f"{name} {what}" for name, what in sorted(
            [(n, "added") for n in new if n not in old] + [(n, "removed") for n in old if n not in new]
            + [(n, "replaced") for n in new if n in old and new[n] != old[n]])]
        if not changes:
            return
        problem = (f"the training images in {now['dir']} are not those the run trained on "
                   f"({len(changes)} changed: {', '.join(changes[:10])}{', ...' if len(changes) > 10 else ''})")
    else:
        problem = f"records no fingerprint of its training images, so it cannot tell whether {now['dir']} changed"
    if allowed:
        say(f"{ckpt}: {problem}; continuing on them (--allow-changed-data)")
        return
    raise ValueError(f"{ckpt}: {problem}; restore them, or continue on the images there now with "
                     f"--allow-changed-data")


def _resume_spelling(ckpt: Path | None, out: Path) -> str:
    """How ``--resume`` names ``ckpt`` when continuing into ``out``: ``auto --out OUT`` when it is
    OUT/last.npz, else ``CKPT --out OUT``."""
    last = out / "last.npz"
    if ckpt is None or (last.is_file() and Path(ckpt).is_file() and os.path.samefile(ckpt, last)):
        return f"auto --out {out}"
    return f"{ckpt} --out {out}"


def _holds_run(out: Path) -> list[str]:
    """The files that make ``out`` hold a training run: last.npz, best.npz, a non-empty log.jsonl."""
    found = []
    for name in RUN_FILES:
        p = out / name
        if os.path.lexists(p) and (name != "log.jsonl" or not p.is_file() or p.stat().st_size > 0):
            found.append(name)
    return found


class RunLock:
    """This process's claim on a run folder: an exclusive ``flock`` on ``OUT/run.lock`` (holding
    the pid), taken before any work and kept for the run's life. A second run into the folder is
    refused naming the holder's pid; the OS drops the lock when its process dies (``kill -9``
    included), so a killed run never leaves the folder unusable."""

    def __init__(self):
        self.fd: int | None = None
        self.path: Path | None = None
        self.made: Path | None = None  # the folder, if this run created it (removed again if left empty)

    def claim(self, out: Path) -> int | None:
        """Take ``out`` (created if absent); returns ``None``, or the pid of the live process
        that holds it (0 if it has not written its pid yet)."""
        self.release()
        made = not out.is_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                finally:
                    os.close(fd)
                return int(text) if text.isdigit() else 0
            try:  # its last holder may have removed the file between our open and our lock: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.path, self.made = fd, path, out if made else None
        return None

    def release(self) -> None:
        """Give the folder back: the lock file removed while still held (so no one locks a file
        about to go), then closed; a folder this run made and left empty is removed."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        if self.made is not None:
            with contextlib.suppress(OSError):
                self.made.rmdir()  # only if empty
        self.fd = self.path = self.made = None


def _busy(out: Path, pid: int) -> str:
    return f"another training run ({f'pid {pid}' if pid else 'starting'}) is using {out}"


def _free_out(scale: int, lock: RunLock, say) -> Path:
    """``runs/xS``, or the first of ``runs/xS-2``, ``-3``, ... that holds no run and no live run
    has claimed (claimed by ``lock``)."""
    base = Path("runs") / f"x{scale}"
    for n in range(1, 1 << 20):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if _holds_run(out):
            continue
        pid = lock.claim(out)
        if pid is not None:
            say(f"{_busy(out, pid)}: training into the next free folder")
        elif not _holds_run(out):  # checked again under the lock: a run may have finished there meanwhile
            return out
    raise ValueError(f"no free run folder beside {base}; give one with --out")


def _claim(out: Path, lock: RunLock) -> None:
    pid = lock.claim(out)
    if pid is not None:
        raise ValueError(f"{_busy(out, pid)}: wait for it to end, or train into another --out")


def _plan(args, lock: RunLock, say=print) -> tuple[Path, Path | None]:
    """The output folder, claimed with ``lock`` before anything is decided about it, and the
    checkpoint to continue (``None``: a new run); refuses (``ValueError``) to start a new run
    over one a folder holds, or to use a folder another live run has claimed. ``say(text)``
    prints a line (:meth:`tinysr.cli.progress.Progress.line`)."""
    scale = args.scale or DEFAULTS["scale"]
    if args.resume and args.overwrite:
        raise ValueError("--overwrite starts a run afresh; it cannot go with --resume")
    if args.resume and args.resume != "auto":
        ckpt = Path(args.resume)
        out = Path(args.out) if args.out else ckpt.parent
        _claim(out, lock)
        last = out / "last.npz"
        if _holds_run(out) and not (last.is_file() and ckpt.is_file() and os.path.samefile(last, ckpt)):
            raise ValueError(f"{out} holds another run ({', '.join(_holds_run(out))}); continuing {ckpt} there "
                             f"would write over it: choose another --out")
        return out, ckpt
    if args.resume == "auto":
        out = Path(args.out) if args.out else Path("runs") / f"x{scale}"
        _claim(out, lock)
        ckpt = out / "last.npz"
        if ckpt.is_file():
            return out, ckpt
        if _holds_run(out):
            raise ValueError(f"{out} holds a run ({', '.join(_holds_run(out))}) but no last.npz to continue: "
                             f"start afresh with --overwrite (without --resume), or train into another --out")
        say(f"no checkpoint at {ckpt}: starting from scratch")
        return out, None
    if args.out is None:
        return _free_out(scale, lock, say), None
    out = Path(args.out)
    _claim(out, lock)
    found = _holds_run(out)
    if found and not args.overwrite:
        raise ValueError(f"{out} holds a training run ({', '.join(found)}): continue it with --resume auto, "
                         f"train into another --out, or start afresh with --overwrite (deletes it)")
    return out, None


def _log_records(log_path: Path, upto_epoch: int) -> list[dict]:
    """Records of an existing log for epochs <= ``upto_epoch`` (for a checkpoint that does not carry its log)."""
    if not log_path.is_file():
        return []
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
            if record["epoch"] <= upto_epoch:
                keep.append(record)
        except (ValueError, KeyError, TypeError):
            break
    return keep


def _write_log(log_path: Path, records: list[dict]) -> None:
    atomic_write(log_path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def _step_bar(bar, show_loss: bool):
    """:func:`~tinysr.nn.training.train_epoch`'s ``on_step`` for the epoch's step bar: one step
    further, and the running mean loss every :data:`BAR_LOSS_EVERY` steps when ``show_loss``."""
    def on_step(done: int, loss_sum) -> None:
        if show_loss and done % BAR_LOSS_EVERY == 0:  # float(): a device sync on the GPU
            bar.set_postfix_str(f"loss {float(loss_sum) / done:.4e}", refresh=False)
        bar.update(1)
    return on_step


# Overflow to inf/NaN in a diverging run: the NaN check after the epoch reports it in one line.
_NUMERIC_WARNINGS = r"(overflow|invalid value|divide by zero) encountered"


def train(args, dist=SOLO, status: dict | None = None) -> dict:
    """Run training as configured by parsed ``args`` (:func:`build_parser`); returns the last log record.

    ``dist`` is this process's place in a data-parallel job (:mod:`tinysr.distributed.mpi`); only
    its rank 0 prints, evaluates and writes files. ``status["checkpoint"]`` is set to the path
    of the last complete checkpoint once there is one (for the message of an interrupted run),
    ``status["out"]`` to the run folder, which rank 0 claims with ``status["lock"]`` (a
    :class:`RunLock`, released by the caller) before anything else.
    """
    status = {} if status is None else status
    progress = Progress(quiet=args.quiet or not dist.is_root)  # rank 0 alone prints
    say = progress.line
    lock = status.setdefault("lock", RunLock())
    if args.resume:  # rank 0 claims the folder and finds (and reads) the checkpoint for every rank
        out, ckpt = dist.bcast(_plan(args, lock, say) if dist.is_root else None, "sending the run's folder")
    elif dist.is_root:
        out, ckpt = _plan(args, lock, say)
    else:  # a new run: rank 0 alone claims its folder and writes there; the other ranks need not know it
        out, ckpt = Path(args.out) if args.out else None, None
    status["out"] = out
    say(f"run folder {out}")
    d = None
    if ckpt is not None:
        d = dist.bcast(read_npz(ckpt) if dist.is_root else None, "sending the checkpoint")
        if d["state"] is None or d["optim_state"] is None:
            raise ValueError(f"{ckpt}: a model file, not a training checkpoint (no optimiser state)")
        stored = d["meta"].get("recipe") if isinstance(d["meta"], dict) else None
        args = settle(args, stored if isinstance(stored, dict) else {}, ckpt)
        status["checkpoint"] = ckpt  # kept whatever happens next
    else:
        args = settle(args)
    args.out = str(Path(out).resolve()) if out is not None else None
    _check_args(args)
    if d is not None and d["state"]["epoch"] >= args.epochs:
        done = d["state"]["epoch"]
        say(f"the run in {out} is complete: {done} of {args.epochs} epochs trained, nothing to do; extend it with "
            f"--resume {_resume_spelling(ckpt, out)} --epochs N (N > {done})")
        return {}
    if args.batch_size % dist.size:
        raise ValueError(f"--batch-size {args.batch_size} (the global batch) is not a multiple of {dist.size} ranks")
    xp = resolve_backend(args.backend)
    transport = dist.use_device(xp)  # before the model is built: picks this rank's GPU
    # (null in a checkpoint of an older layout: the shared data's, as then)
    train_dir, eval_dir = (Path(_effective_path(k, getattr(args, k))) for k in ("train_dir", "eval_dir"))
    _check_images(train_dir, "--train-dir", "T91")
    if args.eval_every and dist.is_root:  # before the first epoch, not after it
        _check_images(eval_dir, "--eval-dir", "Set5", "; --eval-every 0 trains without evaluating")
        _check_eval_images(eval_dir, args.scale)
    train_data = None
    if dist.is_root:
        train_data = {"dir": str(train_dir), "files": source_files(train_dir)}
        if d is not None:
            _check_same_data(d["meta"].get("train_data"), train_data, ckpt, args.allow_changed_data, say)
    try:
        model = SRCNN.from_arch(args.arch, init=args.init, seed=args.seed, xp=xp)
    except ValueError as exc:
        raise ValueError(f"--arch {args.arch}: {exc}") from None
    # 33x33 inputs; the labels are what the valid convolutions leave (21x21 for 9-1-5, 17x17 for 9-5-5).
    label_size = 33 - 2 * model.shrink
    cache = Path(args.cache) if args.cache else default_cache_path(train_dir, cache_settings(args.scale, 33, label_size))
    if args.init_from and d is None:
        start = load_weights(args.init_from)
        if start.config != model.config:
            raise ValueError(f"{args.init_from}: holds {start.config}, this run trains {model.config}")
        model.set_params(start.params)
    opt = make_optimizer(args.optimizer, model.params, args.lr, args.momentum)
    if d is not None and (d["config"] != model.config or d["optim"]["type"] != type(opt).__name__):
        raise ValueError(f"{ckpt}: was trained with {d['config']} / {d['optim']['type']}, "
                         f"this run asks for {model.config} / {type(opt).__name__}")
    log_path = out / "log.jsonl" if out is not None else None
    if dist.is_root:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("last.npz", "best.npz"):  # left by a run killed while writing them
            remove_stale_temporaries(out, ".npz.tmp", name=name)
        remove_stale_temporaries(out, ".tmp", name="log.jsonl")
        if args.overwrite:
            with signals_deferred():
                for name in RUN_FILES:
                    (out / name).unlink(missing_ok=True)
    if not dist.is_root:  # rank 0 builds the patch cache first (no deadline: it may take long), then the others
        dist.barrier("waiting for rank 0's patch cache", patient=True)
    with signals_deferred() as check:  # a signal ends the cache build between images, never inside h5py
        inputs, labels, _ = load_or_build_cache(
            train_dir, args.scale, cache, input_size=33, label_size=label_size, check=check,
            on_build=lambda: say(f"building the patch cache {cache} from {train_dir}"))
    if dist.is_root:
        dist.barrier("waiting for the other ranks' patch caches", patient=True)
    n = inputs.shape[0]
    # The patches live on the training device for the whole run (x3 on T91: 21,884 patches, 133 MB
    # in float32), so a step reads its batch there: no host-to-device copy per step.
    inputs, labels = to_device(inputs, xp), to_device(labels, xp)
    if n < args.batch_size:
        raise ValueError(f"{n} training patches is fewer than one batch of {args.batch_size}")
    base_lr = dict(opt.lr)
    rng = np.random.default_rng(args.seed)
    start_epoch, best, elapsed = 0, -math.inf, 0.0
    history: list[dict] = []  # the log's records; the checkpoint carries them, log.jsonl is written from them
    if d is not None:
        model.set_params(d["params"])
        opt.load_state_dict({k: to_device(v.astype(model.dtype), xp) for k, v in d["optim_state"].items()},
                            d["optim"])
        st = d["state"]
        start_epoch, best, elapsed = st["epoch"], st["best_psnr"], st["elapsed"]
        rng.bit_generator.state = st["rng"]
        history = st["log"] if isinstance(st.get("log"), list) else _log_records(log_path, start_epoch)
        say(f"resumed from {ckpt} at epoch {start_epoch}")
    if dist.size > 1:  # every rank starts from rank 0's weights
        model.set_params(dist.bcast({k: to_numpy(v) for k, v in model.params.items()}, "sending the weights"))
        say(f"distributed: {dist.size} ranks, global batch {args.batch_size} ({args.batch_size // dist.size} "
            f"per rank), gradients averaged by {transport}")
    if dist.is_root:
        with signals_deferred():  # the log as the checkpoint has it (repairs one cut between the two writes)
            _write_log(log_path, history)

    # CPU threads over the batch; the steps' activations and gradients kept from one step to the next
    model.engine = Engine(workers=args.threads, workspace=Workspace())
    loss_fn = MSELoss()
    steps = n // args.batch_size
    pixels = labels.shape[-1] * labels.shape[-2]
    meta = {"scale": args.scale, "arch": args.arch, "recipe": {k: v for k, v in vars(args).items()
                                                                if k not in NOT_RECORDED},
            "train_data": train_data}
    record = {}
    run_seconds = 0.0  # this process's training time (elapsed also counts runs before a resume)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NUMERIC_WARNINGS, category=RuntimeWarning)
        for epoch in range(start_epoch, args.epochs):
            factor = schedule_factor(args.schedule, epoch, args.epochs)
            opt.lr = {k: v * factor for k, v in base_lr.items()}
            t0 = time.perf_counter()
            # closed also on an interruption, so the message is not written over the bar
            with progress.bar(steps, f"epoch {epoch + 1}/{args.epochs}", unit="step") as bar:
                loss = train_epoch(model, loss_fn, opt, inputs, labels, args.batch_size, rng, augment=args.augment,
                                   dist=dist, check_stop=check_signal, on_step=_step_bar(bar, progress.bars))
            seconds = time.perf_counter() - t0
            elapsed += seconds
            run_seconds += seconds
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is {status['checkpoint']}" if status.get("checkpoint")
                        else "no checkpoint was written")
                raise TrainingError(f"loss became {loss} in epoch {epoch + 1}; stopped ({kept}); "
                                    f"lower the learning rates")
            record = {"epoch": epoch + 1, "loss": loss, "mse": MSELoss.per_pixel_mse(loss, pixels),
                      "seconds": round(seconds, 3), "elapsed": round(elapsed, 3),
                      "patches_per_s": round(steps * args.batch_size / seconds, 1), "lr_factor": factor}
            if not dist.is_root:
                continue  # rank 0 alone evaluates, writes files and prints
            improved = False
            if args.eval_every and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
                rows = evaluate_dir(eval_dir, args.scale, lambda y: restore_y(model, y))
                record["psnr"] = float(np.mean([r["psnr"] for r in rows]))
                record["ssim"] = float(np.mean([r["ssim"] for r in rows]))
                if record["psnr"] > best:
                    best, improved = record["psnr"], True
            state = {"epoch": epoch + 1, "best_psnr": best, "elapsed": elapsed, "rng": rng.bit_generator.state,
                     "log": [*history, record]}
            with signals_deferred():  # checkpoint and log: both written, or the checkpoint alone (the log follows it)
                if improved:
                    save_model(out / "best.npz", model, meta={**meta, "epoch": epoch + 1, "set5_psnr": best})
                save_checkpoint(out / "last.npz", model, opt, state, meta={**meta, "epoch": epoch + 1})
                status["checkpoint"] = out / "last.npz"
                history.append(record)
                _write_log(log_path, history)
            remaining = (args.epochs - epoch - 1) * run_seconds / (epoch + 1 - start_epoch)
            psnr = (f" | {eval_dir.name} x{args.scale} PSNR {record['psnr']:.2f} (best {best:.2f})"
                    if "psnr" in record else "")
            say(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4e} (mse {record['mse']:.3e}) "
                f"{record['patches_per_s']:.0f} patches/s {_hms(elapsed)} elapsed {_hms(remaining)} left{psnr}")
    if dist.is_root and record:
        weights = out / "best.npz" if (out / "best.npz").is_file() else out / "last.npz"
        say(f"trained {args.epochs} epoch{'s' if args.epochs != 1 else ''} in {out}; enlarge with these weights: "
            f"tinysr upscale IMAGE -s {args.scale} --weights {weights}")
    return record


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _kept(status: dict, dist) -> str:
    """What an interrupted run keeps, and the command that continues it."""
    if not dist.is_root:  # rank 0 writes the checkpoints, and its own line says which is kept
        out = status.get("out")
        return f"rank 0 keeps the checkpoints{f' in {out}' if out else ''} (its message says which)"
    kept, out = status.get("checkpoint"), status.get("out")
    if not kept:
        return "no checkpoint was written"
    return (f"the last complete checkpoint {kept} is kept (continue with "
            f"--resume {_resume_spelling(Path(kept), Path(out) if out else Path(kept).parent)})")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command line entry point (``prog``: the name its messages use); returns the exit status
    (0 done, 1 training failed, 2 bad arguments or files, 130 interrupted by SIGINT/SIGTERM:
    :mod:`tinysr.cli.failure`)."""
    job = {"dist": SOLO}
    status: dict = {}

    def work() -> int:
        args = build_parser(prog).parse_args(argv)
        if args.distributed:
            timeout = DEFAULT_TIMEOUT if args.dist_timeout is None else args.dist_timeout
            if not math.isfinite(timeout):
                raise ValueError(f"--dist-timeout must be a positive number of seconds, got {timeout}")
            job["dist"] = init_mpi(timeout, prog)
        try:
            train(args, job["dist"], status)
        except Exception as exc:
            if exit_status(exc) is None and job["dist"].size > 1:  # a bug: show it, and end the other ranks
                traceback.print_exc()
                job["dist"].abort(1)
            raise
        check_signal()  # one whose exception a library swallowed
        return 0

    def interrupted(exc: BaseException) -> str:
        how = f" by {exc.signal}" if isinstance(exc, Interrupted) else ""
        return f"{job['dist'].tag}interrupted{how}; {_kept(status, job['dist'])}"

    try:
        code = run_main(prog, work, interrupted=interrupted, tag=lambda: job["dist"].tag)
    finally:
        if "lock" in status:
            status["lock"].release()
    job["dist"].abort(code)  # in a job of several ranks, end them all (no-op for one process)
    return code
