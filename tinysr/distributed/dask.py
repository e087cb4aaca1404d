"""SRCNN inference on Dask: one image larger than memory, chunk by chunk, and many images over a cluster.

**One huge image** (:func:`enlarge_dask`, :func:`enlarge_zarr`, ``python -m tinysr.distributed.dask``,
whose command line is :mod:`tinysr.cli.dask`):
the integer image ``(H, W, C)`` (uint8 gray, gray + alpha, RGB, RGBA; uint16 gray) is a chunked
``dask.array``, typically read from Zarr. Each output chunk is one task running
:func:`tinysr.image.enlarge.enlarge_tile` (the colour conversion, the Matlab bicubic, the network on
Y, back to the integer output) on exactly the input pixels it reads, its halo included, which Dask
reads from the input's chunks. So the result equals ``tinysr upscale`` with ``--tile`` set to the
chunk edge, bit for bit, and nothing image-sized is held: Zarr in, Zarr out, written chunk by chunk.

**A Y plane** (:func:`restore_y_dask`, :func:`restore_zarr`; the same command on a float ``(H, W)``
Zarr array): the paper's Y step alone on an already upscaled Y plane. ``map_overlap`` with a depth of
``model.shrink`` (6 pixels for 9-1-5, 8 for 9-5-5) and ``boundary="none"`` gives each chunk a halo
of real neighbouring pixels on its inner sides and none at the true image edges, where the network's
own per-layer replicate padding is the whole image's; each chunk runs
:func:`tinysr.image.inference.restore_piece`. The result equals ``restore_y(model, y, tile=None)``
to float rounding of the GEMMs.

**Many images** (:func:`enlarge_jobs`, ``infer.py --scheduler [ADDRESS]``): one task per image
(:func:`tinysr.image.jobs.enlarge_job`) on a ``dask.distributed`` cluster, the weights sent once to
every worker. Results are reported as they complete; a task whose worker dies is run again
elsewhere by the scheduler (up to its ``allowed-failures``, 3 by default), and an image that fails
is reported without losing the others. Workers read the inputs and write the outputs themselves
(atomic writes), so on a cluster the paths must be visible to every worker (a shared filesystem).

**Safety** (the Zarr path): the input is read through :class:`ZarrInput` in blocks of whole stored
chunks, at least :data:`MIN_READ` pixels a side (1-pixel chunks would make a task per pixel); a
corrupt chunk or a NaN/infinite Y plane is a ``ValueError`` naming the input and the chunk. The
output is never the input, inside it, or a folder holding it. It is written beside its target and
marked (attribute :data:`MARK`); ``overwrite`` replaces only an array carrying that mark and nothing
else (never a folder of photos), by an atomic exchange of the two folders, then removing the old:
an interruption at any moment leaves the old array or the new one, complete.

Optional extra: ``pip install 'tinysr[dask]'`` (dask[array], distributed, zarr).
"""

from __future__ import annotations

PROG = "python -m tinysr.distributed.dask"

if __name__ == "__main__":  # the command (tinysr.cli.dask), under this module's name; a signal, even during
    from tinysr.cli.entry import run  # the imports, ends it in one line (status 130)

    run("tinysr.cli.dask", PROG)

import ctypes
import errno
import itertools
import logging
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tinysr.atomic import TMP_SUFFIX, remove_stale_temporaries, temporary_name
from tinysr.errors import NoSuchFile
from tinysr.image.enlarge import KINDS, array_kind, enlarge_tile, input_window, output_tiles
from tinysr.image.inference import restore_piece
from tinysr.image.jobs import enlarge_job
from tinysr.protocol.imresize import WindowedImresize
from tinysr.nn.model import SRCNN
from tinysr.ops.backend import backend_name, resolve_backend, to_numpy

