"""Shared fixtures and markers.

``gpu`` tests need CuPy and a usable CUDA device; they skip with the reason otherwise.
The ``cupy`` fixture runs each GPU test twice: ``[gpu]`` on real CuPy and a GPU, and
``[cuda-emulator]`` on :mod:`tests.cupy_emulator` (the real ``kernels/*.cu`` compiled by g++
for the CPU, NumPy arrays standing in for device arrays), which needs only g++ on x86-64.
``shared`` data tests read ``$TINYSR_SHARED`` (default ``../shared``) and skip only when it is absent.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from PIL import Image

from tinysr.ops import backend


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a usable CUDA GPU (skips otherwise)")
    config.addinivalue_line("markers", "emulated: GPU code run on the CPU by tests/cupy_emulator.py (needs g++, x86-64)")


@pytest.fixture(autouse=True)
def _own_patch_cache(tmp_path, monkeypatch):
    """Each test (and the programs it starts) keeps tinysr's shared patch caches in its own
    folder, never the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@contextlib.contextmanager
def _fresh_kernel_caches():
    """Compiled kernels are cached per (source, device id): never hand the emulator's to CuPy or back."""
    from tests.cupy_emulator import clear_kernel_caches  # noqa: PLC0415

    clear_kernel_caches()
    try:
        yield
    finally:
        clear_kernel_caches()


@pytest.fixture
def cuda_emulator(monkeypatch):
    """tests/cupy_emulator.py installed as ``cupy`` for one test, or a skip saying what is missing."""
    from tests import cupy_emulator  # noqa: PLC0415

    if cupy_emulator.unavailable_reason():
        pytest.skip(cupy_emulator.unavailable_reason())
    with _fresh_kernel_caches():
        yield cupy_emulator.install(monkeypatch)


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.gpu),
                        pytest.param("cuda-emulator", marks=pytest.mark.emulated)])
def cupy(request):
    """The cupy module (real, on a GPU) or the CPU emulator; a skip naming what is missing."""
    if request.param == "cuda-emulator":
        yield request.getfixturevalue("cuda_emulator")
        return
    try:
        module = backend.resolve_backend("cupy")
    except backend.BackendError as exc:
        pytest.skip(f"no usable GPU: {exc}")
    with _fresh_kernel_caches():
        yield module


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
