"""What the training loop needs of data parallelism: this process's place in the job, and its
share of each global batch. :data:`SOLO` is the single process; :class:`tinysr.distributed.mpi.MPIJob`
is a :class:`Solo` over MPI ranks (``nn`` never imports ``distributed``: the job is passed in)."""

from __future__ import annotations

import numpy as np

DEFAULT_TIMEOUT = 300.0  # seconds a rank waits in one collective before aborting the job


def shard_indices(perm: np.ndarray, step: int, batch: int, rank: int = 0, size: int = 1) -> np.ndarray:
    """This rank's patch indices for global step ``step``: sorted, ``batch // size`` of them.

    ``perm``: the epoch's global permutation (the same on every rank); ``batch``: the global batch
    ``B`` (a multiple of ``size``). Rank ``r`` takes ``perm[s*B + r*B/N : s*B + (r+1)*B/N]``; for
    one process this is the whole ``perm[s*B:(s+1)*B]``.
    """
    per = batch // size
    lo = step * batch + rank * per
    return np.sort(perm[lo:lo + per])


class Solo:
    """The single-process stand-in: rank 0 of 1, every collective a no-op."""

    rank, size = 0, 1
    transport = "none (one process)"

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        """Prefix for messages: ``"rank 1 of 2: "`` in a job of several ranks, else empty."""
        return f"rank {self.rank} of {self.size}: " if self.size > 1 else ""

    def use_device(self, xp) -> str:
        return self.transport

    def average(self, grads: dict, what: str = "gradient allreduce") -> None:
        """Replace each gradient by its mean over the ranks, in place."""

    def mean(self, value: float, what: str = "loss allreduce") -> float:
        """Mean of a float over the ranks."""
        return float(value)

    def bcast(self, obj, what: str = "broadcast"):
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        return obj

    def barrier(self, what: str = "barrier", patient: bool = False) -> None:
        """Wait until every rank gets here; ``patient``: without the deadline (long set-up work)."""

    def abort(self, code: int) -> None:
        """End every rank of the job with exit status ``code`` (no-op for one process)."""


SOLO = Solo()
