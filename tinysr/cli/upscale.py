"""``python infer.py photo.png`` (``tinysr upscale``): enlarge real images with SRCNN.

The input image IS the low-resolution image. It is turned upright by its EXIF orientation; for
scale ``s`` it is converted to Matlab BT.601 YCbCr (on [0, 1]), every channel is
Matlab-bicubic-upscaled by ``s``, the network restores Y (replicate padding, exact tiles), and
the result goes back to RGB, clipped and rounded like Matlab's ``uint8``. Grayscale stays
grayscale; an alpha channel is bicubic-upscaled and kept; 16-bit grayscale stays 16-bit where
the output format allows. The whole pipeline runs tile by tile into the integer output
(:mod:`tinysr.image.enlarge`), so memory is the input and output images plus one tile's working set.

Outputs: ``OUTDIR/<stem>_srcnn_x<s>.<ext>`` (PNG unless ``--format`` says otherwise), or for one
input the file ``-o`` names when it ends in an image suffix. The input's ICC profile is carried
over and its DPI multiplied by ``s`` (same printed size). Inputs of one run whose outputs would
share a name (``baboon.jpg``, ``baboon.png``) are named ``<stem>_<ext>_srcnn_x<s>`` instead
(``baboon_jpg_srcnn_x3.png``); any clash left is refused before any work, naming both inputs.

Safety: every file is written atomically and takes its name only if the name is free, so an
existing file (even a dangling symlink, or one another process wrote a moment ago) is kept unless
``--overwrite``; an output that is one of the run's inputs is never written. Temporaries left in
the output folder by a killed run (their writer's process gone; not with a remote ``--scheduler``,
whose writers run on other hosts) are removed. Ctrl-C or SIGTERM: one line,
exit status 130, no temporary left. Size: an image over ``--max-pixels`` (default: what this
machine's memory holds for the enlargement, :func:`tinysr.image.io.default_max_pixels`) is
refused from its header, in one line, and the others go on.

Output (:mod:`tinysr.cli.progress`): one line on stdout per file written, ``[i/N] PATH (S.S s)``
(image ``i`` of the ``N`` enlarged, the seconds since that image was started), followed, unless
``--weights`` are given, by the input's name and what ``--denoise`` detected and used
(``photo.jpg (JPEG q~78: medium)``, ``scan.png (PNG: none)``; :mod:`tinysr.image.jpeg_quality`); on a terminal
(stderr) a bar of the tiles of each image with at least :data:`tinysr.cli.progress.TILE_BAR_MIN`
tiles, cleared before the line; elsewhere plain lines only (with ``--scheduler``: each written
path alone, as the cluster's tasks complete). ``--quiet``: nothing but errors.
Errors print one line per problem on stderr; the exit status is 0 when every image succeeded, 1
when some failed, 2 for bad arguments or weights, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tinysr.cli.common import OneLineParser, add_backend_and_tile, positive_int
from tinysr.cli.entry import signal_received, signals_raise
from tinysr.cli.progress import TILE_BAR_MIN, Progress
from tinysr.image.io import FORMATS, SUFFIXES, default_max_pixels, format_for, is_image
from tinysr.image.jobs import Options, enlarge_job, plan_jobs, remove_stale_outputs
from tinysr.image.jpeg_quality import DENOISE_CHOICES, choose_level, denoise_weights, describe, probe_file
from tinysr.ops.backend import BackendError, resolve_backend
from tinysr.ops.engine import Engine
from tinysr.protocol.evaluation import IMAGE_EXTENSIONS
from tinysr.weights import load_weights

PROG = "infer.py"
DEFAULT_OUT = "sr_out"
DEFAULT_SCALE = 3
# Files in a folder that are tried even when Pillow cannot identify them (so a broken one is an error, not a skip)
KNOWN_IMAGE_SUFFIXES = frozenset(IMAGE_EXTENSIONS) | {".webp", ".gif"}


def collect_inputs(items: list[str], recursive: bool = False, skipped: list[str] | None = None,
                   output: Path | None = None) -> list[tuple[Path, Path]]:
    """Expand files and folders into ``[(file, subfolder), ...]``: ``subfolder`` is where the
    file sits below the folder it was found in (``.`` for a file given by name, and without
    ``recursive``).

    A file named on the command line is always taken (and fails later if it is not an image). In
    a folder, every regular file Pillow recognises is taken, and so is any file with an image
    suffix (a broken one is then reported as an error); every other entry is skipped with a
    reason appended to ``skipped``: other files, pipes and devices, and subfolders unless
    ``recursive``. Hidden entries (a leading dot, e.g. temporaries) are passed over silently, and
    so is the ``output`` folder where it lies inside an input folder (its earlier results are not
    enlarged again). ``ValueError`` for a missing path or a folder without any image.
    """
    skipped = [] if skipped is None else skipped
    files: list[tuple[Path, Path]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            exclude = os.path.realpath(output) if output is not None else None
            found = _scan_folder(p, Path("."), recursive, skipped, exclude)
            if not found:
                raise ValueError(f"{p}: no images in this folder" + ("" if recursive else " (--recursive reads subfolders)"))
            files.extend(found)
        elif os.path.lexists(p) and p.exists():
            files.append((p, Path(".")))
        else:
            raise ValueError(f"{p}: no such file or folder")
    return files


def _scan_folder(folder: Path, rel: Path, recursive: bool, skipped: list[str], exclude: str | None = None
                 ) -> list[tuple[Path, Path]]:
    found = []
    try:
        entries = sorted(folder.iterdir(), key=lambda q: q.name)
    except OSError as exc:
        skipped.append(f"{folder}: cannot list this folder ({exc.strerror or exc})")
        return found
    for q in entries:
        if q.name.startswith("."):
            continue
        if q.is_dir():
            if exclude is not None and os.path.realpath(q) == exclude:
                continue
            if recursive:
                found.extend(_scan_folder(q, rel / q.name, recursive, skipped, exclude))
            else:
                skipped.append(f"{q}: a subfolder (--recursive reads subfolders)")
        elif not q.is_file():
            skipped.append(f"{q}: not a regular file (a pipe, device or broken link)")
        elif q.suffix.lower() in KNOWN_IMAGE_SUFFIXES or is_image(q):
            found.append((q, rel))
        else:
            skipped.append(f"{q}: not an image Pillow can read")
    return found


# -- the command line ------------------------------------------------------------------------------

def _pixels(text: str) -> int:
    """argparse type for ``--max-pixels``: a count of pixels, ``0`` for no limit; ``200M``, ``1.5G``, ``2e8`` work."""
    t = text.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels like 200M or 0, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return int(value)


def _quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be 1..100, got {value}")
    return value


EXAMPLES = """examples:
  {prog} photo.jpg                      writes sr_out/photo_srcnn_x3.png
  {prog} photo.jpg -s 2 -o big.jpg      writes big.jpg (JPEG, --quality 95)
  {prog} photos/ -o out/ --recursive    every image below photos/, same subfolders under out/
  {prog} -i a.png -i b.png --compare    also a_compare_x3.png: bicubic | SRCNN, labelled

