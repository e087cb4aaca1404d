"""``python -m tinysr.figures``: pictures of a training run, drawn with Pillow alone.

    python -m tinysr.figures curve runs/x3/log.jsonl docs/curve_x3.png [--target 32.39]
    python -m tinysr.figures filters tinysr/weights/x3.npz docs/filters_x3.png

``curve``: Set5 PSNR (dB) against epoch from a ``log.jsonl``, with an optional dashed target line.
``filters``: the first layer's 9x9 filters, each scaled to its own min..max, in an 8-wide grid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .cli import OneLineParser, write_png
from .serialization import read_npz


def filter_grid(weight: np.ndarray, cols: int = 8, zoom: int = 6, gap: int = 2) -> np.ndarray:
    """``weight`` ``(O, 1, k, k)`` -> uint8 grayscale grid image, each filter normalised to 0..255."""
    o, _, kh, kw = weight.shape
    rows = -(-o // cols)
    cell_h, cell_w = kh * zoom + gap, kw * zoom + gap
    canvas = np.full((rows * cell_h + gap, cols * cell_w + gap), 255, dtype=np.uint8)
    for i in range(o):
        f = weight[i, 0].astype(np.float64)
        span = f.max() - f.min()
        f = (f - f.min()) / span if span > 0 else np.zeros_like(f)
        tile = np.kron(np.round(f * 255), np.ones((zoom, zoom))).astype(np.uint8)
        r, c = divmod(i, cols)
        canvas[gap + r * cell_h: gap + r * cell_h + kh * zoom, gap + c * cell_w: gap + c * cell_w + kw * zoom] = tile
    return canvas


def psnr_curve(epochs, psnr, target: float | None = None, size=(640, 400)) -> np.ndarray:
    """RGB uint8 plot of PSNR against epoch with labelled axes (Pillow's default font)."""
    w, h = size
    left, right, top, bottom = 60, 20, 20, 45
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    ys = list(psnr) + ([target] if target else [])
    lo, hi = np.floor(min(ys) * 2) / 2, np.ceil(max(ys) * 2) / 2
    hi = hi if hi > lo else lo + 0.5
    x_max = max(epochs)

    def px(e, p):
        return (left + (w - left - right) * e / x_max, top + (h - top - bottom) * (hi - p) / (hi - lo))

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for p in np.arange(lo, hi + 1e-9, 0.5):
        y = px(0, p)[1]
        d.line([left - 4, y, left, y], fill="black")
        d.text((5, y - 6), f"{p:.1f}", fill="black")
    for e in np.linspace(0, x_max, 6):
        x = px(e, lo)[0]
        d.line([x, h - bottom, x, h - bottom + 4], fill="black")
        d.text((x - 8, h - bottom + 6), f"{e:.0f}", fill="black")
    d.text((w // 2 - 20, h - 18), "epoch", fill="black")
    d.text((left + 5, top + 3), "Set5 PSNR (dB)", fill="black")
    if target:
        y = px(0, target)[1]
        for x in range(left, w - right, 12):
            d.line([x, y, min(x + 6, w - right), y], fill=(200, 0, 0))
        d.text((w - right - 150, y - 14), f"authors' 9-1-5: {target:.2f}", fill=(200, 0, 0))
    d.line([px(e, p) for e, p in zip(epochs, psnr)], fill=(0, 70, 200), width=2)
    return np.asarray(img)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m tinysr.figures", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True, parser_class=OneLineParser)
    c = sub.add_parser("curve", help="Set5 PSNR against epoch from a log.jsonl")
    c.add_argument("log")
    c.add_argument("out")
    c.add_argument("--target", type=float, help="draw a dashed reference line at this PSNR")
    f = sub.add_parser("filters", help="first-layer filters of a .npz model")
    f.add_argument("weights")
    f.add_argument("out")
    args = p.parse_args(argv)
    try:
        if args.what == "curve":
            recs = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
            recs = [r for r in recs if "psnr" in r]
            if not recs:
                raise ValueError(f"{args.log}: no evaluated epochs (no 'psnr' entries)")
            img = psnr_curve([r["epoch"] for r in recs], [r["psnr"] for r in recs], args.target)
        else:
            img = filter_grid(read_npz(args.weights)["params"]["conv1.weight"])
        write_png(Path(args.out), img)
    except (ValueError, OSError) as exc:
        print(f"python -m tinysr.figures: error: {exc}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
