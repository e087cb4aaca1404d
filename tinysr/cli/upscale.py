"""``python infer.py photo.png`` (``tinysr upscale``): enlarge real images with SRCNN.

The input image IS the low-resolution image. It is turned upright by its EXIF orientation; for
scale ``s`` it is converted to Matlab BT.601 YCbCr (on [0, 1]), every channel is
Matlab-bicubic-upscaled by ``s``, the network restores Y (replicate padding, exact tiles), and
the result goes back to RGB, clipped and rounded like Matlab's ``uint8``. Grayscale stays
grayscale; an alpha channel is bicubic-upscaled and kept; 16 bits per sample (grayscale, and
48/64-bit colour PNGs and 16-bit TIFFs) stay 16 bits in PNG and TIFF outputs (16-bit colour to
JPEG/WebP is refused). The whole pipeline runs tile by tile into the integer output
(:mod:`tinysr.image.enlarge`), so memory is the input and output images plus one tile's working set.

Any size (:func:`tinysr.image.enlarge.output_size`): ``-s 2.5``, ``--width W``, ``--height H``; a
factor between the bundled networks uses the next one up at its own scale, then the Matlab
bicubic down to the size (names ``_x2.5``, ``_w1920``, ``_h1080``). Videos (``.mp4``, ``.mkv``,
``.mov``, ``.webm``, ``.m4v``; the ``[video]`` extra) are enlarged frame by frame by
:mod:`tinysr.image.video` into the same container, sound and subtitles copied. EXIF and XMP are
copied (orientation upright) unless ``--strip-metadata``; animated images are refused.

Outputs: ``OUTDIR/<stem>_srcnn_x<s>.<ext>`` (PNG unless ``--format`` says otherwise; ``keep``: the input's), or for one
input the file ``-o`` names when it ends in an image suffix. The input's ICC profile is carried
over and its DPI multiplied by ``s`` (same printed size). Inputs of one run whose outputs would
share a name (``baboon.jpg``, ``baboon.png``) are named ``<stem>_<ext>_srcnn_x<s>`` instead
(``baboon_jpg_srcnn_x3.png``); any clash left is refused before any work, naming both inputs.

Safety: every file is written atomically and takes its name only if the name is free, so an
existing file (even a dangling symlink, or one another process wrote a moment ago) is kept unless
``--overwrite``; an output that is one of the run's inputs is never written, and with ``-o`` the
input folder, files named as tinysr's outputs there are not enlarged again. Temporaries left in
the output folder by a killed run are removed only when provably dead (their writer, of this host
and pid namespace, gone: :func:`tinysr.atomic.remove_stale_temporaries`). A folder that refuses
writes (read-only, full) is one error line, and its remaining images are not tried. Ctrl-C or
SIGTERM: one line, exit status 130, no temporary left. Size: an image over ``--max-pixels`` (default: what this
machine's memory holds for the enlargement, :func:`tinysr.image.io.default_max_pixels`) is
refused from its header, in one line, and the others go on.

Output (:mod:`tinysr.cli.progress`): one line on stdout per file written, ``[i/N] PATH (S.S s)``
(image ``i`` of the ``N`` enlarged, the seconds since that image was started), followed, unless
``--weights`` are given, by the input's name and what ``--denoise`` detected and used
(``photo.jpg (JPEG q~78: medium)``, ``scan.png (PNG: none)``; :mod:`tinysr.image.jpeg_quality`); on a terminal
(stderr) a bar of the tiles of each image with at least :data:`tinysr.cli.progress.TILE_BAR_MIN`
tiles, cleared before the line; elsewhere plain lines only (with ``--scheduler``: each written
path alone, as the cluster's tasks complete). ``--quiet``: nothing but errors.
A batch (a folder, or more than one image) ends with one summary line on stderr (unless ``--quiet``), ``W written, S skipped, F failed
of N images in T s`` (``videos``, or ``files`` for both); ``--skip-existing`` counts an input whose outputs are all there as skipped
(exit 0) instead of failed. ``-o`` naming a file of an image format tinysr does not write
(``out.bmp``) is refused, never made a folder.
Errors print one line per problem on stderr; the exit status is 0 when every image succeeded, 1
when some failed, 2 for bad arguments or weights, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
from dataclasses import replace
import sys
import time
from pathlib import Path

from tinysr.cli.common import OneLineParser, add_backend_and_tile, positive_int, resolve_backend_saying
from tinysr.cli.entry import signal_received
from tinysr.cli.failure import run_main
from tinysr.cli.progress import TILE_BAR_MIN, Progress
from tinysr.image.io import FORMATS, SUFFIXES, default_max_pixels, format_for, is_image
from tinysr.image.enlarge import BundledModels, check_scale, network_scale, size_tag
from tinysr.image.jobs import Options, enlarge_job, is_own_output, plan_jobs, remove_stale_outputs
from tinysr.image.jpeg_quality import DENOISE_CHOICES, denoise_weights, file_level
from tinysr.image.video import VIDEO_SUFFIXES, check_codec, enlarge_video_job, is_video, require_av
from tinysr.ops.engine import Engine
from tinysr.protocol.evaluation import IMAGE_EXTENSIONS
from tinysr.weights import load_weights

PROG = "infer.py"
DEFAULT_OUT = "sr_out"
DEFAULT_SCALE = 3
# Files in a folder that are tried even when Pillow cannot identify them (so a broken one is an error, not a skip)
KNOWN_IMAGE_SUFFIXES = frozenset(IMAGE_EXTENSIONS) | {".webp", ".gif"}
# The stem of a file tinysr upscale writes (plan_jobs' names): <base>_srcnn_x<s> or <base>_compare_x<s>


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
            found = _scan_folder(p, Path("."), recursive, skipped, exclude,
                                 own_outputs=exclude is not None and os.path.realpath(p) == exclude)
            if not found:
                raise ValueError(f"{p}: no images in this folder" + ("" if recursive else " (--recursive reads subfolders)"))
            files.extend(found)
        elif os.path.lexists(p) and p.exists():
            files.append((p, Path(".")))
        else:
            raise ValueError(f"{p}: no such file or folder")
    return files


def _scan_folder(folder: Path, rel: Path, recursive: bool, skipped: list[str], exclude: str | None = None,
                 seen: set[str] | None = None, own_outputs: bool = False) -> list[tuple[Path, Path]]:
    """``seen``: the real folders read so far; a link to one of them (an ancestor's link makes a
    loop) is passed over with a reason, so each real folder is read once. ``own_outputs``: the
    output folder is this input folder, so files named as tinysr names its outputs
    (:func:`tinysr.image.jobs.is_own_output`) are an earlier run's results, passed over with a reason (a re-run does
    not enlarge them again)."""
    seen = {os.path.realpath(folder)} if seen is None else seen
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
                real = os.path.realpath(q)
                if real in seen:
                    skipped.append(f"{q}: a link to a folder already read ({real}); not read again")
                    continue
                seen.add(real)
                found.extend(_scan_folder(q, rel / q.name, recursive, skipped, exclude, seen, own_outputs))
            else:
                skipped.append(f"{q}: a subfolder (--recursive reads subfolders)")
        elif not q.is_file():
            skipped.append(f"{q}: not a regular file (a pipe, device or broken link)")
        elif own_outputs and is_own_output(q):
            skipped.append(f"{q}: named as tinysr's output, and -o is this folder; not enlarged again")
        elif q.suffix.lower() in KNOWN_IMAGE_SUFFIXES or is_video(q) or is_image(q):
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
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of pixels (0 for no limit), got {text!r}")
    if value < 0 or 0 < value < 1:  # 0.4 is no image at all, not "no limit"
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or at least 1 pixel, got {text!r}")
    return int(value)


def _scale(text: str) -> int | float:
    """argparse type for ``-s``: a number > 1 (``2``, ``2.5``)."""
    try:
        return check_scale(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number greater than 1 (e.g. 2, 2.5, 3), got {text!r}") from None


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
    p.add_argument("-s", "--scale", type=_scale, default=None,
                   help=f"enlargement factor > 1, e.g. 2, 2.5, 3 (default: the scale --weights were trained for, else "
                        f"{DEFAULT_SCALE}); the bundled network nearest it restores Y")
    p.add_argument("--width", type=positive_int, default=None, metavar="W",
                   help="output width in pixels (height follows, aspect kept); with --height that exact size")
    p.add_argument("--height", type=positive_int, default=None, metavar="H",
                   help="output height in pixels (width follows, aspect kept)")
    p.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled weights for --scale)")
    p.add_argument("--force", action="store_true", help="use --weights trained for another scale than -s")
    p.add_argument("--denoise", choices=DENOISE_CHOICES, default="auto",
                   help="auto (default): a JPEG gets the bundled model for its quality (read from its quantisation "
                        "tables), anything else the clean one; none: the clean model; low, medium, high: the "
                        "compression-aware models (JPEG quality about 80-97, 55-79, below 55). With --scheduler "
                        "and for videos, auto uses the clean model; with --weights only auto or none")
    p.add_argument("--format", choices=(*FORMATS, "keep"), default=None,
                   help="output format (default: from -o's suffix, else png); keep: each input's own format "
                        "where tinysr writes it (png, jpg, webp, tiff), else png")
    p.add_argument("--quality", type=_quality, default=None, help="jpg/webp quality 1..100 (default 95/90)")
    p.add_argument("--codec", default=None, help="videos: the FFmpeg encoder (default libx264, H.264; libvpx-vp9 "
                   "for .webm; libx265, libsvtav1 where PyAV's FFmpeg has them)")
    p.add_argument("--crf", type=int, default=None, help="videos: the encoder's constant rate factor (default 18 "
                   "for x264/x265; 0: lossless)")
    p.add_argument("--preset", default=None, help="videos: the encoder's speed preset (default medium for x264/x265)")
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
    p.add_argument("--strip-metadata", action="store_true",
                   help="write no EXIF or XMP (by default they are copied, the orientation set upright; the ICC "
                        "profile and DPI are kept either way)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave outputs already there alone and count them as skipped, not failed (to resume "
                        "a batch); with --compare, a missing comparison is still written")
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


# A write error that every other image bound for the same folder would meet too
FOLDER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def _folder_refuses_writes(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` says nothing can be written into ``folder`` (read-only, not ours, full)."""
    return (isinstance(exc, OSError) and exc.errno in FOLDER_ERRNOS and exc.filename is not None
            and os.path.dirname(os.path.abspath(exc.filename)) == os.path.abspath(folder))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the command line ``argv``; returns the exit status (130 on Ctrl-C or SIGTERM)."""
    prog = prog or PROG
    return run_main(prog, lambda: _main(argv, prog), interrupted="interrupted; files being written were removed")


def _main(argv, prog: str) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    items = list(args.inputs) + list(args.input)
    if not items:
        parser.error("no INPUT given (image files or folders, positional or with -i)")
    sized = args.width is not None or args.height is not None
    if sized and args.scale is not None:
        parser.error("give -s or --width/--height, not both")
    if args.format == "keep" and args.scheduler:
        parser.error("--format keep runs here; with --scheduler name one --format")
    if sized and args.scheduler:
        parser.error("--width/--height enlarge each image by its own factor; run them without --scheduler")
    if args.threads is not None and args.scheduler:
        parser.error("--threads applies to images enlarged here; with --scheduler each Dask worker uses its own threads")
    out_arg = Path(args.output) if args.output else Path(DEFAULT_OUT)
    fmt = args.format or "png"
    skipped: list[str] = []
    inputs = collect_inputs(items, args.recursive, skipped, output=out_arg)
    out_file = None
    refuse_unwritable_output(out_arg if args.output else None)
    videos = [(src, rel) for src, rel in inputs if is_video(src)]
    if videos:
        require_av()
        if args.codec:  # an encoder this FFmpeg lacks: refused before any work, naming those it has
            check_codec(args.codec)
        if args.scheduler:
            raise ValueError("videos are enlarged here, frame by frame; run them without --scheduler")
        if args.compare:
            raise ValueError("--compare applies to images, not videos")
    inputs = [(src, rel) for src, rel in inputs if not is_video(src)]
    video_file = None
    if args.output and out_arg.suffix.lower() in VIDEO_SUFFIXES and not out_arg.is_dir():
        if len(items) != 1 or len(videos) != 1 or inputs or Path(items[0]).is_dir():
            raise ValueError(f"-o {out_arg} names one video file, but the inputs are not one video; give a folder")
        video_file = out_arg
    elif any((args.codec, args.crf is not None, args.preset)) and not videos:
        raise ValueError("--codec, --crf and --preset apply to videos; no video among the inputs")
    if args.output and out_arg.suffix.lower() in SUFFIXES and not out_arg.is_dir():
        if len(items) != 1 or len(inputs) != 1 or Path(items[0]).is_dir():
            raise ValueError(f"-o {out_arg} names one file, but the inputs are "
                             f"{'a folder' if Path(items[0]).is_dir() else f'{len(inputs)} images'}; "
                             "give a folder")
        named = format_for(out_arg)
        if args.format and args.format not in (named, "keep"):
            raise ValueError(f"--format {args.format} and -o {out_arg} ({named}) disagree")
        fmt, out_file = named, out_arg
    if args.quality is not None and fmt not in ("jpg", "webp", "keep"):
        raise ValueError(f"--quality applies to the lossy formats (jpg, webp), not {fmt}")
    weights = Path(args.weights) if args.weights else None
    trained = weights_scale(weights) if weights else None
    scale = args.scale or trained or DEFAULT_SCALE
    net = network_scale((1, 1), (scale, scale))  # the bundled network nearest the scale (x2.5 -> x2)
    if trained and args.scale and trained != net and not args.force:
        raise ValueError(f"{weights} was trained for x{trained}, not -s {args.scale} "
                         "(use -s {0}, or --force to use it anyway)".format(trained))
    if weights and args.denoise not in ("auto", "none"):
        raise ValueError(f"--denoise {args.denoise} picks bundled weights; it cannot go with --weights")
    xp = resolve_backend_saying(args.backend, prog, args.quiet)
    models: dict = {}

    def model_for(level: str):  # each denoise level's network(s) loaded once, on first use
        if level not in models:
            engine = Engine(workers=args.threads)  # CPU threads per image: tiles at once, or the network's
            if sized and not weights:  # each image takes the bundled network nearest its own factor
                models[level] = BundledModels(xp, engine, lambda s: denoise_weights(s, level))
            else:
                models[level] = load_weights(weights if weights else denoise_weights(net, level), xp=xp)
                models[level].engine = engine
        return models[level]

    fixed = "none" if args.denoise == "auto" else args.denoise
    model = model_for("none" if weights else fixed)  # --weights; else the level for --scheduler and videos
    if weights and weights.suffix.lower() == ".mat" and not args.scale and not args.quiet:
        print(f"{prog}: note: {weights} (Matlab .mat) records no scale, so none can be checked; "
              f"enlarging by {scale} (give -s to choose)", file=sys.stderr)
    tag = size_tag(None, args.width, args.height) if sized else scale
    jobs, refusals = [], []
    for own, group in _by_format(inputs, fmt).items():  # one format, or with --format keep each input's
        more, no = plan_jobs(group, out_arg, out_file, tag, own, args.compare)
        jobs, refusals = jobs + more, refusals + no
    for suffix in dict.fromkeys(src.suffix.lower() for src, _ in videos):  # a video keeps its container
        more, no = plan_jobs([v for v in videos if v[0].suffix.lower() == suffix], out_arg, video_file, tag,
                             suffix, False)
        jobs, refusals = jobs + more, refusals + no
    for folder in dict.fromkeys(j.target.parent for j in jobs):
        folder.mkdir(parents=True, exist_ok=True)
    progress = Progress(quiet=args.quiet)
    for line in skipped if not args.quiet else ():
        print(f"{prog}: skipped {line}", file=sys.stderr)
    for line in refusals:
        print(f"{prog}: error: {line}", file=sys.stderr)
    if args.scheduler in (None, "local"):  # a remote cluster's writers are processes of other hosts
        remove_stale_outputs(dict.fromkeys(j.target.parent for j in jobs))
    max_pixels = args.max_pixels if args.max_pixels is not None else \
        default_max_pixels(1 if sized else math.ceil(scale), args.compare)
    opts = Options(scale=scale, fmt=fmt, quality=args.quality, overwrite=args.overwrite, max_pixels=max_pixels,
                   tile=args.tile or None, skip_existing=args.skip_existing, width=args.width, height=args.height,
                   codec=args.codec, crf=args.crf, preset=args.preset, strip_metadata=args.strip_metadata)  # "auto" stays "auto"
    total = len(jobs) + len(refusals)
    tally = Tally(prog, total, batch=total > 1 or any(Path(item).is_dir() for item in items),
                  noun="file" if videos and inputs else "video" if videos else "image")
    if args.scheduler:  # one task per image on a Dask cluster (tinysr/distributed/dask.py)
        from tinysr.distributed.dask import enlarge_jobs  # noqa: PLC0415  (optional extra, imported on use)

        return enlarge_jobs(jobs, model, opts, scheduler=args.scheduler, workers=args.workers, prog=prog,
                            say=progress.line, already_failed=len(refusals), total=total, count=tally.count,
                            finish=lambda failed: tally.finish(failed, args.quiet))
    failed = len(refusals)
    unwritable: set[Path] = set()  # output folders found read-only or full: reported once
    for i, job in enumerate(jobs, 1):
        if job.target.parent in unwritable:
            failed += 1
            continue
        started = time.perf_counter()

        note, level = "", fixed
        if not weights and not is_video(job.src):  # the input says what it needs (tinysr.image.jpeg_quality)
            level, said = file_level(job.src, args.denoise)
            note = f" {job.src.name} ({said})"

        def written(path, i=i, started=started, note=note):
            progress.line(f"[{i}/{len(jobs)}] {path} ({time.perf_counter() - started:.1f} s){note}")

        try:
            if is_video(job.src):  # a bar of its frames, with the time left
                with progress.counting(f"[{i}/{len(jobs)}] {job.src.name}", "frame", 1) as on_frame:
                    tally.count(enlarge_video_job(job, model, opts, on_written=written, on_frame=on_frame))
                continue
            with progress.counting(f"[{i}/{len(jobs)}] {job.src.name}", "tile", TILE_BAR_MIN) as on_tile:
                tally.count(enlarge_job(job, model_for(level) if not weights else model, _own_format(opts, job),
                                        on_written=written, on_tile=on_tile))
        except (ValueError, OSError, MemoryError) as exc:
            if signal_received():  # the interruption's doing (a library swallowed it), not this image's
                raise KeyboardInterrupt from None
            failed += 1
            message = str(exc) if not isinstance(exc, MemoryError) else f"{job.src}: out of memory"
            if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
                message = f"{exc.filename}: {exc.strerror or message}"
            folder = job.target.parent
            if _folder_refuses_writes(exc, folder):  # one line for the folder, not one per image
                unwritable.add(folder)
                left = sum(1 for j in jobs[i - 1:] if j.target.parent == folder)
                message = (f"{folder}: cannot write into this folder ({exc.strerror}); "
                           f"its {left} remaining image{'s' if left != 1 else ''} not enlarged")
            print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return tally.finish(failed, args.quiet)


class Tally:
    """The closing line of a batch: ``PROG: W written, S skipped, F failed of N images in T s``
    (stderr, so stdout stays the list of written paths), and the exit status. A run of one named
    file (not a ``batch``) gets it only when that file was skipped (its written line or error says the rest).
    ``noun``: what the inputs are, ``image``, ``video``, or ``file`` for both."""

    def __init__(self, prog: str, total: int, batch: bool = True, noun: str = "image"):
        self.prog, self.total, self.batch, self.noun = prog, total, batch, noun
        self.started = time.perf_counter()
        self.written = self.skipped = 0

    def count(self, paths: list) -> None:
        """One input done: ``paths`` it wrote (``[]``: every output was there, skipped)."""
        if paths:
            self.written += 1
        else:
            self.skipped += 1

    def finish(self, failed: int, quiet: bool) -> int:
        """Print the summary (with ``quiet``, only ``F of N images failed`` when some did); 1 if any failed."""
        seconds = time.perf_counter() - self.started
        if not quiet and (self.batch or self.skipped):
            print(f"{self.prog}: {self.written} written, {self.skipped} skipped, {failed} failed of {self.total} "
                  f"{self.noun}{'' if self.total == 1 else 's'} in {seconds:.1f} s", file=sys.stderr)
        elif failed:
            print(f"{self.prog}: {failed} of {self.total} {self.noun}s failed", file=sys.stderr)
        return 1 if failed else 0


def _by_format(inputs: list[tuple[Path, Path]], fmt: str) -> dict[str, list[tuple[Path, Path]]]:
    """The inputs grouped by output format: all under ``fmt``, or for ``keep`` each under its own
    suffix's format (:data:`tinysr.image.io.SUFFIXES`; png for the others: bmp, gif, ...)."""
    groups: dict[str, list[tuple[Path, Path]]] = {}
    for src, rel in inputs:
        groups.setdefault(SUFFIXES.get(src.suffix.lower(), "png") if fmt == "keep" else fmt, []).append((src, rel))
    return groups


