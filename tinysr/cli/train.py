"""``python train.py``: train SRCNN on T91 patches, evaluating on Set5 under the exact protocol.

Recipes (``--recipe``; any flag given explicitly overrides the recipe's value; every setting's type,
default per recipe and class is :mod:`tinysr.nn.recipe`'s):

- ``fast`` (the default): ``--optimizer adam --init he --lr 1e-3 1e-3 1e-3 --batch-size 16
  --schedule cosine --epochs 120 --eval-every 2``, the first stage of the bundled weights
  (tinysr/weights/xS.md), which reaches the authors' 9-1-5 Set5 PSNR within its 120 epochs.
- ``paper``: the paper's recipe (ECCV 2014, 9-1-5): MomentumSGD 0.9, batch 128, learning rates
  1e-4 / 1e-4 / 1e-5, Gaussian(0, 0.001) weights, constant rate, 100 epochs, Set5 every epoch.

The loss is Caffe's Euclidean loss, ``sum over batch and pixels of (pred - label)^2 / (2 * batch)``
on [0, 1] pixels, the normalisation the paper's learning rates were set for.

Output folder (``--out``, default ``runs/xS``, or ``runs/xS-2``, ``-3``, ... when that one holds a
run): ``last.npz`` (the checkpoint, after every epoch), ``best.npz`` (weights with the best Set5
PSNR), ``log.jsonl`` (:mod:`tinysr.nn.run`); choosing, claiming and never starting over a folder
that holds a run unless ``--overwrite`` are :mod:`tinysr.cli.rundir`'s. ``--resume auto`` continues
the run in ``OUT/last.npz`` exactly as it was set up: settings not given come from the checkpoint,
a given one that contradicts it is refused (see ``--resume`` in ``--help`` for the few that may
change), and so are changed training images unless ``--allow-changed-data``.

Ctrl-C, SIGTERM or SIGHUP at any moment ends the process within seconds with exit status 130,
keeping the last complete checkpoint and leaving no temporary file (:mod:`tinysr.cli.entry`'s
handlers and ``signals_deferred``; messages and statuses: :mod:`tinysr.cli.failure`). The work is
:class:`tinysr.nn.run.TrainingRun`'s (the epochs :func:`tinysr.nn.training.fit`'s); this module
parses, claims the run folder and gives it lines, signal deferral and the step bars.

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
import math
import traceback
from pathlib import Path

from tinysr.cli.common import OneLineParser, non_negative_int, positive_int, resolve_backend_saying
from tinysr.cli.entry import Interrupted, check_signal, signals_deferred
from tinysr.cli.failure import CommandFailed, exit_status, run_main
from tinysr.cli.progress import Progress
from tinysr.cli.rundir import RunLock, make_ready, plan, resume_spelling
from tinysr.distributed.mpi import init_mpi
from tinysr.nn import recipe
from tinysr.nn.model import LAYER_NAMES
from tinysr.nn.parallel import SOLO
from tinysr.nn.recipe import BY_NAME, DEFAULT_RECIPE, DEFAULTS, RECIPES, per_layer, show
from tinysr.nn.run import TrainingRun, settings as run_settings
from tinysr.nn.serialization import read_npz
from tinysr.nn.training import LossNotFinite
from tinysr.protocol.paths import ENV_VAR

PROG = "train.py"

BAR_LOSS_EVERY = 50  # steps between the step bar's running-mean loss updates (a device sync on the GPU)


class TrainingError(CommandFailed):
    """Training cannot go on (e.g. the loss became NaN); the message says why (exit status 1)."""


def _recipe_flags(name: str) -> str:
    r = RECIPES[name]
    return " ".join(f"{BY_NAME[k].flag} {show(v) if k == 'lr' else v}" for k, v in r.items())


DESCRIPTION = "Train SRCNN on T91 patches, evaluating on Set5 under the paper's exact protocol."


_INT_TYPES = {None: int, 0: non_negative_int, 1: positive_int}  # an int setting's least value -> argparse type


def _typed(name: str) -> dict:
    """The argparse keywords of the flag of setting ``name``: its type, choices and ``nargs`` from
    the schema (:mod:`tinysr.nn.recipe`), default ``None`` (not given)."""
    s = BY_NAME[name]
    kw: dict = {"default": None}
    if s.type == "int":
        kw["type"] = _INT_TYPES[s.least]
    elif s.type == "float":
        kw["type"] = float
    elif s.type == "rates":
        kw.update(type=float, nargs="+")
    elif s.type == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    if s.choices is not None:
        kw["choices"] = s.choices
    return kw


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line. Every flag parses to ``None`` when not given (so a resumed run can tell
    what was asked for); :func:`settle` fills in the recipe's, the checkpoint's or the default values.
    Types, choices and defaults are the schema's (:mod:`tinysr.nn.recipe`); a test checks every
    flag has its setting there."""
    p = OneLineParser(prog=prog, description=DESCRIPTION)
    p.add_argument("--recipe", **_typed("recipe"),
                   help=f"fast (default): {_recipe_flags('fast')}; paper, the paper's exact recipe: "
                        f"{_recipe_flags('paper')} (Gaussian N(0, 0.001) weights). "
                        "Flags given explicitly override the recipe's values")
    p.add_argument("--backend", **_typed("backend"), help=f"array backend (default: {DEFAULTS['backend']})")
    p.add_argument("-s", "--scale", **_typed("scale"), help=f"upscaling factor (default: {DEFAULTS['scale']})")
    p.add_argument("--arch", **_typed("arch"),
                   help=f"f1-f2-f3 kernel sizes (9-1-5, 9-3-5, 9-5-5; default: {DEFAULTS['arch']})")
    p.add_argument("--epochs", **_typed("epochs"), help="passes over the patch set (default: the recipe's)")
    p.add_argument("--batch-size", **_typed("batch_size"),
                   help="patches per step; with --distributed the global batch, split evenly over the ranks")
    p.add_argument("--optimizer", **_typed("optimizer"),
                   help="sgd: the paper's MomentumSGD; adam: faster, not the paper's")
    p.add_argument("--lr", **_typed("lr"), metavar="LR",
                   help=f"learning rate: one for every layer, or one per layer ({len(LAYER_NAMES)}; "
                        f"paper: {show(RECIPES['paper']['lr'])})")
    p.add_argument("--momentum", **_typed("momentum"),
                   help=f"MomentumSGD momentum, in [0, 1) (default: {show(RECIPES[DEFAULT_RECIPE]['momentum'])})")
    p.add_argument("--schedule", **_typed("schedule"),
                   help="learning-rate schedule over --epochs (cosine decays to 1%%)")
    p.add_argument("--augment", **_typed("augment"),
                   help="each batch in one of the 8 flips/rotations of the square (drawn from the seeded "
                        "generator; default: off)")
    p.add_argument("--init-from", **_typed("init_from"), metavar="WEIGHTS",
                   help="start from these weights (.npz or .mat, same arch) instead of --init; "
                        "fresh optimiser state (a second training stage)")
    p.add_argument("--degrade", **_typed("degrade"), metavar="jpeg:Q1-Q2[xN]",
                   help="train on JPEG-compressed inputs: each image downscaled as RGB, saved as a JPEG "
                        "(4:2:0) at a quality drawn from Q1..Q2 per image and copy (by --seed), decoded; "
                        "xN: N copies of every image (default: clean bicubic inputs)")
    p.add_argument("--init", **_typed("init"),
                   help="gaussian: the paper's N(0, 0.001); he: N(0, sqrt(2/fan_in))")
    p.add_argument("--seed", **_typed("seed"),
                   help=f"seed for initialisation and shuffling (default: {DEFAULTS['seed']})")
    p.add_argument("--train-dir", **_typed("train_dir"),
                   help=f"training images (default: T91 in the shared data, ${ENV_VAR}/data/T91)")
    p.add_argument("--eval-dir", **_typed("eval_dir"),
                   help=f"evaluation images (default: Set5 in the shared data, ${ENV_VAR}/data/Set5)")
    p.add_argument("--cache", **_typed("cache"),
                   help="HDF5 patch cache (default: one shared by every run on the same images and settings, in "
                        "$XDG_CACHE_HOME/tinysr/patches, ~/.cache by default); only a tinysr patch cache is ever "
                        "replaced")
    p.add_argument("--out", **_typed("out"),
                   help="output folder (default: runs/xS, or runs/xS-2, -3, ... if that one holds a run)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that holds a run, deleting its last.npz, best.npz "
                        "and log.jsonl")
    p.add_argument("--resume", **_typed("resume"), metavar="CHECKPOINT",
                   help="continue the run of this checkpoint ('auto': OUT/last.npz, from scratch if absent; "
                        "OUT defaults to the checkpoint's folder, or runs/xS for 'auto'). Every setting comes "
                        "from the checkpoint; a flag contradicting it is refused, except --epochs (extends "
                        "the run; a cosine schedule is then spread over the new total), --eval-every, "
                        "--backend, --threads, --cache, --distributed and --dist-timeout; changed training images are refused "
                        "(see --allow-changed-data), and so is a checkpoint that does not record its whole recipe")
    p.add_argument("--eval-every", **_typed("eval_every"),
                   help="epochs between Set5 evaluations (0: never; default: the recipe's)")
    p.add_argument("--loss-normalisation", **_typed("loss_normalisation"),
                   help="loss = sum((pred-label)^2)/(2*batch), pixels in [0,1]")
    p.add_argument("--threads", **_typed("threads"),
                   help="CPU threads over each batch on --backend numpy (default: as many as BLAS uses, i.e. the "
                        "cores or OPENBLAS_NUM_THREADS); the trained weights do not depend on it")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="with --resume: continue although the training images differ from those the run "
                        "started on (else refused, naming each image added, removed or replaced)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (no progress bar, no epoch lines; log.jsonl is still written)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as 'mpiexec -n N python train.py --distributed ...'")
    p.add_argument("--dist-timeout", **_typed("dist_timeout"), metavar="SECONDS",
                   help="with --distributed: a rank waiting this long for the others (one died or hangs) "
                        "aborts the job; must exceed rank 0's evaluation and checkpoint time "
                        f"(default: {DEFAULTS['dist_timeout']:g})")
    return p