Outputs are never replaced without --overwrite. Exit status: 0 all written, 1 some failed,
2 bad arguments or weights, 130 interrupted."""


def build_parser(prog: str | None = None) -> OneLineParser:
    plain = {"color": False} if sys.version_info >= (3, 14) else {}  # no ANSI colours in the help
    p = OneLineParser(prog=prog or PROG, description="Enlarge images with SRCNN (colour in, colour out).",
                      epilog=EXAMPLES.format(prog=prog or PROG), formatter_class=argparse.RawDescriptionHelpFormatter, **plain)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    p.add_argument("-i", "--input", action="append", default=[], metavar="INPUT",
                   help="an image file or folder (repeatable; same as a positional INPUT)")
    p.add_argument("-o", "--output", "--out", dest="output", default=None, metavar="PATH",
                   help=f"output folder (default: {DEFAULT_OUT}); for one input, a name ending in "
                        f"{', '.join(SUFFIXES)} is the output file itself")
    p.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), default=None,
                   help=f"enlargement factor (default: the scale --weights were trained for, else {DEFAULT_SCALE})")
    p.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled weights for --scale)")
    p.add_argument("--force", action="store_true", help="use --weights trained for another scale than -s")
    p.add_argument("--denoise", choices=DENOISE_CHOICES, default="auto",
                   help="auto (default): a JPEG gets the bundled model for its quality (read from its quantisation "
                        "tables), anything else the clean one; none: the clean model; low, medium, high: the "
                        "compression-aware models (JPEG quality about 80-97, 55-79, below 55). With --scheduler, "
                        "auto uses the clean model; with --weights only auto or none")
    p.add_argument("--format", choices=tuple(FORMATS), default=None,
                   help="output format (default: from -o's suffix, else png)")
    p.add_argument("--quality", type=_quality, default=None, help="jpg/webp quality 1..100 (default 95/90)")
    p.add_argument("--recursive", action="store_true",
                   help="read subfolders of input folders; outputs keep the subfolder structure under -o")
    add_backend_and_tile(p)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per image on --backend numpy (default: as many as BLAS uses, i.e. the cores or "
                        "OPENBLAS_NUM_THREADS); the output does not depend on it")
    p.add_argument("--compare", action="store_true",
                   help="also write <stem>_compare_x<s>: bicubic | SRCNN side by side, labelled (written even "
                        "when the enlargement exists)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (no written paths, no skipped files, no progress)")
    p.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                   help="refuse inputs larger than N pixels, from the header (e.g. 200M; 0: no limit; "
                        "default: what this machine's memory holds for the enlargement)")
    p.add_argument("--scheduler", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the images over a Dask cluster: the scheduler at ADDRESS (tcp://host:8786), "
                        "or with no ADDRESS a local cluster (needs the dask extra)")
    p.add_argument("--workers", type=int, default=None, help="workers of a local --scheduler cluster (default: cores)")
    return p


def weights_scale(path: Path) -> int | None:
    """The scale a tinysr ``.npz`` says it was trained for (its metadata), or None (e.g. ``.mat``)."""
    if path.suffix.lower() != ".npz":
        return None
    try:
        from tinysr.nn.serialization import read_npz  # noqa: PLC0415

        meta = read_npz(path).get("meta") or {}
    except Exception:  # unreadable weights are reported by load_weights
        return None
    scale = meta.get("scale", (meta.get("recipe") or {}).get("scale") if isinstance(meta, dict) else None)
    return int(scale) if isinstance(scale, int) and not isinstance(scale, bool) else None


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the command line ``argv``; returns the exit status (130 on Ctrl-C or SIGTERM)."""
    prog = prog or PROG
    try:
        with signals_raise(replace=False):  # under tinysr.cli.entry.run its handlers are set already
            return _main(argv, prog)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; files being written were removed", file=sys.stderr)
        return 130


