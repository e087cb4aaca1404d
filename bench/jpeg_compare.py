"""Before/after crop of a compressed photo (README, issue #27): the JPEG protocol's input enlarged
by bicubic, by the clean model and by ``--denoise auto``, beside the original.

    python bench/jpeg_compare.py $TINYSR_SHARED/data/Set14/monarch.bmp docs/jpeg_compare_x3.png \
        --quality 40 --box 200 300 120 160

The original is shrunk by ``--scale`` (Matlab bicubic, uint8) and saved as a JPEG at ``--quality``
(4:2:0; :func:`tinysr.protocol.degrade.jpeg_bytes`, as ``tinysr evaluate --jpeg`` does), then
enlarged back by each method (``tinysr.upscale`` for the models). Prints each panel's PSNR (Y, the
crop only).
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image, ImageDraw

import tinysr
from tinysr.cli.common import write_png
from tinysr.image.jpeg_quality import choose_level, jpeg_quality
from tinysr.protocol.color import rgb2y
from tinysr.protocol.degrade import jpeg_bytes
from tinysr.protocol.evaluation import read_uint8
from tinysr.protocol.imresize import imresize
from tinysr.protocol.metrics import modcrop, psnr, to_uint8_matlab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("out")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--quality", type=int, default=40)
    p.add_argument("--box", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"), required=True)
    p.add_argument("--zoom", type=int, default=2)
    a = p.parse_args()
    gt = modcrop(read_uint8(a.image), a.scale)
    low = Image.open(io.BytesIO(jpeg_bytes(gt, a.scale, a.quality)))
    low.load()
    level = choose_level("auto", jpeg_quality(low))
    shown = [
        (f"JPEG q{a.quality}, bicubic", to_uint8_matlab(imresize(np.asarray(low) / 255.0, float(a.scale)))),
        ("tinysr, clean model", np.asarray(tinysr.upscale(low, a.scale, denoise="none"))),
        (f"tinysr auto ({level})", np.asarray(tinysr.upscale(low, a.scale))),
        ("original", gt),
    ]
    top, left, h, w = a.box
    panels = []
    for name, img in shown:
        crop = img[top:top + h, left:left + w]
        if name != "original":
            print(f"{name}: crop PSNR {psnr(rgb2y(gt[top:top + h, left:left + w]), rgb2y(crop)):.2f} dB")
        panel = Image.new("RGB", (w * a.zoom, h * a.zoom + 16), "white")
        panel.paste(Image.fromarray(crop).resize((w * a.zoom, h * a.zoom), Image.NEAREST), (0, 16))
        ImageDraw.Draw(panel).text((4, 2), name, fill="black")
        panels.append(np.asarray(panel))
        panels.append(np.full((h * a.zoom + 16, 4, 3), 255, np.uint8))
    write_png(a.out, np.concatenate(panels[:-1], axis=1))


if __name__ == "__main__":
    main()
