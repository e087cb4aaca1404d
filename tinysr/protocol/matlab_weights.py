"""Read the SRCNN authors' released Matlab weights (``x2.mat``, ``x3.mat``, ...).

The files are Matlab v5 ``.mat`` files holding six float64 variables (``f1 = 9``, ``f3 = 5``,
``n1 = 64``, ``n2 = 32``; ``f2`` is 1, 3 or 5 depending on the model)::

    weights_conv1  (f1*f1, n1)         column i = filter i, flattened column-major
    biases_conv1   (n1, 1)
    weights_conv2  (n1, f2*f2, n2)     [j, :, i] = filter (out i, in j), flattened column-major
                   (n1, n2)            also accepted when f2 = 1
    biases_conv2   (n2, 1)
    weights_conv3  (n2, f3*f3)         row i = filter for input channel i, flattened column-major
    biases_conv3   (1, 1)

The authors' ``SRCNN.m`` turns each flattened filter back into a square with Matlab's
``reshape(v, f, f)``, which fills **column-major** (Fortran order): linear index ``k`` (0-based)
lands at ``(row, col) = (k % f, k // f)``. The result is used by ``imfilter`` as a
**correlation** kernel (no flip) whose first index is the image row. NumPy's default reshape is
row-major, which would silently transpose every kernel -- an error PSNR barely notices, so the
layout is tested with asymmetric synthetic kernels (``tests/test_matlab_weights.py``).

:func:`load_mat_params` returns the kernels in NCHW correlation layout
(``weight[out, in, row, col]``), ready for an ordinary cross-correlation layer.

``scipy`` is an optional dependency (``pip install 'tinysr[mat]'``); it is imported only when a
file is actually read.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tinysr.errors import NoSuchFile
from tinysr.nn.serialization import check_config

VARIABLE_NAMES = (
    "weights_conv1",
    "biases_conv1",
    "weights_conv2",
    "biases_conv2",
    "weights_conv3",
    "biases_conv3",
)

_SCIPY_MISSING = "reading Matlab .mat weights needs scipy: pip install 'tinysr[mat]'"

# A weight file holds well under a megabyte (the released ones ~40 KB); refuse, before scipy reads
# it, a file or a compressed variable that is or would unpack to more than this.
MAX_MAT_BYTES = 1 << 28
_MI_COMPRESSED = 15


def _check_mat_size(path: Path) -> None:
    """``ValueError`` if ``path`` (or, for a Matlab v5 file, its compressed variables unpacked)
    exceeds :data:`MAX_MAT_BYTES`. Reads the top-level element tags and streams each compressed
    variable through zlib without keeping it; anything malformed is left for scipy to report."""
    size = path.stat().st_size
    if size > MAX_MAT_BYTES:
        raise ValueError(f"{path}: {size} bytes is far too large for SRCNN weights (at most {MAX_MAT_BYTES})")
    with path.open("rb") as fh:
        head = fh.read(128)
        if len(head) < 128 or not head.startswith(b"MATLAB") or head[126:128] not in (b"IM", b"MI"):
            return  # not v5 (v4 has no header; v7.3 is HDF5, which scipy refuses)
        endian = "<" if head[126:128] == b"IM" else ">"
        unpacked = 0
        while True:
            tag = fh.read(8)
            if len(tag) < 8:
                return
            mdtype, nbytes = struct.unpack(endian + "II", tag)
            if mdtype != _MI_COMPRESSED:
                fh.seek(nbytes + (-nbytes % 8), 1)
                continue
            inflate, left = zlib.decompressobj(), nbytes
            while left > 0 and not inflate.eof:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    return
                left -= len(chunk)
                while chunk and not inflate.eof:
                    try:
                        unpacked += len(inflate.decompress(chunk, 1 << 20))
                    except zlib.error:
                        return
                    if unpacked > MAX_MAT_BYTES:
                        raise ValueError(f"{path}: its compressed variables unpack to more than "
                                         f"{MAX_MAT_BYTES} bytes, far too large for SRCNN weights")
                    chunk = inflate.unconsumed_tail
            fh.seek(left, 1)


def _column_major_kernels(flat: np.ndarray, f: int) -> np.ndarray:
    """Turn ``(N, f*f)`` rows of column-major flattened kernels into ``(N, f, f)`` [n, row, col].

    Equivalent to ``np.stack([flat[n].reshape(f, f, order='F') for n in range(N)])``:
    a C-order reshape gives ``[n, col, row]``, so the last two axes are swapped.
    """
    n = flat.shape[0]
    return flat.reshape(n, f, f).transpose(0, 2, 1)


def _square_side(area: int, name: str, path: Path) -> int:
    """Side ``f`` of a square kernel with ``f*f == area`` (ValueError if not a square)."""
    side = math.isqrt(area)
    if side < 1 or side * side != area:
        raise ValueError(
            f"{path}: {name} has {area} taps per filter, which is not a square kernel size"
        )
    return side


def _as_float_array(value: object, name: str, path: Path) -> np.ndarray:
    """A real numeric ``.mat`` variable as a float64 ndarray (ValueError otherwise)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{path}: {name} is not a real numeric array (dtype {arr.dtype}, shape {arr.shape})"
        )
    return arr.astype(np.float64)


def _vector(arr: np.ndarray, length: int, name: str, path: Path) -> np.ndarray:
    """A bias stored as ``(length, 1)``, ``(1, length)`` or ``(length,)`` -> ``(length,)``."""
    non_singleton = [d for d in arr.shape if d != 1]
    if arr.ndim > 2 or arr.size != length or len(non_singleton) > 1:
        raise ValueError(f"{path}: {name} has shape {arr.shape}, expected ({length}, 1)")
    return arr.reshape(length)


