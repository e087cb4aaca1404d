"""A training run's folder: choosing and claiming it, what makes it hold a run, making it ready (its log: :mod:`tinysr.nn.run`).

``tinysr train --out OUT`` (default ``runs/xS``, or ``runs/xS-2``, ``-3``, ... when that one holds
a run) writes ``last.npz`` (the checkpoint), ``best.npz`` and ``log.jsonl`` there
(:data:`RUN_FILES`). The folder is claimed before any work (:class:`RunLock`: an ``flock`` on
``OUT/run.lock``, held for the run's life, dropped by the OS if the process dies); :func:`plan`
decides, under that claim, whether the command line starts a run there, continues one, or is
refused. Messages name the flags of ``tinysr train``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from tinysr.atomic import remove_stale_temporaries
from tinysr.cli.entry import signals_deferred
from tinysr.nn.recipe import DEFAULTS

RUN_FILES = ("last.npz", "best.npz", "log.jsonl")
LOCK = "run.lock"  # in OUT while a run holds it (an flock: the OS drops it when the process dies, kill -9 too)


def resume_spelling(ckpt: Path | None, out: Path) -> str:
    """How ``--resume`` names ``ckpt`` when continuing into ``out``: ``auto --out OUT`` when it is
    OUT/last.npz, else ``CKPT --out OUT``."""
    last = out / "last.npz"
    if ckpt is None or (last.is_file() and Path(ckpt).is_file() and os.path.samefile(ckpt, last)):
        return f"auto --out {out}"
    return f"{ckpt} --out {out}"


def holds_run(out: Path) -> list[str]:
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


def busy(out: Path, pid: int) -> str:
    return f"another training run ({f'pid {pid}' if pid else 'starting'}) is using {out}"


def free_out(scale: int, lock: RunLock, say) -> Path:
    """``runs/xS``, or the first of ``runs/xS-2``, ``-3``, ... that holds no run and no live run
    has claimed (claimed by ``lock``)."""
    base = Path("runs") / f"x{scale}"
    for n in range(1, 1 << 20):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if holds_run(out):
            continue
        pid = lock.claim(out)
        if pid is not None:
            say(f"{busy(out, pid)}: training into the next free folder")
        elif not holds_run(out):  # checked again under the lock: a run may have finished there meanwhile
            return out
    raise ValueError(f"no free run folder beside {base}; give one with --out")


def claim(out: Path, lock: RunLock) -> None:
    pid = lock.claim(out)
    if pid is not None:
        raise ValueError(f"{busy(out, pid)}: wait for it to end, or train into another --out")


def plan(args, lock: RunLock, say=print) -> tuple[Path, Path | None]:
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
        claim(out, lock)
        last = out / "last.npz"
        if holds_run(out) and not (last.is_file() and ckpt.is_file() and os.path.samefile(last, ckpt)):
            raise ValueError(f"{out} holds another run ({', '.join(holds_run(out))}); continuing {ckpt} there "
                             f"would write over it: choose another --out")
        return out, ckpt
    if args.resume == "auto":
        out = Path(args.out) if args.out else Path("runs") / f"x{scale}"
        claim(out, lock)
        ckpt = out / "last.npz"
        if ckpt.is_file():
            return out, ckpt
        if holds_run(out):
            raise ValueError(f"{out} holds a run ({', '.join(holds_run(out))}) but no last.npz to continue: "
                             f"start afresh with --overwrite (without --resume), or train into another --out")
        say(f"no checkpoint at {ckpt}: starting from scratch")
        return out, None
    if args.out is None:
        return free_out(scale, lock, say), None
    out = Path(args.out)
    claim(out, lock)
    found = holds_run(out)
    if found and not args.overwrite:
        raise ValueError(f"{out} holds a training run ({', '.join(found)}): continue it with --resume auto, "
                         f"train into another --out, or start afresh with --overwrite (deletes it)")
    return out, None


def make_ready(out: Path, overwrite: bool) -> None:
    """Rank 0, before the patches: ``out`` made, the temporaries of a run killed while writing its
    files removed, and with ``--overwrite`` the previous run's :data:`RUN_FILES` deleted."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.npz", "best.npz"):  # left by a run killed while writing them
        remove_stale_temporaries(out, ".npz.tmp", name=name)
    remove_stale_temporaries(out, ".tmp", name="log.jsonl")
    if overwrite:
        with signals_deferred():
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
