"""Where tinysr finds the shared data (T91, Set5, Set14) and the authors' reference weights.

The location is ``$TINYSR_SHARED`` when set; otherwise the first existing of
``./../shared`` (relative to the working directory) and ``<repo>/../shared`` (relative to the
checkout this package lives in). Nothing from there is ever copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TINYSR_SHARED"


def shared_dir() -> Path:
    """Return the shared-material folder (it may not exist; callers check)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd().parent / "shared", Path(__file__).resolve().parents[3] / "shared"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


def data_dir(name: str) -> Path:
    """``shared/data/<name>``, e.g. ``data_dir("Set5")``."""
    return shared_dir() / "data" / name


def reference_models_dir() -> Path:
    """``shared/reference/srcnn_v1_models`` (the authors' released ``.mat`` weights)."""
    return shared_dir() / "reference" / "srcnn_v1_models"