def settle(args, stored: dict | None = None, checkpoint=None) -> argparse.Namespace:
    """The run's settings (:func:`tinysr.nn.recipe.settle`) from the parsed command line ``args``
    (``None``: not given) and, on resume, the checkpoint's recorded recipe ``stored``."""
    return argparse.Namespace(**recipe.settle(vars(args), stored, checkpoint))


def _step_bar(bar, show_loss: bool):
    """:func:`~tinysr.nn.training.train_epoch`'s ``on_step`` for the epoch's step bar: one step
    further, and the running mean loss every :data:`BAR_LOSS_EVERY` steps when ``show_loss``."""
    def on_step(done: int, loss_sum) -> None:
        if show_loss and done % BAR_LOSS_EVERY == 0:  # float(): a device sync on the GPU
            bar.set_postfix_str(f"loss {float(loss_sum) / done:.4e}", refresh=False)
        bar.update(1)
    return on_step


def _open_run(args, dist, status: dict, say):
    """The run's folder, claimed by rank 0 (``status["lock"]``, ``status["out"]``), the checkpoint
    to continue and its contents (read by rank 0, sent to every rank; ``None`` for a new run),
    and the settled settings: ``(args, out, ckpt, d)``."""
    lock = status.setdefault("lock", RunLock())
    if not args.resume:  # a new run's impossible settings are refused before any folder is made
        recipe.check(run_settings(vars(args), None, None))
    if args.resume:  # rank 0 claims the folder and finds (and reads) the checkpoint for every rank
        out, ckpt = dist.bcast(plan(args, lock, say) if dist.is_root else None, "sending the run's folder")
    elif dist.is_root:
        out, ckpt = plan(args, lock, say)
    else:  # a new run: rank 0 alone claims its folder and writes there; the other ranks need not know it
        out, ckpt = Path(args.out) if args.out else None, None
    status["out"] = out
    say(f"run folder {out}")
    d = dist.bcast(read_npz(ckpt) if dist.is_root else None, "sending the checkpoint") if ckpt is not None else None
    args = argparse.Namespace(**run_settings(vars(args), d, ckpt))
    if ckpt is not None:
        status["checkpoint"] = ckpt  # kept whatever happens next
    args.out = str(Path(out).resolve()) if out is not None else None
    recipe.check(vars(args))
    return args, out, ckpt, d