# Environment of local worker processes: one BLAS thread each. Dask's default
# MALLOC_TRIM_THRESHOLD_ is deliberately not set: it makes every large temporary a fresh mmap
# (page faults on every image; bench/RESULTS.md).
WORKER_ENV = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
CONNECT_TIMEOUT = "10s"  # how long to try reaching a --scheduler ADDRESS
DEFAULT_CHUNK = 2048  # output pixels per chunk edge: ~0.45 GiB working set for 9-1-5 in float32 (26 floats/pixel)
MIN_CHUNK = 16  # smaller output chunks would mostly recompute their halos
MIN_READ = 256  # input pixels per read block edge: tinier stored chunks are read several at once
LATE_WRITES = 3  # times the temporary is removed again, 0.1 s apart, after an error or interruption
MARK = "tinysr"  # attribute of every Zarr array written here; --overwrite replaces only such an array
# What a Zarr array's folder holds (v2 and v3 metadata, v3's chunk folder "c", v2 chunk keys)
_ZARR_ENTRY = re.compile(r"^(zarr\.json|\.zarray|\.zattrs|\.zgroup|\.zmetadata|c|\d+([./]\d+)*)$")


def _need(what: str):
    """Import an optional Dask module or raise ImportError with the install hint."""
    import importlib  # noqa: PLC0415

    try:
        return importlib.import_module(what)
    except ImportError as exc:
        raise ImportError(f"this needs the dask extra: pip install 'tinysr[dask]' ({exc})") from None


def model_spec(model: SRCNN) -> dict:
    """A small picklable description of ``model`` (config, host weights, dtype, backend) for workers."""
    return {"config": dict(model.config), "params": {k: to_numpy(v) for k, v in model.params.items()},
            "dtype": np.dtype(model.dtype).name, "backend": backend_name(model.xp)}


def model_from_spec(spec: dict) -> SRCNN:
    """Rebuild the model of :func:`model_spec` in this process (on its own device for CuPy)."""
    xp = resolve_backend(spec["backend"])
    return SRCNN.from_params(spec["config"], spec["params"], dtype=spec["dtype"], xp=xp)


def _enlarge_chunk(window: np.ndarray, kind: str, spec: dict, resizer: WindowedImresize, rows: tuple,
                   cols: tuple) -> np.ndarray:
    """One output chunk on a worker: :func:`tinysr.image.enlarge.enlarge_tile` on its input window."""
    return enlarge_tile(window, kind, model_from_spec(spec), resizer, rows, cols)[0]


def enlarge_dask(model: SRCNN, pixels, scale: int, chunk: int = DEFAULT_CHUNK):
    """Enlarge an integer image by ``scale``, lazily, one output chunk per task.

    Args:
        model: any SRCNN (its weights are shipped to the workers).
        pixels: ``(H, W)`` or ``(H, W, C)`` uint8 (C = 1, 2, 3, 4: gray, gray + alpha, RGB, RGBA) or
            uint16 grayscale, a ``dask.array`` (or array-like, then chunked by ``chunk``).
        scale: positive integer enlargement factor.
        chunk: output chunk edge in pixels (at least :data:`MIN_CHUNK`).

    Returns:
        ``(scale*H, scale*W, C)`` ``dask.array`` of ``pixels``' dtype in ``chunk x chunk x C`` chunks,
        equal bit for bit to :func:`tinysr.image.enlarge.enlarge` with ``tile=chunk``.
    """
    da, dask = _need("dask.array"), _need("dask")
    kind = array_kind(pixels.shape, pixels.dtype)
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < MIN_CHUNK:
        raise ValueError(f"chunk must be at least {MIN_CHUNK} pixels, got {chunk!r}")
    if not isinstance(pixels, da.Array):
        pixels = da.from_array(np.asarray(pixels), chunks=chunk)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels, dtype, _ = KINDS[kind]
    resizer = WindowedImresize(pixels.shape[:2], float(scale))
    spec, plan = dask.delayed(model_spec(model)), dask.delayed(resizer)  # one key each, shared by the tasks
    run = dask.delayed(_enlarge_chunk, pure=True)
    tiles = output_tiles(resizer, chunk, model.shrink)
    per_row = len({cols for _, cols in tiles})
    blocks = [da.from_delayed(run(pixels[input_window(resizer, rows, cols)], kind, spec, plan, rows, cols),
                              shape=(rows[1] - rows[0], cols[1] - cols[0], channels), dtype=dtype)
              for rows, cols in tiles]
    return da.block([[[b] for b in blocks[i:i + per_row]] for i in range(0, len(blocks), per_row)])  # rows, cols, C


