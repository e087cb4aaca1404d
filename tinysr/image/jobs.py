"""One image file to its output files: naming every output of a run, the overwrite policy, the comparison image.

:func:`plan_jobs` names every output before any work (``<stem>_srcnn_x<s>.<ext>``; same-stem
inputs get ``<stem>_<ext>_srcnn_x<s>``; a clash left, or an output that is an input, is refused).
:func:`enlarge_job` enlarges one planned image (:func:`tinysr.image.enlarge.enlarge`) and writes
its outputs atomically, each only if its name is free unless ``overwrite``. ``tinysr upscale``
(:mod:`tinysr.cli.upscale`) runs it image by image, the Dask cluster path
(:func:`tinysr.distributed.dask.enlarge_jobs`) one task per image.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinysr.atomic import remove_stale_temporaries
from tinysr.image.enlarge import BundledModels, enlarge, network_scale, output_size, size_tag
from tinysr.image.inference import AUTO
from tinysr.image.io import FORMATS, SUFFIXES, enlarged_dpi, read_image, write_image
from tinysr.image.video import VIDEO_SUFFIXES
from tinysr.nn.model import SRCNN


@dataclass(frozen=True)
class Job:
    """One input and the outputs planned for it (``compare`` is None without ``--compare``)."""

    src: Path
    target: Path
    compare: Path | None = None

    def __str__(self) -> str:  # how error lines name it
        return str(self.src)


@dataclass(frozen=True)
class Options:
    """How every image of a run is enlarged and written (picklable, for Dask workers)."""

    scale: int
    fmt: str = "png"
    quality: int | None = None
    overwrite: bool = False
    max_pixels: int | None = None
    tile: int | str | None = AUTO
    skip_existing: bool = False  # outputs already there are kept and counted as skipped, not errors
    width: int | None = None  # --width / --height: that output size (aspect kept with one), not scale
    height: int | None = None
    codec: str | None = None  # videos (tinysr.image.video): the encoder and its crf and preset
    crf: int | None = None
    preset: str | None = None
    strip_metadata: bool = False  # write no EXIF or XMP (the ICC profile and DPI stay: they say how it looks)
    denoise: str = "auto"  # which bundled network the caller picks (tinysr.image.jpeg_quality.file_level)


def _output_name(base: str, scale, kind: str, suffix: str) -> str:
    return f"{base}_{kind}_{_tag(scale)}{suffix}"


# The names _output_name gives (every size_tag: x3, x2.5, w1000, h800, 1000x800).
_OWN_OUTPUT = re.compile(r"_(srcnn|compare)_(x\d+(\.\d+)?|w\d+|h\d+|\d+x\d+)$")


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is named as an output of a run (an image or video :func:`plan_jobs` names)."""
    return bool(_OWN_OUTPUT.search(path.stem)) and (path.suffix.lower() in SUFFIXES
                                                     or path.suffix.lower() in VIDEO_SUFFIXES)


def _tag(scale) -> str:
    """``x3``, ``x2.5`` for a scale; a size's tag (``w1000``: :func:`tinysr.image.enlarge.size_tag`) as it is."""
    return scale if isinstance(scale, str) else size_tag(scale)


