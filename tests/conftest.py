"""Shared fixtures and markers.

``gpu`` tests need CuPy and a usable CUDA device; they skip with the reason otherwise.
``shared`` data tests read ``$TINYSR_SHARED`` (default ``../shared``) and skip only when it is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tinysr import backend


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a usable CUDA GPU (skips otherwise)")


@pytest.fixture
def cupy():
    """The cupy module, or a skip naming what is missing."""
    try:
        return backend.resolve_backend("cupy")
    except backend.BackendError as exc:
        pytest.skip(f"no usable GPU: {exc}")


@pytest.fixture(scope="module")
def train_folders(tmp_path_factory):
    """``(train_dir, eval_dir)``: three 75x60 synthetic RGB training images and one 42x36
    evaluation crop, for short train.py runs."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    train, ev = root / "train", root / "eval"
    train.mkdir()
    ev.mkdir()
    yy, xx = np.mgrid[0:60, 0:75]
    for i in range(3):
        img = np.stack([128 + 100 * np.sin(xx / (4 + i) + c) * np.cos(yy / (5 + c)) for c in range(3)], -1)
        img += rng.normal(0, 8, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(train / f"t{i}.png")
    Image.fromarray(np.asarray(Image.open(train / "t0.png"))[:36, :42]).save(ev / "e0.png")
    return train, ev
