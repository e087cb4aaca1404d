"""SRCNN inference on Dask: one image larger than memory, chunk by chunk, and many images over a cluster.

**One huge image** (:func:`enlarge_dask`, :func:`enlarge_zarr`, ``python -m tinysr.distributed.dask``):
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

Optional extra: ``pip install 'tinysr[dask]'`` (dask[array], distributed, zarr).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from tinysr.atomic import remove_stale_temporaries, temporary_name
from tinysr.image.enlarge import KINDS, array_kind, enlarge_tile, input_window, output_tiles
from tinysr.image.inference import restore_piece
from tinysr.image.jobs import enlarge_job
from tinysr.protocol.imresize import WindowedImresize
from tinysr.nn.model import SRCNN
from tinysr.ops.backend import BackendError, backend_name, resolve_backend, to_numpy

PROG = "python -m tinysr.distributed.dask"
# Environment of local worker processes: one BLAS thread each. Dask's default
# MALLOC_TRIM_THRESHOLD_ is deliberately not set: it makes every large temporary a fresh mmap
# (page faults on every image; bench/RESULTS.md).
WORKER_ENV = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
CONNECT_TIMEOUT = "10s"  # how long to try reaching a --scheduler ADDRESS
DEFAULT_CHUNK = 2048  # output pixels per chunk edge: ~0.45 GiB working set for 9-1-5 in float32 (26 floats/pixel)
MIN_CHUNK = 16  # smaller output chunks would mostly recompute their halos


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

    ``chunk``: output chunk edge in pixels (default: ``scale`` times ``src``'s row chunks, at most
    :data:`DEFAULT_CHUNK`). Written like :func:`restore_zarr`: into a temporary folder beside ``dst``,
    renamed into place when complete; an existing ``dst`` is kept unless ``overwrite``.
    """
    da = _need("dask.array")
    src, dst = _check_paths(src, dst, overwrite)
    pixels = _open_zarr(da, src)
    try:
        array_kind(pixels.shape, pixels.dtype)  # checked here to name src in the message
    except ValueError as exc:
        raise ValueError(f"{src}: {exc}") from None
    chunk = chunk or min(DEFAULT_CHUNK, max(MIN_CHUNK, pixels.chunksize[0] * scale))
    return _write_zarr(enlarge_dask(model, pixels, scale, chunk), dst)


def _check_paths(src, dst, overwrite: bool) -> tuple[Path, Path]:
    _need("zarr")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ValueError(f"{src}: no such Zarr array")
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} exists (use --overwrite to replace it)")
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: output would overwrite its input")
    return src, dst


def _open_zarr(da, src: Path):
    try:
        return da.from_zarr(str(src))
    except Exception as exc:  # zarr raises several types for a folder that is not an array
        raise ValueError(f"{src}: not a readable Zarr array ({type(exc).__name__}: {exc})") from None