def plan_jobs(inputs: list[tuple[Path, Path]], out: Path, out_file: Path | None, scale: int | float | str, fmt: str,
              compare: bool) -> tuple[list[Job], list[str]]:
    """Name every output of the run before any work: ``(jobs, refusals)``.

    ``out_file``: the one output file ``-o`` named (one input), else ``None`` and outputs go to
    ``out / subfolder / <stem>_srcnn_x<s><suffix>``. Inputs whose outputs would share a name get
    ``<stem>_<ext>`` as the base instead; a clash still left (e.g. the same name in two input
    folders) or an output that is also an input of the run is refused: one line each in
    ``refusals``, and those inputs get no job. A file named twice is enlarged once.
    """
    suffix = fmt if fmt.startswith(".") else FORMATS[fmt][1]  # a suffix itself: a video's container
    refusals = []
    seen = {}
    unique = []
    for src, rel in inputs:
        key = os.path.realpath(src)
        if key in seen:  # the same file named twice: enlarged once
            continue
        seen[key] = src
        unique.append((src, rel))

    def outputs(src, rel, base):
        if out_file is not None:
            cmp = out_file.with_name(f"{out_file.stem}_compare_{_tag(scale)}{out_file.suffix}") if compare else None
            return out_file, cmp
        folder = out / rel
        cmp = folder / _output_name(base, scale, "compare", suffix) if compare else None
        return folder / _output_name(base, scale, "srcnn", suffix), cmp

    by_target: dict[Path, list[tuple[Path, Path]]] = {}
    for src, rel in unique:
        by_target.setdefault(outputs(src, rel, src.stem)[0], []).append((src, rel))
    planned = []
    for group in by_target.values():
        bases = [f"{src.stem}_{src.suffix.lstrip('.').lower() or 'noext'}" for src, _ in group]
        if len(group) == 1 or len(set(bases)) == 1:  # no clash, or one the suffix cannot settle
            bases = [src.stem for src, _ in group]
        # else each takes <stem>_<ext>: a.jpg's is free; a.png and a.PNG still share one, refused below
        for (src, rel), base in zip(group, bases):
            planned.append((src, *outputs(src, rel, base)))
    inputs_real = {os.path.realpath(src) for src, _ in unique}
    taken: dict[str, Path] = {}
    jobs = []
    order = {src: i for i, (src, _) in enumerate(unique)}
    for src, target, cmp in sorted(planned, key=lambda t: order[t[0]]):
        paths = [target] + ([cmp] if cmp else [])
        clash = next((taken[os.path.normcase(os.path.abspath(p))] for p in paths
                      if os.path.normcase(os.path.abspath(p)) in taken), None)
        if clash is not None:
            refusals.append(f"{src} and {clash} would both be written to {target.name}; rename one "
                            "or enlarge them in separate runs")
            continue
        own = next((p for p in paths if os.path.realpath(p) in inputs_real), None)
        if own is not None:
            refusals.append(f"{own}: output would overwrite its input (an input of this run); not written, "
                            "choose another -o")
            continue
        for p in paths:
            taken[os.path.normcase(os.path.abspath(p))] = src
        jobs.append(Job(src, target, cmp))
    return jobs, refusals


def remove_stale_outputs(folders) -> list[Path]:
    """Remove, in each folder, the temporaries of image outputs (``.<name>.<pid>.<hex>.tmp`` with
    an image suffix in ``name``) whose writing process is gone (a run killed with ``kill -9``).
    Returns what was removed."""
    removed = []
    for folder in folders:
        removed += remove_stale_temporaries(folder, ".tmp", name=lambda n: Path(n).suffix.lower() in SUFFIXES
                                            or Path(n).suffix.lower() in VIDEO_SUFFIXES)
    return removed


# -- enlarging one image ---------------------------------------------------------------------------

