"""CPU threads for inference: how many to use, and BLAS kept to one thread inside them.

The CPU inference path (:mod:`tinysr.fused_predict`) runs its own worker threads, each doing
whole blocks of pixels: unfold, three GEMMs, bias + ReLU. Inside those threads BLAS must run
single-threaded, or its own thread pool and the workers fight for the same cores. NumPy offers
no way to set BLAS's thread count, so this module uses threadpoolctl, which finds the BLAS that
NumPy loaded (OpenBLAS, MKL, BLIS, under any symbol prefix) and calls its own setter.

BLAS's thread count is process-wide (OpenBLAS has no per-thread setting), so:

- a multi-threaded prediction holds a lock from setting one BLAS thread to restoring the count,
  and a second one, from another thread, waits for it (each uses all its workers anyway);
- a BLAS call from another thread of the process in that time also runs on one thread;
- threadpoolctl lets one Python thread at a time control OpenBLAS; if another thread controls
  it (it set limits and is still running), the limit cannot be set, :func:`single_threaded_blas`
  says so and the prediction runs on one worker with BLAS as it is. On leaving, tinysr gives up
  control, so that predictions from different threads each get it in turn.

Nothing here runs at import time; threadpoolctl scans the loaded libraries on first use.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager

_lock = threading.Lock()


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
