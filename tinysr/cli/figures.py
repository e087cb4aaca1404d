"""``tinysr figures``: pictures of a training run, drawn with Pillow alone.

    tinysr figures curve runs/x3/log.jsonl docs/curve_x3.png [--target 32.39]
    tinysr figures filters tinysr/weights/x3.npz docs/filters_x3.png
    tinysr figures compare ../shared/data/Set5/butterfly_GT.bmp docs/compare_x3.png --scale 3

``curve``: Set5 PSNR (dB) against epoch from a ``log.jsonl``, with an optional dashed target line.
``filters``: the first layer's 9x9 filters, each scaled to its own min..max, in an 8-wide grid.
``compare``: a crop of bicubic | SRCNN (| original with ``--original``), labelled, from a high-resolution image shrunk
by ``--scale`` (Matlab bicubic) and enlarged back both ways; a ``--box`` outside the image is refused.

OUT is written atomically and only if free, unless ``--overwrite``; the figure's own input is
never replaced, even with ``--overwrite``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tinysr.cli.common import OneLineParser, write_png
from tinysr.cli.failure import run_main
from tinysr.nn.serialization import read_npz


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


def compare_crop(original: np.ndarray, model, scale: int, box=None, zoom: int = 2,
                 with_original: bool = False) -> np.ndarray:
    """Bicubic | SRCNN (| original) side by side, each labelled, as an RGB uint8 image.

    ``original``: ``(H, W, 3)`` uint8 RGB, the ground truth. It is cropped to a multiple of
    ``scale``, shrunk by ``scale`` with Matlab bicubic (rounded to uint8, as a saved photo is) and
    enlarged back by plain bicubic and by SRCNN (:func:`tinysr.image.enlarge.enlarge`). ``box``:
    ``(top, left, height, width)`` of the crop in original pixels (default: the central third);
    each panel is magnified ``zoom`` times (nearest neighbour) so pixels stay visible.
    ``with_original`` adds the ground-truth crop as a third panel.
    """
    from tinysr.image.enlarge import enlarge  # noqa: PLC0415
    from tinysr.protocol.imresize import imresize  # noqa: PLC0415
    from tinysr.protocol.metrics import modcrop, to_uint8_matlab  # noqa: PLC0415

    gt = modcrop(original, scale)
    h, w = gt.shape[:2]
    top, left, ch, cw = box or (h // 3, w // 3, h // 3, w // 3)
    if ch < 1 or cw < 1 or top < 0 or left < 0 or top + ch > h or left + cw > w:
        raise ValueError(f"--box {top} {left} {ch} {cw} (top, left, height, width) is not inside the "
                         f"{h}x{w} image (cropped to a multiple of {scale})")
    low = to_uint8_matlab(imresize(gt.astype(np.float64) / 255.0, 1.0 / scale))
    sr, bic = enlarge(low, "RGB", model, scale, bicubic=True)
    label_h = 16
    panels = []
    shown = [("bicubic", bic), (f"SRCNN x{scale}", sr)] + ([("original", gt)] if with_original else [])
    for name, img in shown:
        crop = np.kron(img[top:top + ch, left:left + cw], np.ones((zoom, zoom, 1), dtype=np.uint8))
        panel = Image.new("RGB", (crop.shape[1], crop.shape[0] + label_h), "white")
        panel.paste(Image.fromarray(crop), (0, label_h))
        ImageDraw.Draw(panel).text((4, 2), name, fill="black")
        panels.append(np.asarray(panel))
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


DESCRIPTION = "Pictures of a training run and of the results, drawn with Pillow alone."


def main(argv: list[str] | None = None, prog: str = "tinysr figures") -> int:
    p = OneLineParser(prog=prog, description=DESCRIPTION)
    sub = p.add_subparsers(dest="what", required=True, parser_class=OneLineParser)
    c = sub.add_parser("curve", help="Set5 PSNR against epoch from a log.jsonl")
    c.add_argument("log")
    c.add_argument("out")
    c.add_argument("--target", type=float, help="draw a dashed reference line at this PSNR")
    f = sub.add_parser("filters", help="first-layer filters of a .npz model")
    f.add_argument("weights")
    f.add_argument("out")
    m = sub.add_parser("compare", help="crop of bicubic | SRCNN | original from a high-resolution image")
    m.add_argument("image", help="the original (high-resolution) RGB image")
    m.add_argument("out")
    m.add_argument("--scale", type=int, choices=(2, 3, 4), default=3)
    m.add_argument("--box", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="crop in original pixels (default: the central third)")
    m.add_argument("--zoom", type=int, default=2, help="nearest-neighbour magnification of the crop")
    m.add_argument("--original", action="store_true", help="add the original's crop as a third panel")
    for q in (c, f, m):
        q.add_argument("--overwrite", action="store_true", help="replace an existing OUT (never the input)")
    args = p.parse_args(argv)
    source = {"curve": "log", "filters": "weights", "compare": "image"}[args.what]

    def work() -> int:
        out = Path(args.out)
        if os.path.lexists(out) and os.path.realpath(out) == os.path.realpath(getattr(args, source)):
            raise ValueError(f"{out} is the input of this figure; not replaced, choose another OUT")
        if os.path.lexists(out) and not args.overwrite:  # checked before any work; the write checks again
            raise ValueError(f"{out} exists (use --overwrite to replace it)")
        if args.what == "curve":
            recs = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
            recs = [r for r in recs if "psnr" in r]
            if not recs:
                raise ValueError(f"{args.log}: no evaluated epochs (no 'psnr' entries)")
            img = psnr_curve([r["epoch"] for r in recs], [r["psnr"] for r in recs], args.target)
        elif args.what == "filters":
            img = filter_grid(read_npz(args.weights)["params"]["conv1.weight"])
        else:
            from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415

            with Image.open(args.image) as im:
                original = np.asarray(im.convert("RGB"))
            img = compare_crop(original, load_weights(bundled_path(args.scale)), args.scale, args.box, args.zoom,
                               args.original)
        try:
            write_png(out, img, overwrite=args.overwrite)
        except FileExistsError:
            raise ValueError(f"{out} exists (use --overwrite to replace it)") from None
        print(args.out)
        return 0

    return run_main(prog, work)


if __name__ == "__main__":
    sys.exit(main())
