"""Protocol PSNR of tinysr at non-integer scales (issue #28 item 2): which bundled network, and how.

For scale ``s = p / q`` (1.5 = 3/2, 2.5 = 5/2, 3.5 = 7/2), on every image of Set5 and Set14:
the luma (Matlab BT.601 Y, :func:`tinysr.protocol.evaluation.read_y_uint8`) is modcropped to a
multiple of ``p`` (so ``size / s`` is whole) and Matlab-bicubic-downscaled to ``size / s``
(:func:`tinysr.protocol.imresize.imresize`, ``output_shape``). From that low-resolution Y, each
method makes the ground truth's size again:

- ``bicubic``: the Matlab bicubic to the size;
- ``direct xN``: the bicubic to the size, then the bundled ``xN`` network on it;
- ``xN then down`` (what tinysr does, :func:`tinysr.image.enlarge.enlarge`): the bicubic by the
  integer ``N`` (the smallest bundled scale >= s), the ``xN`` network, then the Matlab bicubic
  (antialiased) down to the size.

The network runs through :func:`tinysr.image.inference.restore_y` (the one Y-restoring function),
everything in float64 without rounding in between, as the protocol does. Scores as the
protocol's (:func:`tinysr.protocol.evaluation.score`: uint8 Y, ``ceil(s)`` pixels shaved).

    TINYSR_SHARED=/work/shared nice python bench/any_scale.py [--scales 1.5 2.5 3.5]

Prints a Markdown table (mean PSNR in dB per set).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from tinysr.image.enlarge import BUNDLED_SCALES, network_scale
from tinysr.image.inference import restore_y
from tinysr.protocol.evaluation import list_images, read_y_uint8, score
from tinysr.protocol.imresize import imresize
from tinysr.protocol.metrics import modcrop
from tinysr.weights import bundled_path, load_weights


def candidates(s: float) -> list[int]:
    """The bundled networks on either side of ``s`` (both neighbours, to see which is better)."""
    lower = [b for b in BUNDLED_SCALES if b <= s]
    upper = [b for b in BUNDLED_SCALES if b >= s]
    return sorted({*(lower[-1:] or upper[:1]), *(upper[:1] or lower[-1:])})


def pair(y: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gt, low)`` float64 on [0, 1] for scale ``s`` (see the module)."""
    p = Fraction(s).limit_denominator(100).numerator
    gt = modcrop(y, p).astype(np.float64) / 255.0
    low_hw = (round(gt.shape[0] / s), round(gt.shape[1] / s))
    return gt, imresize(gt, output_shape=low_hw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.5, 3.5])
    ap.add_argument("--data", default=os.path.join(os.environ.get("TINYSR_SHARED", "/work/shared"), "data"))
    args = ap.parse_args()
    models = {b: load_weights(bundled_path(b)) for b in BUNDLED_SCALES}
    sets = ("Set5", "Set14")
    print("| scale | method | " + " | ".join(f"{d} PSNR (dB)" for d in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    started = time.perf_counter()
    for s in args.scales:
        via = network_scale((100, 100), (round(100 * s), round(100 * s)))
        rows: dict[str, list[tuple[str, float]]] = {}
        for d in sets:
            for path in list_images(Path(args.data) / d):
                gt, low = pair(read_y_uint8(path), s)
                shave = math.ceil(s)
                bic = imresize(low, output_shape=gt.shape)
                rows.setdefault("bicubic", []).append((d, score(gt, bic, shave)[0]))
                for b in candidates(s):
                    rows.setdefault(f"direct x{b}", []).append((d, score(gt, restore_y(models[b], bic), shave)[0]))
                up = restore_y(models[via], imresize(low, float(via)))
                rows.setdefault(f"x{via} then down", []).append((d, score(gt, imresize(up, output_shape=gt.shape),
                                                                          shave)[0]))
        for method, vals in rows.items():
            means = [np.mean([v for dd, v in vals if dd == d]) for d in sets]
            mark = " (tinysr)" if method == f"x{via} then down" else ""
            print(f"| x{s:g} | {method}{mark} | " + " | ".join(f"{m:.2f}" for m in means) + " |", flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
