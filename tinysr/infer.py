"""``python infer.py photo.png``: enlarge real images with SRCNN.

The input image IS the low-resolution image. For scale ``s`` it is converted to Matlab BT.601
YCbCr (on [0, 1]), every channel is Matlab-bicubic-upscaled by ``s``, the network restores Y
(replicate padding, exact tiles), and the result goes back to RGB, clipped and rounded like
Matlab's ``uint8``. Grayscale stays grayscale; an alpha channel is bicubic-upscaled and kept.
The whole pipeline runs tile by tile into the integer output (:mod:`tinysr.enlarge`), so memory
is the input and output images plus one tile's working set.
Output: ``OUTDIR/<stem>_srcnn_x<s>.png``, written atomically; an existing file is kept unless
``--overwrite``. Errors print one line per problem; the exit status is 0 when every image
succeeded, 1 when some failed, 2 for bad arguments or weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from .backend import BackendError, resolve_backend
from .cli import OneLineParser, add_backend_and_tile, positive_int, write_png
from .color import rgb2ycbcr, ycbcr2rgb
from .enlarge import enlarge
from .image_io import pixels_from_image, read_pixels  # noqa: F401  (read_pixels: re-exported)
from .imresize import imresize
from .inference import DEFAULT_TILE, restore_piece, restore_tiles
from .model import SRCNN
from .protocol import IMAGE_EXTENSIONS
from .weights import bundled_path, load_weights

PROG = "infer.py"


def super_resolve(img: np.ndarray, kind: str, model: SRCNN, scale: int, tile: int | None = DEFAULT_TILE):
    """Enlarge ``img`` ``(H, W, C)`` on [0, 1] by ``scale``, holding whole float planes.

    Returns ``(srcnn, bicubic)``, both ``(s*H, s*W, C)`` float on [0, 1] (clipped). The network
    runs in the tiles :func:`tinysr.enlarge.enlarge` takes (``tile``; ``None`` or 0: one piece),
    whatever the network. The CLI uses :func:`tinysr.enlarge.enlarge`, equal bit for bit to
    :func:`tinysr.enlarge.quantize` of this, in bounded memory.
    """
    colour = kind in ("RGB", "RGBA")
    nc = 3 if colour else 1
    base = rgb2ycbcr(img[:, :, :3]) if colour else img[:, :, :1]
    up = imresize(base, float(scale))
    if up.ndim == 2:
        up = up[:, :, None]
    sr = up.copy()
    sr[:, :, 0] = restore_tiles(model, up[:, :, 0], tile) if tile else restore_piece(model, up[:, :, 0])
    if colour:
        sr, up = ycbcr2rgb(sr), ycbcr2rgb(up)
    if img.shape[2] > nc:  # alpha
        alpha = imresize(img[:, :, nc], float(scale))
        sr = np.concatenate([sr, alpha[:, :, None]], axis=2)
        up = np.concatenate([up, alpha[:, :, None]], axis=2)
    return np.clip(sr, 0.0, 1.0), np.clip(up, 0.0, 1.0)


def collect_inputs(items: list[str]) -> list[Path]:
    """Expand files and folders (their images, sorted) into a list of files."""
    files = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"{p}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    return files


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Enlarge images with SRCNN (colour in, colour out).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--out", default="sr_out", help="output folder (default: sr_out)")
    p.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), default=3, help="enlargement factor (default 3)")
    p.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled weights for --scale)")
    add_backend_and_tile(p)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per image on --backend numpy (default: as many as BLAS uses, i.e. the cores or "
                        "OPENBLAS_NUM_THREADS); the output does not depend on it")
    p.add_argument("--compare", action="store_true", help="also write <stem>_compare_x<s>.png: bicubic | SRCNN")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--scheduler", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the images over a Dask cluster: the scheduler at ADDRESS (tcp://host:8786), "
                        "or with no ADDRESS a local cluster (needs the dask extra)")
    p.add_argument("--workers", type=int, default=None, help="workers of a local --scheduler cluster (default: cores)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.scheduler:
        parser.error("--threads applies to images enlarged here; with --scheduler each Dask worker uses its own threads")
    try:
        xp = resolve_backend(args.backend)
        model = load_weights(Path(args.weights) if args.weights else bundled_path(args.scale), xp=xp)
        files = collect_inputs(args.inputs)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError, ImportError, BackendError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.scheduler:  # one task per image on a Dask cluster (tinysr/dask_infer.py)
        from .dask_infer import enlarge_files  # noqa: PLC0415  (optional extra, imported on use)

        return enlarge_files(files, out, model, args.scale, scheduler=args.scheduler, workers=args.workers,
                             tile=args.tile or None, compare=args.compare, overwrite=args.overwrite, prog=PROG)
    failed = 0
    for src in files:
        target = out / f"{src.stem}_srcnn_x{args.scale}.png"
        try:
            if target.resolve() == src.resolve():
                raise ValueError(f"{target}: output would overwrite its input; choose another --out")
            if target.exists() and not args.overwrite:
                raise ValueError(f"{target} exists (use --overwrite to replace it)")
            pixels, kind = read_pixels(src)
            sr, bic = enlarge(pixels, kind, model, args.scale, tile=args.tile or None, bicubic=args.compare,
                              workers=args.threads)
            del pixels
            write_png(target, sr)
            print(target, flush=True)
            if args.compare:
                cmp_path = out / f"{src.stem}_compare_x{args.scale}.png"
                if cmp_path.exists() and not args.overwrite:
                    raise ValueError(f"{cmp_path} exists (use --overwrite to replace it)")
                write_png(cmp_path, np.concatenate([bic, sr], axis=1))
                print(cmp_path, flush=True)
        except (ValueError, OSError, MemoryError) as exc:
            failed += 1
            print(f"{PROG}: error: {exc}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} of {len(files)} images failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
