"""Weights: tinysr's bundled ``x2.npz``/``x3.npz``/``x4.npz`` and loading any weight file.

``load_weights`` accepts tinysr ``.npz`` (model or checkpoint) and the authors' Matlab ``.mat``.
Both are read without trusting the file (:func:`tinysr.nn.serialization.read_npz`,
:func:`tinysr.protocol.matlab_weights.load_mat_params`): a corrupt or crafted file, or a network tinysr
cannot run (an even kernel, too much shrink, absurd widths:
:func:`tinysr.nn.serialization.check_config`), is a one-line ``ValueError`` naming the file.

The files here are the package's own: ``tinysr bundle`` writes into this folder only
with ``--into-package`` (and replaces a file here only with ``--overwrite``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinysr.errors import NoSuchFile
from tinysr.nn.model import SRCNN

BUNDLED_DIR = Path(__file__).resolve().parent


def bundled_path(scale: int, other: str = "pass --weights FILE (.npz or the authors' .mat)") -> Path:
    """Path of the bundled 9-1-5 weights for ``scale``; ``ValueError`` when none ship for it, ending
    with ``other``, the caller's way to give weights instead."""
    path = BUNDLED_DIR / f"x{scale}.npz"
    if not path.is_file():
        have = sorted(p.stem for p in BUNDLED_DIR.glob("x*.npz"))
        raise ValueError(f"no bundled weights for scale {scale} (bundled: {', '.join(have) or 'none yet'}); {other}")
    return path


def load_weights(path, *, dtype=np.float32, xp=np) -> SRCNN:
    """An :class:`SRCNN` from a tinysr ``.npz`` or an authors' ``.mat``; ``ValueError`` naming the file otherwise
    (``ImportError`` for a ``.mat`` without scipy)."""
    path = Path(path)
    if not path.is_file():
        raise NoSuchFile(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        from tinysr.protocol.matlab_weights import load_mat_params  # noqa: PLC0415  (scipy is optional)

        config, params = load_mat_params(path)
        return _finite_output(SRCNN.from_params(config, params, dtype=dtype, xp=xp), path)
    if suffix == ".npz":
        from tinysr.nn.serialization import load_model  # noqa: PLC0415

        return _finite_output(load_model(path, dtype=dtype, xp=xp), path)
    raise ValueError(f"{path}: unsupported weights format {suffix or '(no suffix)'}: use .npz or .mat")


def _finite_output(model: SRCNN, path: Path) -> SRCNN:
    """``model`` if it gives finite values on a small test plane (a ramp over [0, 1] with a
    checkerboard), else ``ValueError`` naming ``path``: finite weights can still overflow the
    float type (a bias of float32's largest value), which would make black images, not errors."""
    from tinysr.image.inference import NonFiniteOutput, restore_piece  # noqa: PLC0415

    ramp = np.linspace(0.0, 1.0, 24 * 24).reshape(24, 24)
    probe = np.where((np.indices((24, 24)).sum(axis=0) % 2) == 0, ramp, 1.0 - ramp)
    try:
        restore_piece(model, probe)
    except NonFiniteOutput:
        raise ValueError(f"{path}: these weights give NaN or Inf on a plain test image (their values "
                         f"overflow {np.dtype(model.dtype).name}); refused") from None
    return model
