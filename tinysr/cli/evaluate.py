"""``tinysr evaluate``: PSNR/SSIM under the authors' exact protocol.

    tinysr evaluate DIR --scale 3 --bicubic
    tinysr evaluate DIR --scale 3 --weights x3.mat      # or a tinysr .npz
    tinysr evaluate DIR --scale 3                       # tinysr's bundled weights
    tinysr evaluate                                     # the whole paper table

The protocol (``tinysr.protocol.evaluation``): Y of Matlab ``rgb2ycbcr``, ``modcrop``, Matlab-bicubic down
and up, the network with replicate padding, ``uint8(x*255)``, shave ``s`` pixels, PSNR and SSIM.
On a terminal (stderr) a bar counts the images of each folder evaluated; elsewhere nothing but
the result is printed. ``--quiet``: nothing but errors (e.g. with ``--save-images``). Errors print
one line on stderr and exit with status 2; Ctrl-C prints one line, status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from tinysr.cli.common import OneLineParser, add_backend_and_tile, resolve_backend_saying, write_png
from tinysr.cli.failure import run_main
from tinysr.cli.progress import Progress
from tinysr.image.inference import restore_y
from tinysr.image.jpeg_quality import DENOISE_CHOICES
from tinysr.protocol.evaluation import evaluate_dir, evaluate_dir_jpeg, list_images
from tinysr.protocol.metrics import to_uint8_matlab
from tinysr.protocol.paths import data_dir, reference_models_dir
from tinysr.weights import bundled_path, load_weights

PROG = "tinysr evaluate"


def make_predictor(weights: str | None, bicubic: bool, scale: int, xp, tile: int):
    """``(method name, predict callable or None)`` for the chosen method on array module ``xp``."""
    if bicubic:
        return "bicubic", None
    path = Path(weights) if weights else bundled_path(scale)
    model = load_weights(path, xp=xp)
    name = f"{path.name} ({model.arch})" if weights else f"tinysr x{scale} ({model.arch})"
    return name, lambda y: restore_y(model, y, tile=tile)


def run_one(folder, scale: int, method: str, predict, save_dir=None, overwrite: bool = False,
            progress: Progress | None = None, prog: str = PROG) -> dict:
    """Evaluate one folder; optionally save every restored Y as a grayscale PNG. ``progress``:
    where a bar of the images goes (:class:`tinysr.cli.progress.Progress`; ``None``: no bar);
    ``prog``: the name its skipped-image lines start with."""
    save = None
    if save_dir is not None:
        save_dir = Path(save_dir)
        inputs = _never_written(folder, save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        kind = "bicubic" if predict is None else "srcnn"

        def save(name, pred):
            target = save_dir / f"{name}_x{scale}_{kind}.png"
            if os.path.realpath(target) in inputs:  # through a link: an input is never replaced
                raise ValueError(f"{target} is an evaluated image; not replaced (choose another --save-images)")
            if os.path.lexists(target) and not overwrite:  # a dangling symlink too
                raise ValueError(f"{target} exists (use --overwrite to replace it)")
            try:  # the name is taken only if still free: a file made meanwhile is kept
                write_png(target, to_uint8_matlab(pred), overwrite=overwrite)
            except FileExistsError:
                raise ValueError(f"{target} exists (use --overwrite to replace it)") from None

    progress = progress if progress is not None else Progress(quiet=True)
    skipped = []

    def skip(path, why):
        skipped.append(path.name)
        if not progress.quiet:
            print(f"{prog}: skipped {why}", file=sys.stderr)

    with progress.counting(f"{Path(folder).name} x{scale} {method}", "image") as on_image:
        rows = evaluate_dir(folder, scale, predict, on_prediction=save, on_image=on_image, on_skip=skip)
    mean = {"psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows]))}
    res = {"dataset": Path(folder).name, "scale": scale, "method": method, "mean": mean, "images": rows}
    return {**res, "skipped": skipped} if skipped else res


def _never_written(folder, save_dir: Path) -> set[str]:
    """The real paths of ``folder``'s images, which ``--save-images`` never writes; ``ValueError``
    when ``save_dir`` is ``folder`` itself: saved images would sit among the ground truth (one
    named like an input would replace it) and a later run would score them as ground truth."""
    if os.path.realpath(save_dir) == os.path.realpath(folder):
        raise ValueError(f"--save-images {save_dir} is the evaluated folder: the saved images would join its "
                         "ground truth (and could replace one); choose another folder")
    return {os.path.realpath(p) for p in list_images(folder)}


def format_result(res: dict) -> str:
    lines = [f"{res['dataset']} x{res['scale']} {res['method']}", f"{'image':<12} {'PSNR':>8} {'SSIM':>8}"]
    for r in res["images"]:
        lines.append(f"{r['name']:<12} {r['psnr']:8.2f} {r['ssim']:8.4f}")
    lines.append(f"{'mean':<12} {res['mean']['psnr']:8.2f} {res['mean']['ssim']:8.4f}")
    return "\n".join(lines)


def _authors_model(path: Path, xp, notes: list[str]):
    """The authors' ``.mat`` weights, or None without scipy (an optional extra): then a note for
    ``notes`` (once) says how to get their column."""
    try:
        return load_weights(path, xp=xp)
    except ImportError as exc:
        line = f"the authors' column is left out: {exc}"
        if line not in notes:
            notes.append(line)
        return None


def paper_table(xp, tile: int, progress: Progress | None = None, notes: list[str] | None = None) -> list[dict]:
    """Bicubic, the authors' 9-1-5 (T91) weights and tinysr's bundled weights on Set5/Set14 x2-x4
    (``progress``: as for :func:`run_one`). Without scipy the authors' column is left out and
    ``notes`` (a list, if given) gets a line saying how to add it."""
    notes = [] if notes is None else notes
    results = []
    for dataset in ("Set5", "Set14"):
        folder = data_dir(dataset)
        if not folder.is_dir():
            raise ValueError(f"{folder}: test set not found (set TINYSR_SHARED to the shared data folder)")
        for scale in (2, 3, 4):
            results.append(run_one(folder, scale, "bicubic", None, progress=progress))
            authors = reference_models_dir() / "9-1-5_91images" / f"x{scale}.mat"
            model = _authors_model(authors, xp, notes) if authors.is_file() else None
            if model is not None:
                results.append(run_one(folder, scale, "authors 9-1-5",
                                       lambda y, m=model: restore_y(m, y, tile=tile), progress=progress))
            try:
                model = load_weights(bundled_path(scale), xp=xp)
            except ValueError:
                continue
            results.append(run_one(folder, scale, "tinysr 9-1-5", lambda y, m=model: restore_y(m, y, tile=tile),
                                   progress=progress))
    return results


def format_table(results: list[dict]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in results))
    lines = ["| set | scale | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    keys = list(dict.fromkeys((r["dataset"], r["scale"]) for r in results))
    for ds, s in keys:
        cells = []
        for m in methods:
            hit = [r for r in results if (r["dataset"], r["scale"], r["method"]) == (ds, s, m)]
            cells.append(f"{hit[0]['mean']['psnr']:.2f} / {hit[0]['mean']['ssim']:.4f}" if hit else "-")
        lines.append(f"| {ds} | x{s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser(prog: str = PROG) -> OneLineParser:
    p = OneLineParser(prog=prog, description="PSNR/SSIM of SRCNN or bicubic under the authors' protocol "
                                "(Y channel, Matlab bicubic, shave = scale). Without DIR: the paper's table.")
    p.add_argument("dir", nargs="?", help="folder of ground-truth images (e.g. ../shared/data/Set5)")
    p.add_argument("--scale", "-s", type=int, choices=(2, 3, 4), default=3, help="upscaling factor (default 3)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--bicubic", action="store_true", help="score the bicubic baseline")
    g.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled weights for --scale)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--save-images", metavar="OUTDIR", help="write each restored Y as a PNG into OUTDIR")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --save-images")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (no table, no progress; e.g. with --save-images)")
    p.add_argument("--jpeg", nargs="+", metavar="Q", type=_jpeg_quality, default=None,
                   help="score the JPEG protocol at each quality Q (1..100; 'none': the same without the JPEG): "
                        "each image Matlab-bicubic-downscaled as RGB, saved as a JPEG at Q (4:2:0), enlarged by "
                        "bicubic, the clean model and the model --denoise picks; Y PSNR/SSIM, shaved")
    p.add_argument("--denoise", choices=DENOISE_CHOICES, default="auto",
                   help="with --jpeg: the third method's choice of bundled model (default: auto, by the "
                        "JPEG's estimated quality)")
    add_backend_and_tile(p)
    return p


def _jpeg_quality(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        q = int(text)
    except ValueError:
        q = 0
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"a JPEG quality is 1..100 or 'none', got {text!r}")
    return q


def run_jpeg(folder, scale: int, qualities: list, denoise: str, backend: str, tile,
             progress: Progress | None = None) -> list[dict]:
    """The JPEG protocol (:func:`tinysr.protocol.evaluation.evaluate_dir_jpeg`) on ``folder`` at each
    quality: bicubic, the clean bundled model and ``tinysr.upscale(..., denoise=denoise)``, which
    reads the JPEG's tables as it does for a user's file. One result per quality and method:
    ``{"dataset", "scale", "quality", "method", "mean": {"psnr", "ssim", "gain"}, "images"}``
    (``gain``: dB over bicubic)."""
    from tinysr.api import upscale  # noqa: PLC0415  (the API's path, as a user's photo takes it)

    methods = {"bicubic": None,
               "clean": lambda im: np.asarray(upscale(im, scale, denoise="none", backend=backend, tile=tile)),
               f"tinysr {denoise}": lambda im: np.asarray(upscale(im, scale, denoise=denoise, backend=backend,
                                                                    tile=tile))}
    progress = progress if progress is not None else Progress(quiet=True)
    out = []
    for q in qualities:
        label = "clean" if q is None else f"q{q}"
        with progress.counting(f"{Path(folder).name} x{scale} {label}", "image") as on_image:
            rows = evaluate_dir_jpeg(folder, scale, q, methods, on_image=on_image)
        base = float(np.mean([r["psnr"] for r in rows["bicubic"]]))
        for name, r in rows.items():
            p = float(np.mean([x["psnr"] for x in r]))
            out.append({"dataset": Path(folder).name, "scale": scale, "quality": q, "method": name,
                        "mean": {"psnr": p, "ssim": float(np.mean([x["ssim"] for x in r])), "gain": p - base},
                        "images": r})
    return out


def format_jpeg(results: list[dict]) -> str:
    """One row per quality: each method's mean PSNR / SSIM, and the models' gain over bicubic."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    first = results[0]
    lines = [f"{first['dataset']} x{first['scale']} JPEG protocol (PSNR dB / SSIM of Y; gain over bicubic)",
             "| input | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for q in dict.fromkeys(r["quality"] for r in results):
        cells = []
        for m in methods:
            r = next(x for x in results if x["quality"] == q and x["method"] == m)["mean"]
            gain = "" if m == "bicubic" else f" ({r['gain']:+.2f})"
            cells.append(f"{r['psnr']:.2f} / {r['ssim']:.4f}{gain}")
        lines.append(f"| {'clean' if q is None else f'q{q}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Command line entry point (``prog``: the name its usage and messages use); returns the exit
    status (0 done, 2 bad arguments or files, 130 interrupted: :mod:`tinysr.cli.failure`)."""
    args = build_parser(prog).parse_args(argv)
    progress = Progress(quiet=args.quiet)

    def work() -> int:
        xp = resolve_backend_saying(args.backend, prog, args.quiet)
        if args.dir is None:
            if args.weights or args.bicubic or args.save_images or args.jpeg is not None:
                raise ValueError("--weights/--bicubic/--save-images/--jpeg need a DIR")
            notes: list[str] = []
            results = paper_table(xp, args.tile, progress, notes)
            for line in notes if not args.quiet else ():
                print(f"{prog}: note: {line}", file=sys.stderr)
            progress.line(json.dumps(results) if args.json else format_table(results))
            return 0
        if args.jpeg is not None:
            if args.weights or args.bicubic or args.save_images:
                raise ValueError("--jpeg scores bicubic and the bundled models; not with --weights/--bicubic/--save-images")
            res = run_jpeg(args.dir, args.scale, args.jpeg, args.denoise, args.backend, args.tile, progress)
            progress.line(json.dumps(res) if args.json else format_jpeg(res))
            return 0
        method, predict = make_predictor(args.weights, args.bicubic, args.scale, xp, args.tile)
        res = run_one(args.dir, args.scale, method, predict, args.save_images, args.overwrite, progress, prog)
        progress.line(json.dumps(res) if args.json else format_result(res))
        return 0

    # Ctrl-C: one line; --save-images files being written are removed
    return run_main(prog, work, interrupted="interrupted",
                    out_of_memory="out of memory (a smaller --tile, or smaller images)")

if __name__ == "__main__":
    sys.exit(main())
