"""Shared fixtures and markers.

``gpu`` tests need CuPy and a usable CUDA device; they skip with the reason otherwise.
``shared`` data tests read ``$TINYSR_SHARED`` (default ``../shared``) and skip only when it is absent.
"""

from __future__ import annotations

import pytest

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
