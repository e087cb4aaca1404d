"""The JPEG-protocol tables of README and bench/RESULTS.md (issue #27), from ``tinysr evaluate --jpeg --json`` output.

    for set in Set5 Set14; do for s in 2 3 4; do
      tinysr evaluate $TINYSR_SHARED/data/$set -s $s --jpeg none 90 75 50 30 --json > jpeg_${set}_x$s.json
    done; done
    tinysr evaluate $TINYSR_SHARED/data/Set14 -s 3 --jpeg 95 85 80 60 40 20 --json > jpeg_Set14_x3_sweep.json
    python bench/jpeg_tables.py jpeg_*.json

Prints the README table (per set and scale, for clean, q90, q75, q50, q30: PSNR of bicubic / the
clean model / auto, and the two models' gains over bicubic), then, per set and scale, one row per input quality: bicubic PSNR, the clean model's and
``--denoise auto``'s gain over bicubic (dB) and auto's margin over the clean model; and the x3
sweep over qualities, merged with the main table's qualities.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _label(q) -> str:
    return "clean" if q is None else f"q{q}"


def main(paths: list[str]) -> None:
    rows: dict = defaultdict(dict)  # (dataset, scale) -> quality -> method -> mean
    for path in paths:
        with open(path) as f:
            for r in json.load(f):
                rows[(r["dataset"], r["scale"])].setdefault(r["quality"], {})[r["method"]] = r["mean"]
    order = lambda q: 101 if q is None else q  # noqa: E731  (clean first, then falling quality)
    main_qs = [None, 90, 75, 50, 30]
    print("| set | scale | " + " | ".join(_label(q) for q in main_qs) + " |")
    print("|---|---|" + "---|" * len(main_qs))
    for (dataset, scale), by_q in sorted(rows.items(), key=lambda kv: (kv[0][0] != "Set5", kv[0][1])):
        cells = []
        for q in main_qs:
            m = by_q.get(q)
            cells.append("-" if m is None else f"{m['bicubic']['psnr']:.2f} / {m['clean']['psnr']:.2f} / "
                         f"**{m['tinysr auto']['psnr']:.2f}** ({m['clean']['gain']:+.2f} / **{m['tinysr auto']['gain']:+.2f}**)")
        print(f"| {dataset} | x{scale} | " + " | ".join(cells) + " |")
    for (dataset, scale), by_q in sorted(rows.items()):
        print(f"\n{dataset} x{scale}\n")
        print("| input | bicubic | clean model | tinysr auto | auto - clean |")
        print("|---|---|---|---|---|")
        for q in sorted(by_q, key=order, reverse=True):
            m = by_q[q]
            auto = m["tinysr auto"]
            print(f"| {_label(q)} | {m['bicubic']['psnr']:.2f} | {m['clean']['gain']:+.2f} | "
                  f"**{auto['gain']:+.2f}** | {auto['gain'] - m['clean']['gain']:+.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
