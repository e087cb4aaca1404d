"""Data-parallel training over MPI (mpi4py): one process per rank, gradients averaged by allreduce.

How ``mpiexec -n N python train.py --distributed`` trains (``tinysr/cli/train.py`` and the epoch loop of
``tinysr/nn/training.py`` use this module):

- Every rank builds the model from the same seed, and rank 0's parameters and optimiser state
  are then broadcast (:meth:`MPIJob.bcast`), so all ranks start identical, after ``--resume`` too.
- Every rank draws the same global permutation from the seeded RNG. ``--batch-size B`` is the
  *global* batch: global step ``s`` takes ``perm[s*B:(s+1)*B]`` and rank ``r`` of ``N`` trains on
  its contiguous slice of ``B/N`` patches (:func:`shard_indices`).
- Each rank's gradient is normalised by its own batch ``B/N`` (Caffe loss ``sum/(2*batch)``), so
  the mean of the ``N`` rank gradients is the gradient of the whole global batch:
  :meth:`MPIJob.average` sums all parameters' gradients, views of one flat buffer, with one
  allreduce and divides by ``N``. N ranks therefore take the same steps as one process with
  the same ``B`` (up to float rounding of the sums).
- Rank 0 alone prints, evaluates and writes files.

Failures: every collective is non-blocking and polled (``MPI_Test``), so a rank that waits
longer than ``timeout`` seconds for the others (one died without the launcher noticing, or
hangs) prints one line and calls ``MPI_Abort``, which ends every rank; signals (Ctrl-C,
SIGTERM) are handled while waiting. A rank that hits an error calls :meth:`MPIJob.abort` after
printing it. A rank killed outright is noticed by ``mpiexec`` itself, which ends the job.

Gradient transport (:meth:`MPIJob.use_device` picks it, rank 0 prints which):

- NumPy: MPI on the host arrays, no copy beyond packing.
- CuPy with NCCL (``cupy.cuda.nccl``) on every rank: ``ncclAllReduce`` on the device buffer.
- CuPy with a CUDA-aware MPI on every rank (``MPIX_Query_cuda_support``, or
  ``TINYSR_MPI_CUDA_AWARE=1``): MPI on the device buffer, no host copy.
- CuPy otherwise: one device-to-host copy, MPI on the host, one copy back.

The device transports are not exercised by the test suite (it runs MPI on NumPy arrays).
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import sys
import time
import zlib

import numpy as np

from tinysr.nn.parallel import DEFAULT_TIMEOUT, SOLO, Solo, shard_indices  # the single-process contract, with the training loop
from tinysr.ops.backend import get_array_module

ABORT_GRACE = 0.5  # seconds between printing an error and MPI_Abort (see MPIJob.abort)


def init_mpi(timeout: float = DEFAULT_TIMEOUT, prog: str = "tinysr") -> MPIJob:
    """Start MPI (``mpi4py``) and return this process's :class:`MPIJob` on ``COMM_WORLD``.

    Raises ``ImportError`` with the install hint when mpi4py or an MPI library is missing.
    Run without ``mpiexec`` it is a job of one rank.
    """
    if not timeout > 0:
        raise ValueError(f"--dist-timeout must be positive, got {timeout}")
    try:
        from mpi4py import MPI  # noqa: PLC0415  (optional extra)
    except (ImportError, RuntimeError, OSError) as exc:
        raise ImportError(f"--distributed needs mpi4py and an MPI library: pip install 'tinysr[mpi]' ({exc})") from None
    return MPIJob(MPI, MPI.COMM_WORLD, timeout, prog)


class MPIJob(Solo):
    """One rank of an MPI job. All collectives poll with a deadline of ``timeout`` seconds."""

    def __init__(self, mpi, comm, timeout: float, prog: str):
        self.MPI = mpi
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = float(timeout)
        self.prog = prog
        self.transport = "MPI on host buffers"
        self._nccl = None
        self._flat = None  # packed gradient buffer, reused every step

    # -- waiting -----------------------------------------------------------------------------
    def _wait(self, done, what: str, patient: bool = False) -> None:
        """Poll ``done()`` until true; past the deadline (none if ``patient``) print one line and abort the job."""
        now = time.monotonic()
        deadline, spin = (math.inf if patient else now + self.timeout), now + 0.002
        while not done():
            now = time.monotonic()
            if now > deadline:
                print(f"{self.prog}: error: {self.tag}no reply from the other ranks within {self.timeout:g} s "
                      f"({what}): a rank died or hangs; aborting the job", file=sys.stderr, flush=True)
                self.abort(1)
            if now > spin:
                time.sleep(0.0005)

    def _mpi(self, request, what: str, patient: bool = False) -> None:
        self._wait(request.Test, what, patient)

    # -- collectives -------------------------------------------------------------------------
    def barrier(self, what: str = "barrier", patient: bool = False) -> None:
        self._mpi(self.comm.Ibarrier(), what, patient)

    def bcast(self, obj, what: str = "broadcast"):
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.is_root else b""
        n = np.array([len(data)], dtype=np.int64)
        self._mpi(self.comm.Ibcast(n, root=0), what)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.is_root else np.empty(int(n[0]), np.uint8)
        self._mpi(self.comm.Ibcast(buf, root=0), what)
        return obj if self.is_root else pickle.loads(buf.tobytes())

    def mean(self, value: float, what: str = "loss allreduce") -> float:
        buf = np.array([value], dtype=np.float64)
        self._mpi(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)
        return float(buf[0]) / self.size

    def _node_rank(self) -> int:
        """This rank's index among the ranks on its host (host names gathered, polled)."""
        key = np.array([zlib.crc32(self.MPI.Get_processor_name().encode())], dtype=np.int64)
        keys = np.empty(self.size, dtype=np.int64)
        self._mpi(self.comm.Iallgather(key, keys), "finding the ranks on this host")
        return int(np.count_nonzero(keys[:self.rank] == key[0]))

    def _all(self, flag: bool, what: str) -> bool:
        buf = np.array([int(flag)], dtype=np.int32)
        self._mpi(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MIN), what)
        return bool(buf[0])

    def abort(self, code: int) -> None:
        if self.size > 1:
            sys.stderr.flush()
            sys.stdout.flush()
            # mpiexec (MPICH's hydra) may tear the job down before it has forwarded what this rank
            # just printed; a moment's wait lets the one-line message through.
            time.sleep(ABORT_GRACE)
            self.comm.Abort(int(code))

    # -- devices and gradients ---------------------------------------------------------------
    def use_device(self, xp) -> str:
        """Bind this rank to its GPU (CuPy) and choose how gradients travel; returns the choice.

        With CuPy, the rank uses GPU ``node rank % device count`` (node rank: its index among
        the ranks on the same host). Every rank must agree on the transport, so each path is
        taken only when all ranks can use it (NCCL also needs one GPU per rank).
        """
        if xp is np:
            self.transport = "MPI on host (NumPy) buffers"
            return self.transport
        ndev, node_rank = xp.cuda.runtime.getDeviceCount(), self._node_rank()
        xp.cuda.Device(node_rank % ndev).use()  # this process's device, chosen once
        # NCCL needs one GPU per rank; ranks sharing a GPU use MPI.
        if self._all(_nccl_usable() and node_rank < ndev, "choosing the GPU transport"):
            from cupy.cuda import nccl  # noqa: PLC0415

            uid = self.bcast(nccl.get_unique_id() if self.is_root else None, "NCCL set-up")
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
            self.transport = "NCCL on device buffers (cupy.cuda.nccl)"
        elif self._all(mpi_cuda_aware(), "choosing the GPU transport"):
            self.transport = "CUDA-aware MPI on device buffers"
        else:
            self.transport = "MPI on host buffers (device -> host -> device copies)"
        return self.transport

    def average(self, grads: dict, what: str = "gradient allreduce") -> None:
        """Replace each gradient by its mean over the ranks, in place: one collective on the flat
        buffer a model's gradients are views of (``grads.flat``), else on a packed copy."""
        flat = getattr(grads, "flat", None)
        arrays = list(grads.values())  # same order on every rank (the model's parameter order)
        if flat is None:  # plain arrays: pack them into one buffer kept between calls
            xp, total = get_array_module(*arrays), sum(a.size for a in arrays)
            if self._flat is None or self._flat.size != total or get_array_module(self._flat) is not xp:
                self._flat = xp.empty(total, dtype=arrays[0].dtype)
            flat = self._flat
            flat[...] = xp.concatenate([a.ravel() for a in arrays])
        if get_array_module(flat) is np:
            self._mpi(self.comm.Iallreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM), what)
        else:
            self._allreduce_device(get_array_module(flat), flat, what)
        flat /= flat.dtype.type(self.size)
        if flat is self._flat:
            offset = 0
            for a in arrays:  # unpack into the gradient arrays the optimiser will read
                a[...] = flat[offset:offset + a.size].reshape(a.shape)
                offset += a.size

    def _allreduce_device(self, xp, flat, what: str) -> None:
        """Sum a CuPy buffer over the ranks in place, by the transport :meth:`use_device` chose."""
        stream = xp.cuda.get_current_stream()
        if self._nccl is not None:  # NCCL: enqueued on the stream, polled for completion
            from cupy.cuda import nccl  # noqa: PLC0415

            code = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}[flat.dtype]
            self._nccl.allReduce(flat.data.ptr, flat.data.ptr, flat.size, code, nccl.NCCL_SUM, stream.ptr)
            self._wait(lambda: stream.done, what)
        elif self.transport.startswith("CUDA-aware"):  # MPI reads and writes device memory
            stream.synchronize()  # the packing kernels must have finished before MPI reads
            self._mpi(self.comm.Iallreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM), what)
        else:  # host staging
            host = xp.asnumpy(flat)
            self._mpi(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM), what)
            flat.set(host)


def _nccl_usable() -> bool:
    try:
        from cupy.cuda import nccl  # noqa: PLC0415
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False))


def mpi_cuda_aware() -> bool:
    """True when the loaded MPI library takes device pointers.

    ``TINYSR_MPI_CUDA_AWARE=0/1`` decides when set; otherwise the library's
    ``MPIX_Query_cuda_support()`` (Open MPI, MPICH >= 4) is asked; False when it has none.
    """
    env = os.environ.get("TINYSR_MPI_CUDA_AWARE")
    if env in ("0", "1"):
        return env == "1"
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "libmpi" in line and ".so" in line}
    except OSError:
        return False
    for lib in sorted(libs):
        try:
            query = ctypes.CDLL(lib).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        return bool(query())
    return False


__all__ = ["DEFAULT_TIMEOUT", "SOLO", "MPIJob", "Solo", "init_mpi", "mpi_cuda_aware", "shard_indices"]