def enlarge_zarr(model: SRCNN, src, dst, scale: int, chunk: int | None = None, overwrite: bool = False) -> Path:
    """Read an integer image ``(H, W[, C])`` from the Zarr array ``src``, enlarge it by ``scale`` chunk
    by chunk (:func:`enlarge_dask`), write the ``(s*H, s*W, C)`` Zarr array ``dst``.

    ``chunk``: output chunk edge in pixels (default: ``scale`` times the rows of ``src``'s read
    blocks (:func:`read_zarr`), at most :data:`DEFAULT_CHUNK`). Written like :func:`restore_zarr`:
    into a temporary folder beside ``dst``, then put in its place in one step; an existing ``dst``
    is kept unless ``overwrite``, and even then only a Zarr array written here is replaced.
    """
    src, dst = _check_paths(src, dst, overwrite)
    pixels = read_zarr(src)
    try:
        array_kind(pixels.shape, pixels.dtype)  # checked here to name src in the message
    except ValueError as exc:
        raise ValueError(f"{src}: {exc}") from None
    chunk = chunk or min(DEFAULT_CHUNK, max(MIN_CHUNK, pixels.chunksize[0] * scale))
    return _write_zarr(enlarge_dask(model, pixels, scale, chunk), dst, overwrite,
                       {"made_by": PROG, "input": "image", "scale": int(scale)})


def _check_paths(src, dst, overwrite: bool) -> tuple[Path, Path]:
    """``ValueError`` unless ``src`` exists and ``dst`` may be written: not ``src``, not inside it, not
    a folder holding it, and, if something is there, ``overwrite`` and a Zarr array written here."""
    _need("zarr")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise NoSuchFile(f"{src}: no such Zarr array")
    real_src, real_dst = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if real_dst == real_src:
        raise ValueError(f"{dst}: output would overwrite its input")
    if real_dst.is_relative_to(real_src):
        raise ValueError(f"{dst}: output would be inside the input {src}; choose a path outside it")
    if real_src.is_relative_to(real_dst):
        raise ValueError(f"{dst}: output would replace a folder holding the input {src}; choose another path")
    if os.path.lexists(dst):
        if not overwrite:
            raise _exists(dst)
        _check_replaceable(dst)
    return src, dst


def _exists(dst: Path) -> ValueError:
    return ValueError(f"{dst} exists (use --overwrite to replace it)")


def _check_replaceable(dst: Path) -> None:
    """``ValueError`` unless ``dst`` is a Zarr array this module wrote (its :data:`MARK` attribute)
    and holds nothing else: no folder of photos, no array of someone else's is ever removed."""
    why = None
    if dst.is_symlink() or not dst.is_dir():
        why = "a symbolic link" if dst.is_symlink() else "not a folder"
    else:
        foreign = sorted(e for e in os.listdir(dst) if not _ZARR_ENTRY.match(e))
        if foreign:
            why = f"it holds {foreign[0]!r}, which is not part of a Zarr array"
        else:
            try:
                marked = isinstance(_need("zarr").open_array(str(dst), mode="r").attrs.get(MARK), dict)
            except Exception:  # zarr raises several types for a folder that is not an array
                marked = None
            if not marked:
                why = "not a Zarr array" if marked is None else f"a Zarr array {PROG} did not write"
    if why:
        raise ValueError(f"{dst}: not replaced: {why}; --overwrite replaces only an output of {PROG} "
                         "(choose another output, or remove it yourself)")