def load_mat_params(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Load an SRCNN ``.mat`` weight file released by the authors.

    Parameters
    ----------
    path
        A Matlab v5 ``.mat`` file with the six variables described in the module docstring.

    Returns
    -------
    config
        ``{"f1": f1, "f2": f2, "f3": f3, "n1": n1, "n2": n2}`` inferred from the shapes
        (``f1 = 9, f3 = 5, n1 = 64, n2 = 32`` for every released file; ``f2`` is 1, 3 or 5).
    params
        float64, C-contiguous arrays, correlation kernels (no flip), first kernel axis = row:

        - ``conv1.weight`` (n1, 1, f1, f1): ``[i, 0] = weights_conv1[:, i].reshape(f1, f1, order='F')``
        - ``conv1.bias``   (n1,)
        - ``conv2.weight`` (n2, n1, f2, f2): ``[i, j] = weights_conv2[j, :, i].reshape(f2, f2, order='F')``
        - ``conv2.bias``   (n2,)
        - ``conv3.weight`` (1, n2, f3, f3): ``[0, i] = weights_conv3[i, :].reshape(f3, f3, order='F')``
        - ``conv3.bias``   (1,)

    Raises
    ------
    ImportError
        scipy is not installed.
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be read as a Matlab ``.mat`` file, is implausibly large, a variable is
        missing, shapes are inconsistent, a kernel is even or the network is one tinysr refuses
        (:func:`tinysr.nn.serialization.check_config`), or a value is not finite. Every message
        names the file.
    """
    try:
        import scipy.io
    except ImportError as exc:
        raise ImportError(_SCIPY_MISSING) from exc

    path = Path(path)
    if not path.is_file():
        raise NoSuchFile(f"{path}: no such Matlab weight file")

    _check_mat_size(path)
    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # scipy's answer for v7.3 (HDF5) files
        raise ValueError(
            f"{path}: cannot read this .mat file ({exc}); save it as Matlab v5/v7 ('-v7')"
        ) from exc
    except Exception as exc:  # scipy raises ValueError, MatReadError, IndexError, ... on junk
        with path.open("rb") as fh:
            header = fh.read(128)
        hint = "" if header.startswith(b"MATLAB") else "no 'MATLAB 5.0 MAT-file' header; "
        raise ValueError(
            f"{path}: not a readable Matlab .mat file ({hint}scipy: {type(exc).__name__}: {exc})"
        ) from exc

    missing = [name for name in VARIABLE_NAMES if name not in contents]
    if missing:
        present = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(
            f"{path}: missing variable(s) {', '.join(missing)} (file has: {', '.join(present) or 'none'})"
        )
    raw = {name: _as_float_array(contents[name], name, path) for name in VARIABLE_NAMES}

    for name, arr in raw.items():
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise ValueError(f"{path}: {name} has {bad} non-finite value(s) (NaN or Inf)")

    # Layer 1: (f1*f1, n1).
    w1 = raw["weights_conv1"]
    if w1.ndim != 2:
        raise ValueError(f"{path}: weights_conv1 has shape {w1.shape}, expected (f1*f1, n1)")
    f1 = _square_side(w1.shape[0], "weights_conv1", path)
    n1 = w1.shape[1]
    b1 = _vector(raw["biases_conv1"], n1, "biases_conv1", path)

    # Layer 2: (n1, f2*f2, n2), or (n1, n2) for a 1x1 layer.
    w2 = raw["weights_conv2"]
    if w2.ndim == 2:
        w2 = w2[:, None, :]
    if w2.ndim != 3 or w2.shape[0] != n1:
        raise ValueError(
            f"{path}: weights_conv2 has shape {raw['weights_conv2'].shape}, "
            f"expected (n1={n1}, f2*f2, n2) or (n1={n1}, n2)"
        )
    f2 = _square_side(w2.shape[1], "weights_conv2", path)
    n2 = w2.shape[2]
    b2 = _vector(raw["biases_conv2"], n2, "biases_conv2", path)

    # Layer 3: (n2, f3*f3), one output channel.
    w3 = raw["weights_conv3"]
    if w3.ndim != 2 or w3.shape[0] != n2:
        raise ValueError(
            f"{path}: weights_conv3 has shape {w3.shape}, expected (n2={n2}, f3*f3)"
        )
    f3 = _square_side(w3.shape[1], "weights_conv3", path)
    b3 = _vector(raw["biases_conv3"], 1, "biases_conv3", path)
    config = {"f1": f1, "f2": f2, "f3": f3, "n1": n1, "n2": n2}
    check_config(config, path)  # odd kernels of a sensible size, before any reshaping

    # (n1, 1, f1, f1): column i of weights_conv1 is filter i.
    conv1_weight = _column_major_kernels(w1.T, f1)[:, None, :, :]
    # (n2, n1, f2, f2): w2.transpose(2, 0, 1)[i, j, :] == weights_conv2[j, :, i].
    conv2_weight = _column_major_kernels(w2.transpose(2, 0, 1).reshape(n2 * n1, f2 * f2), f2)
    conv2_weight = conv2_weight.reshape(n2, n1, f2, f2)
    # (1, n2, f3, f3): row i of weights_conv3 is the filter for input channel i.
    conv3_weight = _column_major_kernels(w3, f3)[None, :, :, :]

    params = {
        "conv1.weight": conv1_weight,
        "conv1.bias": b1,
        "conv2.weight": conv2_weight,
        "conv2.bias": b2,
        "conv3.weight": conv3_weight,
        "conv3.bias": b3,
    }
    params = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in params.items()}
    return config, params
