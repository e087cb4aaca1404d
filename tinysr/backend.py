"""The one place that chooses between NumPy (CPU) and CuPy (GPU).

Rules kept everywhere in tinysr:

- CuPy is imported lazily and guarded: importing tinysr never needs CuPy or a GPU.
- There is no global "current device": the array module is taken from the arrays
  themselves (:func:`get_array_module`) or chosen once by name (:func:`resolve_backend`).
- Host/device transfers are explicit: :func:`to_device` and :func:`to_numpy`. Layers never
  move data between host and device on their own; mixing the two raises.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "cupy", "auto")


class BackendError(RuntimeError):
    """The requested backend cannot run here; the message names what is missing."""


def _import_cupy():
    """Return the ``cupy`` module or raise :class:`BackendError` saying why it is unusable."""
    try:
        import cupy  # noqa: PLC0415  (guarded, optional import)
    except ImportError as exc:
        raise BackendError(
            "the cupy backend needs the CuPy package: pip install 'tinysr[cuda12]' "
            f"(or 'tinysr[cuda13]') ({exc})"
        ) from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when the driver is absent or too old
        raise BackendError(f"CuPy is installed but the CUDA driver is not usable: {exc}") from None
    if n < 1:
        raise BackendError("CuPy is installed but no CUDA device is visible")
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and at least one CUDA device is usable."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def resolve_backend(name: str):
    """Return the array module for ``name`` in ``{"numpy", "cupy", "auto"}``.

    ``auto`` takes CuPy only when it imports and a GPU is usable, NumPy otherwise.
    ``cupy`` where it cannot run raises :class:`BackendError` naming the missing piece.
    """
    if name == "numpy":
        return np
    if name == "cupy":
        return _import_cupy()
    if name == "auto":
        try:
            return _import_cupy()
        except BackendError:
            return np
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def get_array_module(*arrays):
    """The array module (``numpy`` or ``cupy``) that owns ``arrays``; NumPy for host data.

    Raises ``TypeError`` when host and device arrays are mixed, since combining them would
    need a hidden transfer.
    """
    xp = np
    seen_device = seen_host = False
    for a in arrays:
        if a is None:
            continue
        if type(a).__module__.startswith("cupy"):
            import cupy  # noqa: PLC0415  (only reached when a CuPy array exists)

            xp = cupy
            seen_device = True
        else:
            seen_host = True
    if seen_device and seen_host:
        raise TypeError("host (NumPy) and device (CuPy) arrays mixed; move them with to_device/to_numpy")
    return xp


def is_device_array(a) -> bool:
    """True for a CuPy array."""
    return type(a).__module__.startswith("cupy")


def to_device(a, xp):
    """Copy ``a`` into array module ``xp`` (``numpy`` or ``cupy``); no copy when already there."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


def to_numpy(a):
    """Return ``a`` as a NumPy array, copying from the GPU when it is a CuPy array."""
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


def backend_name(xp) -> str:
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "numpy" if xp is np else "cupy"