def _main(argv, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    items = list(args.inputs) + list(args.input)
    if not items:
        parser.error("no INPUT given (image files or folders, positional or with -i)")
    if args.threads is not None and args.scheduler:
        parser.error("--threads applies to images enlarged here; with --scheduler each Dask worker uses its own threads")
    out_arg = Path(args.output) if args.output else Path(DEFAULT_OUT)
    fmt = args.format or "png"
    skipped: list[str] = []
    try:
        inputs = collect_inputs(items, args.recursive, skipped, output=out_arg)
        out_file = None
        if args.output and out_arg.suffix.lower() in SUFFIXES and not out_arg.is_dir():
            if len(items) != 1 or len(inputs) != 1 or Path(items[0]).is_dir():
                raise ValueError(f"-o {out_arg} names one file, but the inputs are "
                                 f"{'a folder' if Path(items[0]).is_dir() else f'{len(inputs)} images'}; "
                                 "give a folder")
            named = format_for(out_arg)
            if args.format and args.format != named:
                raise ValueError(f"--format {args.format} and -o {out_arg} ({named}) disagree")
            fmt, out_file = named, out_arg
        if args.quality is not None and fmt not in ("jpg", "webp"):
            raise ValueError(f"--quality applies to the lossy formats (jpg, webp), not {fmt}")
        weights = Path(args.weights) if args.weights else None
        trained = weights_scale(weights) if weights else None
        scale = args.scale or trained or DEFAULT_SCALE
        if trained and args.scale and trained != args.scale and not args.force:
            raise ValueError(f"{weights} was trained for x{trained}, not -s {args.scale} "
                             "(use -s {0}, or --force to use it anyway)".format(trained))
        if weights and args.denoise not in ("auto", "none"):
            raise ValueError(f"--denoise {args.denoise} picks bundled weights; it cannot go with --weights")
        xp = resolve_backend(args.backend)
        models: dict = {}

        def model_for(level: str):  # each level's bundled weights loaded once, on first use
            if level not in models:
                models[level] = load_weights(weights if weights else denoise_weights(scale, level), xp=xp)
                models[level].engine = Engine(workers=args.threads)  # CPU threads per image
            return models[level]

        fixed = "none" if args.denoise == "auto" else args.denoise
        model = model_for("none" if weights else fixed)  # --weights, or the level for --scheduler
        jobs, refusals = plan_jobs(inputs, out_arg, out_file, scale, fmt, args.compare)
        for folder in dict.fromkeys(j.target.parent for j in jobs):
            folder.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError, ImportError, BackendError) as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    progress = Progress(quiet=args.quiet)
    for line in skipped if not args.quiet else ():
        print(f"{prog}: skipped {line}", file=sys.stderr)
    for line in refusals:
        print(f"{prog}: error: {line}", file=sys.stderr)
    if args.scheduler in (None, "local"):  # a remote cluster's writers are processes of other hosts
        remove_stale_outputs(dict.fromkeys(j.target.parent for j in jobs))
    max_pixels = args.max_pixels if args.max_pixels is not None else default_max_pixels(scale, args.compare)
    opts = Options(scale=scale, fmt=fmt, quality=args.quality, overwrite=args.overwrite, max_pixels=max_pixels,
                   tile=args.tile or None)  # "auto" stays "auto"
    total = len(jobs) + len(refusals)
    if args.scheduler:  # one task per image on a Dask cluster (tinysr/distributed/dask.py)
        from tinysr.distributed.dask import enlarge_jobs  # noqa: PLC0415  (optional extra, imported on use)

        status = enlarge_jobs(jobs, model, opts, scheduler=args.scheduler, workers=args.workers, prog=prog,
                              say=progress.line, already_failed=len(refusals), total=total)
        return status
    failed = len(refusals)
    for i, job in enumerate(jobs, 1):
        started = time.perf_counter()

        note = ""
        if not weights:  # the input says what it needs (tinysr.image.jpeg_quality)
            fmt_in, q = probe_file(job.src)
            level = choose_level(args.denoise, q)
            note = f" {job.src.name} ({describe(fmt_in, q, level)})"

        def written(path, i=i, started=started, note=note):
            progress.line(f"[{i}/{len(jobs)}] {path} ({time.perf_counter() - started:.1f} s){note}")

        try:
            with progress.counting(f"[{i}/{len(jobs)}] {job.src.name}", "tile", TILE_BAR_MIN) as on_tile:
                enlarge_job(job, model_for(level) if not weights else model, opts, on_written=written,
                            on_tile=on_tile)
        except (ValueError, OSError, MemoryError) as exc:
            if signal_received():  # the interruption's doing (a library swallowed it), not this image's
                raise KeyboardInterrupt from None
            failed += 1
            message = str(exc) if not isinstance(exc, MemoryError) else f"{job.src}: out of memory"
            if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
                message = f"{exc.filename}: {exc.strerror or message}"
            print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    if failed:
        print(f"{prog}: {failed} of {total} images failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