def _where(key) -> str:
    """``(slice(0, 8), slice(16, 24), ...)`` -> ``"rows 0..7, columns 16..23"``."""
    names = ("rows", "columns")
    parts = [f"{n} {k.start or 0}..{k.stop - 1}" for n, k in zip(names, key)
             if isinstance(k, slice) and k.stop is not None]
    return ", ".join(parts) or "its chunks"


class ZarrInput:
    """A Zarr array as Dask reads it, block by block (``self[key]``, ``key`` a tuple of slices): a
    stored chunk that cannot be read or decoded (corrupt, truncated) is a ``ValueError`` naming
    ``path`` and the chunk's rows and columns, and so is a float block holding NaN or infinity (a
    Y plane must be finite, on [0, 1])."""

    def __init__(self, path: Path, array):
        self.path, self.array = path, array
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), len(array.shape)

    def __getitem__(self, key):
        try:
            block = np.asarray(self.array[key])
        except MemoryError:
            raise
        except Exception as exc:  # the codecs and stores raise many types
            raise self._find_bad_chunk(key) or self._unreadable(key, exc) from None
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise ValueError(f"{self.path}: NaN or infinite values in {_where(key)}; "
                             "a Y plane must hold finite values on [0, 1]")
        return block

    def _unreadable(self, key, exc: Exception) -> ValueError:
        return ValueError(f"{self.path}: cannot read the chunk at {_where(key)} ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())})")

    def _find_bad_chunk(self, key) -> ValueError | None:
        """The error of the first stored chunk of block ``key`` that fails when read alone (one
        at a time: Zarr's reads of the other chunks are let finish, none left pending at exit)."""
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != self.ndim or not all(isinstance(k, slice) for k in key):
            return None
        spans = [k.indices(n)[:2] for k, n in zip(key, self.shape)]
        pieces = [[(max(a, c), min(b, c + step)) for c in range(a - a % step, b, step)]
                  for (a, b), step in zip(spans, self.array.chunks)]
        for piece in itertools.product(*pieces):
            one = tuple(slice(lo, hi) for lo, hi in piece)
            try:
                self.array[one]
            except MemoryError:
                raise
            except Exception as exc:
                return self._unreadable(one, exc)
        return None