def label_compare(img: np.ndarray, scale) -> np.ndarray:
    """Put "bicubic" on the left half and "SRCNN x<scale>" (``x2.5``, ``w1000``: :func:`_tag`) on the right half of a side-by-side
    image ``(H, 2W, C)`` (any integer dtype), in place: white text on a black box in the top
    left of each half, fully opaque where there is alpha. Too small an image stays unlabelled."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    h, w2 = img.shape[:2]
    half = w2 // 2
    size = max(10, min(h, half) // 16)
    if h < 2 * size or half < 5 * size:
        return img
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # no FreeType: the small bitmap font
        font = ImageFont.load_default()
    top = img.dtype.type(np.iinfo(img.dtype).max)
    for x0, text in ((0, "bicubic"), (half, f"SRCNN {_tag(scale)}")):
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        left, upper, right, lower = probe.textbbox((0, 0), text, font=font)
        pad = max(2, size // 4)
        bw, bh = min(right + 2 * pad, half), min(lower + 2 * pad, h)
        mask = Image.new("L", (bw, bh), 0)
        ImageDraw.Draw(mask).text((pad, pad), text, fill=255, font=font)
        text_px = np.asarray(mask) >= 128
        box = img[:bh, x0:x0 + bw]
        colour = box.shape[2] if box.ndim == 3 else 1
        has_alpha = colour in (2, 4)
        grey = slice(0, colour - 1 if has_alpha else colour)
        box[..., grey] = np.where(text_px[..., None], top, 0) if box.ndim == 3 else np.where(text_px, top, 0)
        if has_alpha:
            box[..., -1] = top
    return img


def _all_exist(job: Job) -> bool:
    """Whether every output planned for ``job`` is already there (``--skip-existing``)."""
    return all(os.path.lexists(p) for p in (job.target, job.compare) if p is not None)


def enlarge_job(job: Job, model: SRCNN | BundledModels, opts: Options, on_written=None, on_tile=None) -> list[Path]:
    """Enlarge one image and write its outputs; returns the paths written.

    Each output is created only if its name is free (unless ``opts.overwrite``). With a
    comparison asked for and the enlargement already there, the enlargement is kept and only
    the comparison is written. Raises ``ValueError``/``OSError`` with a one-line message; a
    comparison that cannot be written is raised after the enlargement is written (and reported
    through ``on_written(path)``, called as each file is complete). With ``opts.skip_existing``
    an output already there is kept and not an error, and with every output there nothing is
    read and ``[]`` returned (the caller counts it as skipped). ``model``: the network, or
    :class:`~tinysr.image.enlarge.BundledModels` to take the bundled one nearest each image's scale. ``on_tile(done, total)``:
    the enlargement's progress (:func:`tinysr.image.enlarge.enlarge`).
    """
    src, target, cmp = job.src, job.target, job.compare
    if os.path.lexists(target) and os.path.realpath(target) == os.path.realpath(src):
        raise ValueError(f"{target}: output would overwrite its input; choose another -o")
    keep_sr = not opts.overwrite and os.path.lexists(target)
    if opts.skip_existing and not opts.overwrite and _all_exist(job):
        return []  # a resumed batch: nothing to do here
    if keep_sr and cmp is None:
        raise ValueError(f"{target} exists (use --overwrite to replace it)")
    if cmp is not None and not opts.overwrite and not opts.skip_existing and os.path.lexists(cmp):
        raise ValueError(f"{cmp} exists (use --overwrite to replace it)")
    keep_cmp = cmp is not None and not opts.overwrite and os.path.lexists(cmp)
    pixels, kind, meta = read_image(src, opts.max_pixels)
    if opts.fmt == "jpg" and kind in ("LA", "RGBA"):
        raise ValueError(f"{src}: has an alpha channel, which JPEG cannot hold; use --format png, webp or tiff")
    if kind in ("LA16", "RGB16", "RGBA16") and not FORMATS[opts.fmt][3]:  # never narrowed to 8 bits unasked
        raise ValueError(f"{src}: 16 bits per channel, which {opts.fmt} cannot hold; use --format png or tiff")
    sized = opts.width is not None or opts.height is not None
    in_hw = pixels.shape[:2]
    out_hw = output_size(in_hw, None if sized else opts.scale, opts.width, opts.height)
    if isinstance(model, BundledModels):
        model = model(network_scale(in_hw, out_hw))
    sr, bic = enlarge(pixels, kind, model, opts.scale, tile=opts.tile or None, bicubic=cmp is not None and not keep_cmp,
                      on_tile=on_tile, size=out_hw if sized else None)
    del pixels
    dpi = enlarged_dpi(meta, (out_hw[1] / in_hw[1], out_hw[0] / in_hw[0]))  # the print size stays
    written = []

    def write(path, px, tags=not opts.strip_metadata):
        try:
            write_image(path, px, fmt=opts.fmt, quality=opts.quality, icc=meta["icc"], dpi=dpi,
                        overwrite=opts.overwrite, exif=meta["exif"] if tags else None,
                        xmp=meta["xmp"] if tags else None)
        except FileExistsError:
            raise ValueError(f"{path} exists (use --overwrite to replace it); written meanwhile by "
                             "someone else, kept") from None
        written.append(path)
        if on_written:
            on_written(path)

    if not keep_sr:
        write(target, sr)
    if cmp is not None and not keep_cmp:
        both = np.concatenate([bic, sr], axis=1)
        del bic
        write(cmp, label_compare(both, size_tag(None, opts.width, opts.height) if sized else opts.scale), False)
    return written
