"""SRCNN inference on Dask: one image larger than memory, chunk by chunk, and many images over a cluster.

**One huge image** (:func:`restore_y_dask`, :func:`restore_zarr`, ``python -m tinysr.distributed.dask``):
the bicubic-upscaled Y plane is a chunked ``dask.array`` ``(H, W)``. ``map_overlap`` with a
depth of ``model.shrink`` (the receptive-field radius: 6 pixels for 9-1-5, 8 for 9-5-5) and
``boundary="none"`` gives each chunk a halo of real neighbouring pixels on its inner sides and
*none* at the true image edges; the network then runs on the haloed chunk with its own
per-layer replicate padding, which at a true edge is exactly the padding the whole image gets,
and the halo is trimmed. So the result equals ``restore_y(model, y, tile=None)`` (to float
rounding of the GEMMs; the tests measure it). A plain ``nearest`` boundary would pad only the
input once, not every layer, and would not. Reading and writing stay chunked: Zarr in, Zarr out.

**Many images** (:func:`enlarge_jobs`, ``infer.py --scheduler [ADDRESS]``): one task per image
on a ``dask.distributed`` cluster, the weights sent once to every worker. Results are reported
as they complete; a task whose worker dies is run again elsewhere by the scheduler (up to its
``allowed-failures``, 3 by default), and an image that fails is reported without losing the
others. Workers read the inputs and write the outputs themselves (atomic PNG writes), so on a
cluster the paths must be visible to every worker (a shared filesystem).

Optional extra: ``pip install 'tinysr[dask]'`` (dask[array], distributed, zarr).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from tinysr.atomic import remove_stale_temporaries, temporary_name
from tinysr.image.inference import restore_piece
from tinysr.nn.model import SRCNN
from tinysr.ops.backend import BackendError, resolve_backend, to_numpy

PROG = "python -m tinysr.distributed.dask"
# Environment of local worker processes: one BLAS thread each. Dask's default
# MALLOC_TRIM_THRESHOLD_ is deliberately not set: it makes every large temporary a fresh mmap
# (page faults on every image; bench/RESULTS.md).
WORKER_ENV = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
CONNECT_TIMEOUT = "10s"  # how long to try reaching a --scheduler ADDRESS
DEFAULT_CHUNK = 2048  # output pixels per chunk edge: ~0.45 GiB working set for 9-1-5 in float32 (26 floats/pixel)


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
            "dtype": np.dtype(model.dtype).name, "backend": "numpy" if model.xp is np else "cupy"}


def model_from_spec(spec: dict) -> SRCNN:
    """Rebuild the model of :func:`model_spec` in this process (on its own device for CuPy)."""
    xp = resolve_backend(spec["backend"])
    return SRCNN.from_params(spec["config"], spec["params"], dtype=spec["dtype"], xp=xp)


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
    _need("zarr")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ValueError(f"{src}: no such Zarr array")
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} exists (use --overwrite to replace it)")
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: output would overwrite its input")
    try:
        y = da.from_zarr(str(src))
    except Exception as exc:  # zarr raises several types for a folder that is not an array
        raise ValueError(f"{src}: not a readable Zarr array ({type(exc).__name__}: {exc})") from None
    if y.ndim != 2 or not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"{src}: need a float (H, W) Y plane, got {y.dtype} {y.shape}")
    if chunk:
        y = y.rechunk(chunk)
    remove_stale_folders(dst)
    tmp = temporary_name(dst)
    try:
        # Zarr needs regular chunks: undo Dask's merging of a last chunk narrower than the halo.
        restore_y_dask(model, y).rechunk(y.chunksize).to_zarr(str(tmp))
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def remove_stale_folders(dst: Path) -> list[Path]:
    """Remove the temporary Zarr folders for ``dst`` whose writing process is gone (e.g. after
    ``kill -9``); returns what was removed."""
    return remove_stale_temporaries(dst.parent, name=dst.name, folders=True)


# -- many images over a cluster -----------------------------------------------------------------

def enlarge_one(job, spec: dict, opts) -> list[str]:
    """One image on a worker, as ``infer.py``'s loop does it (:func:`tinysr.cli.upscale.enlarge_job`):
    returns the written paths; ``ValueError``/``OSError`` on failure."""
    from tinysr.cli.upscale import enlarge_job  # noqa: PLC0415

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
    """``infer.py --scheduler``: run the planned :class:`tinysr.cli.upscale.Job` s on a Dask cluster
    with :class:`tinysr.cli.upscale.Options` ``opts``; returns the exit status.

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


def main(argv: list[str] | None = None) -> int:
    """``python -m tinysr.distributed.dask Y_IN.zarr Y_OUT.zarr``: restore a huge Y plane chunk by chunk."""
    from tinysr.cli.common import OneLineParser  # noqa: PLC0415
    from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415

    p = OneLineParser(prog=PROG, description="SRCNN on a Y plane stored as Zarr, chunk by chunk "
                      "(the input is the bicubic-upscaled Y on [0, 1], float, shape (H, W)).")
    p.add_argument("src", help="input Zarr array (H, W)")
    p.add_argument("dst", help="output Zarr array (written complete, then renamed into place)")
    p.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), default=3, help="picks the bundled weights")
    p.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled for --scale)")
    p.add_argument("--chunk", type=int, default=None, help="chunk edge in pixels (default: the input's chunks)")
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
        print(restore_zarr(model, args.src, args.dst, chunk=args.chunk, overwrite=args.overwrite))
        return 0
    except (ValueError, OSError, ImportError, BackendError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            cluster = client.cluster if args.scheduler == "local" else None
            client.close()
            if cluster is not None:
                cluster.close()


if __name__ == "__main__":
    sys.exit(main())