def read_chunks(stored: tuple, shape: tuple) -> tuple:
    """Read blocks for a Zarr array of ``shape`` stored in ``stored`` chunks: whole stored chunks, at
    least :data:`MIN_READ` pixels along rows and columns where the image has them, every channel.
    Tiny stored chunks (1 pixel) would otherwise make one task each, and minutes of scheduling."""
    blocks = []
    for axis, (c, n) in enumerate(zip(stored, shape)):
        if axis >= 2:
            blocks.append(n)
        else:
            blocks.append(min(n, -(-MIN_READ // c) * c) if c < MIN_READ else c)
    return tuple(max(1, b) for b in blocks)


def read_zarr(src):
    """The Zarr array ``src`` as a ``dask.array`` read through :class:`ZarrInput`, in
    :func:`read_chunks` blocks. ``ValueError`` naming ``src`` if it is not a readable Zarr array."""
    da, zarr = _need("dask.array"), _need("zarr")
    src = Path(src)
    try:
        z = zarr.open_array(str(src), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not an array
        raise ValueError(f"{src}: not a readable Zarr array ({type(exc).__name__}: {exc})") from None
    return da.from_array(ZarrInput(src, z), chunks=read_chunks(z.chunks, z.shape), asarray=False, fancy=False)


def _write_zarr(arr, dst: Path, overwrite: bool, mark: dict) -> Path:
    """Compute ``arr`` chunk by chunk into a temporary Zarr folder beside ``dst``, mark it as written
    here (attribute :data:`MARK`), then put it in ``dst``'s place in one step: a new name taken only
    if it is free; an existing ``dst`` (checked again: it may have changed meanwhile) exchanged
    with the new array atomically and removed after. An interruption at any moment leaves ``dst``
    either the old array or the new one, complete; a temporary left by ``kill -9`` is removed by
    the next run (:func:`remove_stale_folders`)."""
    remove_stale_folders(dst)
    tmp = temporary_name(dst)
    try:
        _store(arr, tmp)
        _need("zarr").open_array(str(tmp), mode="r+").attrs[MARK] = mark
        if os.path.lexists(dst):
            if not overwrite:
                raise _exists(dst)
            _check_replaceable(dst)
            swap_folders(tmp, dst)  # tmp now holds the old array, removed below
        else:
            _rename_noreplace(tmp, dst)
    except BaseException:
        for _ in range(LATE_WRITES):  # Zarr's I/O thread may finish a write the interrupted call began
            shutil.rmtree(tmp, ignore_errors=True)
            time.sleep(0.1)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _store(arr, tmp: Path) -> None:
    """``arr.to_zarr(tmp)``. On Dask's default scheduler (threads of this process) the tasks run in
    a pool of their own, shut down before this returns or raises: after an error or Ctrl-C no
    thread still writes a chunk into ``tmp`` while it is removed. (On a cluster a worker may
    finish a chunk after that; the next run removes such a temporary, its writer gone.)"""
    dask = _need("dask")
    if dask.base.get_scheduler(collections=[arr]) is not _need("dask.threaded").get:
        arr.to_zarr(str(tmp))
        return
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        with dask.config.set(pool=pool):
            arr.to_zarr(str(tmp))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_AT_FDCWD, _RENAME_NOREPLACE, _RENAME_EXCHANGE = -100, 1, 2


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """Linux ``renameat2(a, b, flags)``; False where the C library or the file system lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _rename_noreplace(tmp: Path, dst: Path) -> None:
    """Give ``tmp`` the name ``dst`` only if the name is free (else ``ValueError``)."""
    try:
        if _renameat2(tmp, dst, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise _exists(dst) from None
    if os.path.lexists(dst):  # without renameat2: a name taken meanwhile is still refused
        raise _exists(dst)
    os.rename(tmp, dst)


def swap_folders(new: Path, old: Path) -> None:
    """Exchange the folders ``new`` and ``old``: afterwards ``old``'s name holds the new array and
    ``new``'s name the old one. One atomic ``renameat2(RENAME_EXCHANGE)`` where Linux and the file
    system have it; elsewhere two renames, the first undone if the second fails or is
    interrupted, so ``old``'s name always holds one complete array (only ``kill -9`` between
    them leaves the old array under the name ``.<name>.<pid>.<random>.old`` beside it)."""
    if _renameat2(new, old, _RENAME_EXCHANGE):
        return
    aside = Path(str(temporary_name(old))[:-len(TMP_SUFFIX)] + ".old")
    os.rename(old, aside)
    try:
        os.rename(new, old)
    except BaseException:
        os.rename(aside, old)
        raise
    os.rename(aside, new)


def _restore_block(block: np.ndarray, spec: dict) -> np.ndarray:
    """One haloed chunk ``(h, w)`` -> ``(h, w)`` in the model's dtype (the halo is trimmed by Dask);
    ``ValueError`` if it holds NaN or infinity (the network would spread it over its neighbours)."""
    if not np.isfinite(block).all():
        raise ValueError("the Y plane holds NaN or infinite values; it must be finite, on [0, 1]")
    return restore_piece(model_from_spec(spec), block).astype(spec["dtype"])


def restore_y_dask(model: SRCNN, y):
    """SRCNN on a chunked Y plane, lazily.

    Args:
        model: any SRCNN (its weights are shipped to the workers).
        y: ``(H, W)`` ``dask.array`` (or array-like, then chunked by :data:`DEFAULT_CHUNK`), the
            bicubic-upscaled Y on [0, 1]. Chunks smaller than ``model.shrink`` are merged by Dask.

    Returns:
        ``(H, W)`` ``dask.array`` in the model's dtype (float32 by default), unclipped, with
        ``y``'s chunks (a chunk narrower than the halo merged into its neighbour); equal to
        ``restore_y(model, y, tile=None)`` up to GEMM rounding. Computing it raises ``ValueError``
        where ``y`` holds NaN or infinity.
    """
    da = _need("dask.array")
    if not isinstance(y, da.Array):
        y = da.from_array(np.asarray(y), chunks=DEFAULT_CHUNK)
    if y.ndim != 2:
        raise ValueError(f"restore_y_dask expects an (H, W) Y plane, got shape {y.shape}")
    spec = model_spec(model)
    return y.map_overlap(_restore_block, depth=model.shrink, boundary="none", trim=True,
                         dtype=spec["dtype"], meta=np.empty((0, 0), dtype=spec["dtype"]), spec=spec)


def restore_zarr(model: SRCNN, src, dst, chunk: int | None = None, overwrite: bool = False) -> Path:
    """Read a Y plane ``(H, W)`` from the Zarr array ``src``, restore it chunk by chunk, write Zarr ``dst``.

    ``chunk``: chunk edge in pixels (default: ``src``'s read blocks, :func:`read_chunks`: its own
    chunks, several at once where they are tiny). A NaN or infinite value is a ``ValueError``
    naming ``src``. The result is written like :func:`enlarge_zarr`'s (:func:`_write_zarr`): into
    a temporary folder beside ``dst``, put in place in one step when complete; an existing ``dst``
    is kept unless ``overwrite``, and even then only a Zarr array written here is replaced. Runs on
    the current Dask scheduler (a ``Client`` if one is active, else threads in this process).
    """
    src, dst = _check_paths(src, dst, overwrite)
    y = read_zarr(src)
    if y.ndim != 2 or not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"{src}: need a float (H, W) Y plane, got {y.dtype} {y.shape}")
    if chunk:
        y = y.rechunk(chunk)
    # Zarr needs regular chunks: undo Dask's merging of a last chunk narrower than the halo.
    return _write_zarr(restore_y_dask(model, y).rechunk(y.chunksize), dst, overwrite,
                       {"made_by": PROG, "input": "Y plane"})


def remove_stale_folders(dst: Path) -> list[Path]:
    """Remove the temporary Zarr folders for ``dst`` whose writing process is gone (e.g. after
    ``kill -9``); returns what was removed."""
    return remove_stale_temporaries(dst.parent, name=dst.name, folders=True)


# -- many images over a cluster -----------------------------------------------------------------

def enlarge_one(job, spec: dict, opts) -> list[str]:
    """One image on a worker, as ``infer.py``'s loop does it (:func:`tinysr.image.jobs.enlarge_job`):
    returns the written paths; ``ValueError``/``OSError`` on failure."""
    return [str(p) for p in enlarge_job(job, model_from_spec(spec), opts)]


def run_tasks(client, fn, items: list, *args, report=None) -> tuple[dict, dict]:
    """Run ``fn(item, *args)`` for every item on ``client``'s cluster, one task each.

    Returns ``(results, errors)``: item -> result, item -> one-line message. ``report(item,
    result, error)`` is called as each task completes (completion order). At most one task per
    worker thread is in flight (the next is submitted as one completes), so a worker that dies
    takes down only the task it was running, which the scheduler reruns elsewhere; after
    ``distributed.scheduler.allowed-failures`` deaths (3 by default) that task is reported as an
    error. The other items' results are kept either way, and a huge list is never queued at once.
    """
    distributed = _need("distributed")
    todo = list(items)[::-1]
    slots = max(1, sum(client.nthreads().values()))
    futures = {}
    running = distributed.as_completed()

    def submit_next():
        if todo:
            item = todo.pop()
            fut = client.submit(fn, item, *args, pure=False)
            futures[fut] = item
            running.add(fut)

    for _ in range(slots):
        submit_next()
    results, errors = {}, {}
    for fut in running:
        item = futures.pop(fut)
        submit_next()
        try:
            results[item] = fut.result()
        except (ValueError, OSError, MemoryError) as exc:
            errors[item] = " ".join(str(exc).split())
        except distributed.KilledWorker:
            errors[item] = f"{item}: the worker running it died each time it was tried; not retried further"
        except Exception as exc:  # anything else raised in the task: name it, keep going
            errors[item] = f"{item}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        if report:
            report(item, results.get(item), errors.get(item))
    return results, errors


def _not_compute_failed(record: logging.LogRecord) -> bool:
    """Logging filter: False for a worker's "Compute Failed" record (the task's traceback)."""
    return not str(record.msg).startswith("Compute Failed")


def _quiet_task_errors(distributed):
    """A worker plugin that drops each worker's "Compute Failed" log record, a block with the
    failing task's traceback: tinysr reports each failing task in one line itself. Only for the
    local cluster, whose workers write on this process's stderr; a shared cluster's logging is
    its owner's. Registered on the scheduler, so a restarted worker gets it too."""

    class QuietTaskErrors(distributed.WorkerPlugin):
        name = "tinysr-quiet-task-errors"
        idempotent = True

        def setup(self, worker):
            logging.getLogger("distributed.worker").addFilter(_not_compute_failed)

    return QuietTaskErrors()


def connect(scheduler: str, workers: int | None = None):
    """A ``Client`` on the scheduler at ``scheduler`` (``tcp://host:8786``), or on a new local
    cluster of ``workers`` single-threaded worker processes (default: CPU count) for ``"local"``."""
    distributed = _need("distributed")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if scheduler == "local":
        n = workers or os.cpu_count() or 1
        with _need("dask").config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV}):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None)
        client = distributed.Client(cluster)
        client.register_plugin(_quiet_task_errors(distributed))  # its workers print on our stderr
        return client
    if "://" not in scheduler and ":" not in scheduler:  # e.g. an input folder taken as the ADDRESS
        raise ValueError(f"--scheduler {scheduler!r} is not a scheduler address like tcp://host:8786 "
                         "(for a local cluster put --scheduler after the inputs, or write --scheduler=local)")
    try:
        return distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None