def _write_zarr(arr, dst: Path) -> Path:
    """Compute ``arr`` chunk by chunk into a temporary Zarr folder beside ``dst``, then rename it into place."""
    remove_stale_folders(dst)
    tmp = temporary_name(dst)
    try:
        arr.to_zarr(str(tmp))
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _restore_block(block: np.ndarray, spec: dict) -> np.ndarray:
    """One haloed chunk ``(h, w)`` -> ``(h, w)`` in the model's dtype (the halo is trimmed by Dask)."""
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
        ``restore_y(model, y, tile=None)`` up to GEMM rounding.
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

    ``chunk``: chunk edge in pixels (default: ``src``'s own chunks). The result is written into a
    temporary folder beside ``dst`` and renamed into place when complete; an existing ``dst``
    is kept unless ``overwrite``. Runs on the current Dask scheduler (a ``Client`` if one is
    active, else threads in this process).
    """
    da = _need("dask.array")
    src, dst = _check_paths(src, dst, overwrite)
    y = _open_zarr(da, src)
    if y.ndim != 2 or not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"{src}: need a float (H, W) Y plane, got {y.dtype} {y.shape}")
    if chunk:
        y = y.rechunk(chunk)
    # Zarr needs regular chunks: undo Dask's merging of a last chunk narrower than the halo.
    return _write_zarr(restore_y_dask(model, y).rechunk(y.chunksize), dst)


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
        return distributed.Client(cluster)
    if "://" not in scheduler and ":" not in scheduler:  # e.g. an input folder taken as the ADDRESS
        raise ValueError(f"--scheduler {scheduler!r} is not a scheduler address like tcp://host:8786 "
                         "(for a local cluster put --scheduler after the inputs, or write --scheduler=local)")
    try:
        return distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None


def enlarge_jobs(jobs: list, model: SRCNN, opts, *, scheduler: str = "local", workers: int | None = None,
                 prog: str = "infer.py", say=print, already_failed: int = 0, total: int | None = None) -> int:
    """``infer.py --scheduler``: run the planned :class:`tinysr.image.jobs.Job` s on a Dask cluster
    with :class:`tinysr.image.jobs.Options` ``opts``; returns the exit status.

    Calls ``say(path)`` for each written path and prints each failure as one line (stderr) as
    tasks complete; 0 when every image succeeded (and ``already_failed`` is 0), 1 when some
    failed, 2 when the cluster cannot be used. ``total``: the image count for the summary line.
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

        _, errors = run_tasks(client, enlarge_one, jobs, spec, opts, report=report)
    finally:
        cluster = client.cluster if scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()
    failed = len(errors) + already_failed
    if failed:
        print(f"{prog}: {failed} of {total} images failed", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """``python -m tinysr.distributed.dask IN.zarr OUT.zarr -s 3``: enlarge a huge image chunk by chunk
    (:func:`enlarge_zarr`), or restore a huge float Y plane (:func:`restore_zarr`)."""
    from tinysr.cli.common import OneLineParser  # noqa: PLC0415
    from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415

    p = OneLineParser(prog=prog, description="Enlarge an image stored as Zarr, chunk by chunk, colour in and "
                      "colour out: an integer array (H, W, C), uint8 gray, gray+alpha, RGB or RGBA, or uint16 "
                      "gray, becomes (sH, sW, C). A float (H, W) array is taken as a bicubic-upscaled Y plane "
                      "on [0, 1] and only restored by the network.")
    p.add_argument("src", help="input Zarr array: an integer image (H, W[, C]), or a float Y plane (H, W)")
    p.add_argument("dst", help="output Zarr array (written complete, then renamed into place)")
    p.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), default=3,
                   help="enlargement factor; picks the bundled weights (default 3)")
    p.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled for --scale)")
    p.add_argument("--chunk", type=int, default=None,
                   help="output chunk edge in pixels (default: the input's chunks, times the scale for an image, "
                        f"at most {DEFAULT_CHUNK})")
    p.add_argument("--scheduler", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on the Dask scheduler at ADDRESS, or alone: on a local cluster "
                        "(default: threads in this process)")
    p.add_argument("--workers", type=int, default=None, help="workers of a local cluster (default: cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = p.parse_args(argv)
    client = None
    try:
        model = load_weights(Path(args.weights) if args.weights else bundled_path(args.scale))
        if args.chunk is not None and args.chunk < 2 * model.shrink:
            raise ValueError(f"--chunk must be at least {2 * model.shrink} pixels")
        if args.scheduler:
            client = connect(args.scheduler, args.workers)
        src, _ = _check_paths(args.src, args.dst, args.overwrite)
        if np.issubdtype(_open_zarr(_need("dask.array"), src).dtype, np.floating):
            print(restore_zarr(model, args.src, args.dst, chunk=args.chunk, overwrite=args.overwrite))
        else:
            print(enlarge_zarr(model, args.src, args.dst, args.scale, chunk=args.chunk, overwrite=args.overwrite))
        return 0
    except (ValueError, OSError, ImportError, BackendError) as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            cluster = client.cluster if args.scheduler == "local" else None
            client.close()
            if cluster is not None:
                cluster.close()


if __name__ == "__main__":  # a signal, even during the imports, ends it in one line (status 130)
    from tinysr.cli.entry import run

    run("tinysr.distributed.dask", PROG)

