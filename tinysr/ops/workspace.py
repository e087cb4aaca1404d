"""Arrays a training loop reuses from one step to the next instead of allocating them anew.

On the CPU a fresh large array is a new memory mapping whose pages the kernel zeroes on first
touch. A training step of SRCNN 9-1-5 at batch 128 allocates about 110 MB of activations,
unfolded inputs and gradients; a :class:`Workspace` keeps those arrays from one step to the next
(the layers take them through :meth:`tinysr.ops.engine.Engine.empty`). CuPy pools device memory
itself, so on the GPU a workspace only saves the pool's bookkeeping. Values never depend on it.

The contract: an array a layer takes from a workspace (its output, what it caches for backward,
its input gradient) is overwritten by the next call that takes the same array. So pass a
workspace only where each step's arrays are used up within the step, as ``train.py``'s engine
does; without one, every call returns new arrays.
"""

from __future__ import annotations

from tinysr.ops.backend import get_array_module


class Workspace:
    """Arrays kept by (owner, name), each reused while its shape, dtype and array module match."""

    def __init__(self):
        self._arrays: dict = {}

    def empty(self, owner, name: str, shape: tuple, dtype, xp):
        """An uninitialised ``xp`` array of ``shape`` and ``dtype`` for ``owner``'s ``name``: the
        one it got last time where that still fits, else a new one (which replaces it)."""
        key = (id(owner), name)
        a = self._arrays.get(key)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype or get_array_module(a) is not xp:
            a = self._arrays[key] = xp.empty(shape, dtype=dtype)
        return a

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(a.nbytes for a in self._arrays.values())

