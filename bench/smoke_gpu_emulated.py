"""Run the GPU benchmark entries once each, at --bench-quick sizes, on the CPU emulator.

    python bench/smoke_gpu_emulated.py

The emulator (``tests/cupy_emulator.py``: the real ``kernels/*.cu`` compiled by g++, NumPy
arrays standing in for device arrays) is installed as ``cupy`` before pytest starts, so every
``tinysr-cupy*`` / ``tinysr-cuda*`` / ``cupy*`` entry runs its code path end to end. This checks
that the GPU benchmarks work before a GPU is at hand; the timings mean nothing and nothing is
recorded. Needs g++ on x86-64.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests import cupy_emulator  # noqa: PLC0415  (after the path is set)

    sys.modules["cupy"] = cupy_emulator
    import pytest  # noqa: PLC0415

    return pytest.main([str(ROOT / "bench"), "--bench-quick", "--benchmark-disable", "-q",
                        "-p", "no:cacheprovider", "-k", "cupy or cuda", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