def enlarge_jobs(jobs: list, model: SRCNN, opts, *, scheduler: str = "local", workers: int | None = None,
                 prog: str = "infer.py", say=print, already_failed: int = 0, total: int | None = None,
                 count=None, finish=None) -> int:
    """``infer.py --scheduler``: run the planned :class:`tinysr.image.jobs.Job` s on a Dask cluster
    with :class:`tinysr.image.jobs.Options` ``opts``; returns the exit status.

    Calls ``say(path)`` for each written path and prints each failure as one line (stderr) as
    tasks complete; 0 when every image succeeded (and ``already_failed`` is 0), 1 when some
    failed, 2 when the cluster cannot be used. ``total``: the image count for the summary line.
    ``count(paths)``: called with each image's written paths (``[]``: skipped, ``opts.skip_existing``);
    ``finish(failed)``: prints the caller's summary and returns the exit status, instead of the line here.
    """
    total = len(jobs) + already_failed if total is None else total
    try:
        client = connect(scheduler, workers)
    except (ImportError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        spec = client.scatter(model_spec(model), broadcast=True)  # the weights travel once per worker

        def report(item, result, error):
            if error:
                print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
            else:
                for path in result:
                    say(path)
                if count is not None:
                    count(result)

        _, errors = run_tasks(client, enlarge_one, jobs, spec, opts, report=report)
    finally:
        cluster = client.cluster if scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()
    failed = len(errors) + already_failed
    if finish is not None:
        return finish(failed)
    if failed:
        print(f"{prog}: {failed} of {total} images failed", file=sys.stderr)
        return 1
    return 0
