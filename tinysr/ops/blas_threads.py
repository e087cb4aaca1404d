"""CPU worker threads: how many to use, BLAS kept to one thread inside them, and the split.

The CPU paths run their own worker threads: inference (:mod:`tinysr.ops.fused_predict`) on whole
blocks of pixels, training layers (:meth:`tinysr.ops.engine.Engine.over_batch`) on contiguous runs of
the batch (:func:`run_split`). Inside those threads BLAS must run single-threaded, or its own thread pool
and the workers fight for the same cores. A single-threaded BLAS also gives each GEMM the same
float operations whichever thread runs it, so the results do not depend on the worker count
(OpenBLAS's threaded GEMM rounds differently from its one-thread GEMM). NumPy offers
no way to set BLAS's thread count, so this module uses threadpoolctl, which finds the BLAS that
NumPy loaded (OpenBLAS, MKL, BLIS, under any symbol prefix) and calls its own setter.

BLAS's thread count is process-wide (OpenBLAS has no per-thread setting), so:

- a multi-threaded call (a prediction, a training layer's forward or backward) holds a lock from
  setting one BLAS thread to restoring the count, and a second one, from another thread, waits
  for it (each uses all its workers anyway);
- a BLAS call from another thread of the process in that time also runs on one thread;
- threadpoolctl lets one Python thread at a time control OpenBLAS; if another thread controls
  it (it set limits and is still running), the limit cannot be set, :func:`single_threaded_blas`
  says so and the call runs on one worker with BLAS as it is. On leaving, tinysr gives up
  control, so that calls from different threads each get it in turn.

Nothing here runs at import time; threadpoolctl scans the loaded libraries on first use.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

_lock = threading.Lock()
_here = threading.local()  # .inline: this thread is one worker of an enclosing split (see run_inline)


@functools.cache
def _controller():
    # The BLAS libraries loaded at the first call, NumPy's among them (tinysr imports NumPy before
    # it can predict). Cached: a scan costs about 1 ms, a prediction of one tile about 20.
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415  (deferred: a library scan)

    return ThreadpoolController().select(user_api="blas")


def blas_thread_counts() -> list[int | None]:
    """The thread count of each BLAS in :func:`_controller`, read from the library itself."""
    return [lib.get_num_threads() for lib in _controller().lib_controllers]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker threads for CPU inference: as many as BLAS would use on its own, at most the CPUs
    available. So ``OPENBLAS_NUM_THREADS=1`` (or ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``; Dask
    sets them to 1 in its workers) also keeps tinysr's inference on one core."""
    counts = [n for n in blas_thread_counts() if n]
    return max(1, min(max(counts, default=1), available_cpus()))


def _release_control() -> None:
    # threadpoolctl >= 3.6 remembers which thread controls OpenBLAS; let the next one take it.
    from threadpoolctl import OpenBLASController  # noqa: PLC0415

    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear()  # only acts if this thread is the controlling one


@contextmanager
def single_threaded_blas():
    """Run the body with NumPy's BLAS limited to one thread; yields whether that took effect.

    Holds a process-wide lock for the whole body (see the module), so keep the body to one
    prediction. Yields ``False``, with BLAS untouched, where another thread controls BLAS through
    threadpoolctl.
    """
    with _lock:
        limiter = _controller().limit(limits=1)
        try:
            yield all(n == 1 for n in blas_thread_counts() if n is not None)
        finally:
            limiter.restore_original_limits()
            _release_control()


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` as ``parts`` contiguous ``(start, stop)`` runs of near-equal length."""
    return [(n * k // parts, n * (k + 1) // parts) for k in range(parts)]


def run_spans(pool, fn, spans) -> None:
    """``fn(*span)`` for each span: the first on this thread, the others on ``pool``; re-raises.
    The workers run in a copy of this thread's context, so its ``np.errstate`` holds there too."""
    futures = [pool.submit(contextvars.copy_context().run, fn, *span) for span in spans[1:]]
    try:
        fn(*spans[0])
    finally:
        for f in futures:
            f.result()


def run_inline(fn, *args):
    """``fn(*args)`` as one worker of an enclosing split that holds :func:`single_threaded_blas`: a
    :func:`run_split` inside it runs on this thread alone (BLAS is one thread already; waiting for
    the lock its caller holds would never end). The numbers are those of one worker."""
    _here.inline = True
    try:
        return fn(*args)
    finally:
        _here.inline = False


def run_split(fn, n: int, workers: int | None = None) -> None:
    """``fn(lo, hi)`` over ``range(n)`` cut into one contiguous run per worker thread.

    ``workers``: threads (``None``: :func:`default_workers`). BLAS runs on one thread for the
    whole call (:func:`single_threaded_blas`), also with one worker, so that ``fn``'s GEMMs round
    the same way for any worker count; with ``workers=None`` where BLAS already runs on one
    thread, BLAS is left as it is. ``fn`` must write disjoint parts of its outputs per run and
    release the GIL in its heavy steps (NumPy's GEMMs and copies, tinysr's numba kernels do).
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if n <= 0:
        return
    if getattr(_here, "inline", False):
        fn(0, n)
        return
    threads = workers if workers is not None else default_workers()
    if workers is None and threads == 1:
        fn(0, n)
        return
    with single_threaded_blas() as limited:
        nw = min(threads, n) if limited else 1
        if nw == 1:
            fn(0, n)
        else:
            run_spans(worker_pool(nw - 1), fn, split(n, nw))


def worker_pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` worker threads, kept for the process (started on first use).

    Kept because a training step splits its work six times (a fresh pool per split costs a
    measurable part of a small-batch step). Callers run at most one batch of work on it at a time
    (they hold :func:`single_threaded_blas`'s lock), so a kept pool is never shared by two at once.
    """
    return _pool(threads, os.getpid())


@functools.cache
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    # Keyed by process id too: a child forked after the pool started has the pool object but
    # not its threads, so it makes its own.
    return ThreadPoolExecutor(threads, thread_name_prefix="tinysr-worker")
