"""How the network runs, never what it computes: the one place for threads, kept arrays and fast paths.

An :class:`Engine` is given to a model (``SRCNN(engine=...)`` or ``model.engine = ...``, which
hands it to the layers) and configured once:

- ``workers``: CPU threads. Training layers split the batch into one contiguous run of samples per
  thread (:meth:`Engine.over_batch`), BLAS single-threaded inside them, each GEMM per sample and the
  batch reductions after the threads in a fixed order, so the numbers do not depend on the count.
- ``workspace``: a :class:`tinysr.ops.workspace.Workspace` whose arrays the layers reuse from one call
  to the next (:meth:`Engine.empty`); ``None``: new arrays every call.
- ``step_bytes``: a worker walks its samples in steps of about this many bytes of working set, so
  that a step's unfolded input and output stay in the core's L2 cache.
- :meth:`Engine.predict`: the fastest way to run a trained network on one image (the cache-blocked
  CPU path of :mod:`tinysr.ops.fused_predict`, the fused CUDA kernels, or the layers).
- :meth:`Engine.over_tiles`: the tiles of one enlargement, several at once on CPU threads.
- ``profile``: a :class:`PassProfile` that the layers' algorithms report each part's time to
  (``bench/train_passes.py``); ``None`` (the default): nothing is timed.

None of these changes a result bit; the GPU runs every call on the whole batch.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from tinysr.ops.backend import array_device
from tinysr.ops.blas_threads import default_workers, run_inline, run_split, single_threaded_blas, worker_pool

STEP_BYTES = 1 << 20  # a training worker's step: its unfolded input and output stay in a core's L2
BLOCK = 4096  # pixels per block of the fused CPU inference: h1 (64 x 4096 float32 = 1 MiB) stays in L2


class Engine:
    """Run settings for a model's layers and predictions (see the module)."""

    def __init__(self, workers: int | None = None, workspace=None, step_bytes: int = STEP_BYTES,
                 block: int = BLOCK):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.workspace, self.step_bytes, self.block = workers, workspace, step_bytes, block
        self.profile = None  # a PassProfile while one is being taken

    def empty(self, owner, name: str, shape: tuple, dtype, xp, keep: bool = True):
        """An uninitialised array for ``owner``'s ``name``: kept in the workspace where there is one
        and ``keep`` (training; inference arrays are never kept)."""
        if self.workspace is None or not keep:
            return xp.empty(shape, dtype=dtype)
        return self.workspace.empty(owner, name, shape, dtype, xp)

    def over_batch(self, step, n: int, sample_bytes: int, prim) -> None:
        """``step(s)`` over the samples ``0..n`` as slices ``s``; each call writes only its samples' rows.

        ``prim``: the primitives of the arrays' device (:class:`tinysr.ops.primitives.Primitives`).
        A device without host threads (the GPU): one call, ``s = slice(None)``. CPU: one contiguous run per worker thread, walked in
        steps of ``step_bytes`` (at least one sample); one sample with ``workers=None`` runs on the
        calling thread with BLAS as it is (a one-image inference through the layers).
        """
        if not prim.host_threads:
            step(slice(None))
            return
        per_step = max(1, self.step_bytes // max(1, sample_bytes))

        def run(lo, hi):
            for a in range(lo, hi, per_step):
                step(slice(a, min(a + per_step, hi)))

        if n == 1 and self.workers is None:
            step(slice(0, 1))
        else:
            run_split(run, n, self.workers)

    def over_tiles(self, run, n: int, prim, report) -> None:
        """``run(k)`` for the tiles ``k = 0..n-1`` of one image, each writing only its own part of the
        result; ``report(k + 1)`` on this thread after tile ``k`` is done, in order. ``prim``: the
        primitives of the model's device (``model.primitives``).

        CPU with more than one tile: ``workers`` tiles at once (``None``: :func:`default_workers`),
        each on one thread with BLAS single-threaded and the tile's network on that thread alone
        (:func:`tinysr.ops.blas_threads.run_inline`), so the numbers are those of one tile at a
        time. GPU, one tile, or one worker: in turn, each tile's network on ``workers`` threads.
        An exception (a signal, a failing ``report``) drops the tiles not yet started.
        """
        threads = 1 if not prim.host_threads or n < 2 else (self.workers or default_workers())
        if threads > 1:
            with single_threaded_blas() as limited:
                if limited:
                    futures = [worker_pool(min(threads, n)).submit(run_inline, run, k) for k in range(n)]
                    try:
                        for k, done in enumerate(futures, 1):
                            done.result()
                            report(k)
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
                    return
        for k in range(n):
            run(k)
            report(k + 1)

    # -- inference -----------------------------------------------------------------------------
    def streams(self, model) -> bool:
        """Whether :meth:`predict` runs ``model`` on the CPU in bounded memory (no tiles needed)."""
        from tinysr.ops import fused_predict  # noqa: PLC0415  (the fast paths load with their first use)

        return fused_predict.supports(model)

    def gpu_fused(self, model, h: int, w: int) -> bool:
        """Whether :meth:`predict` on CuPy runs an ``h x w`` image through the fused CUDA kernels."""
        from tinysr.ops import cuda_kernels  # noqa: PLC0415

        shapes = tuple(layer.weight.shape for layer in model.layers)
        return (len(shapes) == 3 and cuda_kernels.fused_supports(*shapes)
                and cuda_kernels.fused_fits_int32(h, w, shapes[-1][2]))

    def gpu_fused_bytes_per_pixel(self, model) -> int:
        """Device bytes per image pixel that :meth:`predict` holds where it runs the fused kernels."""
        from tinysr.ops import cuda_kernels  # noqa: PLC0415

        last = model.layers[-1].weight
        return cuda_kernels.fused_bytes_per_pixel(last.shape[2], last.dtype.itemsize)

    def predict(self, model, y):
        """``model`` on one Y image ``(H, W)`` in [0, 1] (its device and dtype) -> ``(H, W)``, replicate
        padding, unclipped. A 9-1-5-like network runs :func:`tinysr.ops.fused_predict.predict_fused` on
        the CPU (equal to the layers to float rounding, about twice as fast) or
        :func:`tinysr.ops.cuda_kernels.fused_predict` on the GPU (two launches); others the layers."""
        from tinysr.ops import cuda_kernels  # noqa: PLC0415
        from tinysr.ops import fused_predict

        if fused_predict.supports(model):
            return fused_predict.predict_fused(model, y, self)
        if array_device(y) == "cupy" and self.gpu_fused(model, *y.shape):  # the fused CUDA kernels take CuPy arrays
            xp = model.xp
            params = (xp.ascontiguousarray(a) for layer in model.layers for a in (layer.weight, layer.bias))
            return cuda_kernels.fused_predict(xp.ascontiguousarray(y), *params)
        return model.forward(y[None, None], padding="replicate", train=False)[0, 0]


class PassProfile:
    """Seconds per ``(owner, part)``, summed over calls and over the threads that ran them (two
    workers busy for 1 ms each add 2 ms): what :meth:`timed` reports while it is an engine's
    ``profile``. ``part`` names a pass's piece of work (``"gemm wgrad"``, ``"unfold"``, ...)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._lock = threading.Lock()

    def timed(self, owner, part: str, f, *args, **kwargs):
        """``f(*args, **kwargs)``, its wall time added to ``(owner, part)``."""
        t0 = time.perf_counter()
        out = f(*args, **kwargs)
        dt = time.perf_counter() - t0
        with self._lock:
            self.seconds[owner, part] += dt
        return out

    def clear(self) -> None:
        with self._lock:
            self.seconds.clear()