def train(args, dist=SOLO, status: dict | None = None) -> dict:
    """Run training as configured by parsed ``args`` (:func:`build_parser`); returns the last log record.

    ``dist`` is this process's place in a data-parallel job (:mod:`tinysr.distributed.mpi`); only
    its rank 0 prints, evaluates and writes files. ``status["checkpoint"]`` is set to the path
    of the last complete checkpoint once there is one (for the message of an interrupted run),
    ``status["out"]`` to the run folder, which rank 0 claims with ``status["lock"]`` (a
    :class:`RunLock`, released by the caller) before anything else. The work is
    :class:`~tinysr.nn.run.TrainingRun`'s; this gives it the lines, signal deferral and bars.
    """
    status = {} if status is None else status
    progress = Progress(quiet=args.quiet or not dist.is_root)  # rank 0 alone prints
    say = progress.line
    args, out, ckpt, d = _open_run(args, dist, status, say)
    if d is not None and d["state"]["epoch"] >= args.epochs:
        done = d["state"]["epoch"]
        say(f"the run in {out} is complete: {done} of {args.epochs} epochs trained, nothing to do; extend it with "
            f"--resume {resume_spelling(ckpt, out)} --epochs N (N > {done})")
        return {}
    if args.batch_size % dist.size:
        raise ValueError(f"--batch-size {args.batch_size} (the global batch) is not a multiple of {dist.size} ranks")
    xp = resolve_backend_saying(args.backend, PROG, args.quiet or not dist.is_root)  # auto says its choice
    run = TrainingRun(args, out, xp, dist=dist, ckpt=ckpt, d=d, say=say, guard=signals_deferred,
                      on_saved=lambda path: status.__setitem__("checkpoint", path))
    run.setup(prepare_out=lambda: make_ready(out, args.overwrite))

    @contextlib.contextmanager
    def steps_bar(epoch: int, steps: int):  # closed also on an interruption, so the message is not written over it
        with progress.bar(steps, f"epoch {epoch + 1}/{args.epochs}", unit="step") as bar:
            yield _step_bar(bar, progress.bars)

    def line(record: dict, seconds: float, elapsed: float) -> None:
        remaining = (args.epochs - record["epoch"]) * run.seconds / (record["epoch"] - run.start_epoch)
        psnr = (f" | {run.eval_dir.name} x{args.scale} PSNR {record['psnr']:.2f} (best {run.best:.2f})"
                if "psnr" in record else "")
        say(f"epoch {record['epoch']}/{args.epochs} loss {record['loss']:.4e} (mse {record['mse']:.3e}) "
            f"{record['patches_per_s']:.0f} patches/s {_hms(elapsed)} elapsed {_hms(remaining)} left{psnr}")
    try:
        record = run.fit(check_stop=check_signal, steps_bar=steps_bar, on_epoch=line)
    except LossNotFinite as exc:
        kept = (f"the last good checkpoint is {status['checkpoint']}" if status.get("checkpoint")
                else "no checkpoint was written")
        raise TrainingError(f"{exc}; stopped ({kept}); lower the learning rates") from None
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
            f"--resume {resume_spelling(Path(kept), Path(out) if out else Path(kept).parent)})")


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command line entry point (``prog``: the name its messages use); returns the exit status
    (0 done, 1 training failed, 2 bad arguments or files, 130 interrupted by SIGINT/SIGTERM:
    :mod:`tinysr.cli.failure`)."""
    job = {"dist": SOLO}
    status: dict = {}

    def work() -> int:
        args = build_parser(prog).parse_args(argv)
        if args.lr is not None:  # one rate for every layer, or one per layer: checked before any work
            args.lr = per_layer(args.lr)
        if args.distributed:
            timeout = DEFAULTS["dist_timeout"] if args.dist_timeout is None else args.dist_timeout
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