def _own_format(opts: Options, job) -> Options:
    """``opts`` with the format ``job``'s output was named for (``--format keep``; ``--quality``
    then applies to the lossy ones only)."""
    if opts.fmt != "keep":
        return opts
    fmt = format_for(job.target)
    return replace(opts, fmt=fmt, quality=opts.quality if FORMATS[fmt][2] else None)


def refuse_unwritable_output(out: Path | None) -> None:
    """``ValueError`` for an ``-o`` that names a file of an image format tinysr does not write
    (``out.bmp``, ``out.gif``: it would otherwise become a folder of that name). An existing
    folder of any name is fine."""
    if out is None or out.is_dir():
        return
    suffix = out.suffix.lower()
    if suffix and suffix not in SUFFIXES and suffix in _pillow_suffixes():
        raise ValueError(f"-o {out}: tinysr writes {', '.join(sorted(set(SUFFIXES)))} images, not {suffix} "
                         f"(use one of those suffixes, or --format with a folder)")
    if suffix in OTHER_VIDEO_SUFFIXES:
        raise ValueError(f"-o {out}: tinysr writes videos as {', '.join(sorted(VIDEO_SUFFIXES))}, not {suffix}")


# Video containers tinysr does not write: an -o ending so is refused rather than made a folder.
OTHER_VIDEO_SUFFIXES = frozenset({".avi", ".flv", ".wmv", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".ogv", ".3gp"})


def _pillow_suffixes() -> set[str]:
    from PIL import Image  # noqa: PLC0415

    return {s.lower() for s in Image.registered_extensions()}


if __name__ == "__main__":
    sys.exit(main())
