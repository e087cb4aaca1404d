"""Enlarging a video: every frame's own Y'CbCr, Y restored by SRCNN, sound and subtitles untouched.

PyAV (FFmpeg's libraries in its wheel, the ``[video]`` extra) decodes and encodes. For each
decoded frame, in its own pixel format (8-bit planar Y'CbCr: ``yuv420p``, ``yuv422p``,
``yuv444p`` and their full-range ``yuvj`` twins; any other format is converted to ``yuv420p``
first):

- the Y plane goes through :func:`tinysr.image.enlarge.enlarge` as a one-plane ``L`` image (the
  function every image takes: Matlab bicubic, the network on Y, rounded to uint8), so the
  network sees the video's own luma ``Y' / 255``: BT.709 luma for BT.709 video, BT.601 luma for
  BT.601 video, studio swing (16..235) for limited-range video, as Matlab's BT.601 Y it was
  trained on is; nothing is converted through RGB;
- Cb and Cr are Matlab-bicubic-resized to the output's chroma size
  (:func:`tinysr.image.enlarge.resize_to`).

The output size is the images' (:func:`tinysr.image.enlarge.output_size`), rounded up to whole
chroma samples (even for 4:2:0: ``-s 2.5`` of 640x360 gives 1600x900). Frames keep their
timestamps in the input's time base, so the frame count, frame rate, duration and sync are the
input's. Audio and subtitle streams are copied packet by packet (remuxed, not re-encoded); the
colour tags (range, matrix, primaries, transfer) and the display rotation are carried over. The
video is encoded with ``codec`` (H.264 ``libx264`` by default, ``libvpx-vp9`` for ``.webm``;
``crf`` and ``preset`` passed to the encoder). The output is written to a temporary beside it
and renamed at the end (:func:`tinysr.atomic.atomic_write`): an error, a full disk or Ctrl-C
leaves nothing under the final name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tinysr.image.enlarge import BundledModels, enlarge, network_scale, output_size, resize_to

# suffix -> FFmpeg container (muxer) name
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
VIDEO_SUFFIXES = frozenset(CONTAINERS)
DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"
# 8-bit planar Y'CbCr formats enlarged as they are: name -> (chroma rows, chroma columns) subsampling
PLANAR = {"yuv420p": (2, 2), "yuvj420p": (2, 2), "yuv422p": (1, 2), "yuvj422p": (1, 2),
          "yuv444p": (1, 1), "yuvj444p": (1, 1)}
EXTRA = 'pip install "tinysr[video]"'


def require_av():
    """The ``av`` module, or ``ImportError`` in one line naming the extra."""
    try:
        import av  # noqa: PLC0415
    except ImportError:
        raise ImportError(f"video needs PyAV, which is not installed: {EXTRA}") from None
    return av


@functools.cache
def video_encoders() -> tuple[str, ...]:
    """The video encoders of PyAV's FFmpeg that take the planar Y'CbCr frames tinysr encodes (:data:`PLANAR`), sorted."""
    av = require_av()
    names = []
    for name in sorted(av.codecs_available):
        try:
            codec = av.Codec(name, "w")
        except Exception:  # a decoder only, or a name FFmpeg lists but cannot open
            continue
        if codec.type == "video" and {f.name for f in codec.video_formats or ()} & set(PLANAR):
            names.append(name)
    return tuple(names)


def check_codec(codec: str) -> None:
    """``ValueError`` in one line, listing :func:`video_encoders`, unless ``codec`` is one of them."""
    if codec not in video_encoders():
        raise ValueError(f"--codec {codec}: not a video encoder of this FFmpeg (PyAV's wheel); it has "
                         f"{', '.join(video_encoders())}")


def is_video(path) -> bool:
    """Whether ``path``'s suffix is a video container tinysr reads and writes (:data:`CONTAINERS`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _planes(frame) -> list[np.ndarray]:
    """A planar frame's planes as ``(h, w)`` uint8 arrays (the line padding dropped)."""
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        out.append(rows[:, :plane.width])
    return out


def enlarge_planes(planes: list[np.ndarray], sub: tuple[int, int], model, out_hw: tuple[int, int],
                   tile=None) -> list[np.ndarray]:
    """One frame's ``[Y, Cb, Cr]`` uint8 planes -> the enlarged planes: Y through
    :func:`tinysr.image.enlarge.enlarge` (as an ``L`` image, to ``out_hw``), Cb and Cr
    Matlab-bicubic to ``out_hw`` divided by the chroma subsampling ``sub`` (rows, columns)."""
    y, _ = enlarge(np.ascontiguousarray(planes[0])[:, :, None], "L", model, 1, tile=tile, size=out_hw)
    chroma_hw = (out_hw[0] // sub[0], out_hw[1] // sub[1])
    return [y[:, :, 0]] + [resize_to(np.ascontiguousarray(c)[:, :, None], "L", chroma_hw, tile)[:, :, 0]
                           for c in planes[1:]]


def video_size(in_hw: tuple[int, int], sub: tuple[int, int], scale=None, width=None, height=None) -> tuple[int, int]:
    """The enlarged frame's ``(rows, cols)``: :func:`output_size`, rounded up to whole chroma samples."""
    oh, ow = output_size(in_hw, scale, width, height)
    return math.ceil(oh / sub[0]) * sub[0], math.ceil(ow / sub[1]) * sub[1]


def upscale_video(src, dst, model, scale=None, *, width: int | None = None, height: int | None = None,
                  codec: str | None = None, crf: int | None = None, preset: str | None = None,
                  max_pixels: int | None = None, overwrite: bool = False, tile=None,
                  on_frame: Callable[[int, int], None] | None = None) -> Path:
    """Enlarge the video ``src`` into ``dst`` (see the module).

    Args:
        src, dst: paths; ``dst``'s suffix picks the container (:data:`CONTAINERS`).
        model: an :class:`~tinysr.nn.model.SRCNN`, or :class:`~tinysr.image.enlarge.BundledModels`
            to take the bundled network for the size (:func:`~tinysr.image.enlarge.network_scale`).
        scale, width, height: the size, as :func:`tinysr.image.enlarge.output_size` takes them.
        codec: an FFmpeg encoder name (default ``libx264``; ``libvpx-vp9`` for ``.webm``).
        crf, preset: the encoder's quality and speed options (default 18 and ``medium`` for the
            x264/x265 encoders; omitted for others unless given).
        max_pixels: refuse frames larger than this (width x height), before decoding.
        overwrite: replace an existing ``dst``; otherwise its name is taken only if free.
        on_frame: ``on_frame(done, total)`` after each frame (``total``: the container's frame
            count, or duration x rate, an estimate); ``(0, total)`` first.

    Returns ``dst``. Raises ``ValueError`` (one line: unreadable video, no video stream, a frame
    over ``max_pixels``, a stream the output container cannot hold, an unknown codec),
    ``FileExistsError``, ``OSError``, ``ImportError`` (no PyAV).
    """
    from tinysr.atomic import atomic_write  # noqa: PLC0415

    av = require_av()
    src, dst = Path(src), Path(dst)
    container = CONTAINERS.get(dst.suffix.lower())
    if container is None:
        raise ValueError(f"{dst}: tinysr writes videos as {', '.join(sorted(CONTAINERS))}, not {dst.suffix or 'no suffix'}")
    codec = codec or ("libvpx-vp9" if container == "webm" else DEFAULT_CODEC)
    check_codec(codec)
    try:
        probe = _probe(av, src)
    except av.FFmpegError as exc:
        raise ValueError(f"{src}: not a readable video ({exc.strerror or exc})") from None
    in_hw, fmt, rotation, total = probe
    if max_pixels and in_hw[0] * in_hw[1] > max_pixels:
        raise ValueError(f"{src}: frames of {in_hw[1]}x{in_hw[0]} are over the limit of {max_pixels} pixels (--max-pixels)")
    sub = PLANAR.get(fmt, (2, 2))
    out_hw = video_size(in_hw, sub, scale, width, height)
    net = model(network_scale(in_hw, out_hw)) if isinstance(model, BundledModels) else model
    options = {}
    if crf is not None or codec in ("libx264", "libx265"):
        options["crf"] = str(DEFAULT_CRF if crf is None else crf)
    if preset is not None or codec in ("libx264", "libx265"):
        options["preset"] = preset or DEFAULT_PRESET

    def write(f):
        _transcode(av, src, f, container, codec, options, out_hw, net, fmt, rotation, total, tile, on_frame)

    try:
        return atomic_write(dst, write, replace=overwrite)
    except av.FFmpegError as exc:
        raise ValueError(f"{src} -> {dst}: {' '.join(str(exc.strerror or exc).split())}") from None


def _probe(av, src: Path):
    """``((rows, cols), pixel format, rotation in degrees, frame count estimate)`` from the first frame."""
    with av.open(str(src)) as c:
        if not c.streams.video:
            raise ValueError(f"{src}: no video stream")
        vs = c.streams.video[0]
        frame = next(c.decode(vs), None)
        if frame is None:
            raise ValueError(f"{src}: the video stream has no frames")
        total = vs.frames
        if not total and vs.duration and vs.average_rate:
            total = round(float(vs.duration * vs.time_base * vs.average_rate))
        elif not total and c.duration and vs.average_rate:
            total = round(c.duration / 1e6 * float(vs.average_rate))
        return (frame.height, frame.width), frame.format.name, frame.rotation, int(total or 0)


def _transcode(av, src, f, container, codec, options, out_hw, model, fmt, rotation, total, tile, on_frame):
    with av.open(str(src)) as inp, av.open(f, "w", format=container) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream(codec, rate=vin.average_rate or vin.guessed_rate, options=options)
        vout.height, vout.width = out_hw
        vout.pix_fmt = fmt.replace("yuvj", "yuv") if fmt in PLANAR else "yuv420p"
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        cin, cout = vin.codec_context, vout.codec_context
        for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
            setattr(cout, tag, getattr(cin, tag))
        if fmt.startswith("yuvj"):
            cout.color_range = 2  # full range (JPEG), which the yuvj formats say
        if rotation:
            vout.set_display_rotation(rotation)
        copied = {}
        for s in inp.streams:
            if s.type in ("audio", "subtitle"):
                try:
                    copied[s.index] = out.add_stream_from_template(s)
                except ValueError:  # e.g. SubRip text in MP4
                    raise ValueError(f"{src}: its {s.type} stream ({s.codec_context.name}) cannot go into "
                                     f"{container}; write another container (.mkv holds most)") from None
        done = 0
        if on_frame:
            on_frame(0, total)
        for packet in inp.demux(vin, *(inp.streams[i] for i in copied)):
            if packet.stream.index != vin.index:
                if packet.dts is not None:
                    packet.stream = copied[packet.stream.index]
                    out.mux(packet)
                continue
            for frame in packet.decode():
                for p in vout.encode(_enlarged_frame(av, frame, fmt, vout.pix_fmt, model, out_hw, tile)):
                    out.mux(p)
                done += 1
                if on_frame:
                    on_frame(done, max(total, done))
        for p in vout.encode():
            out.mux(p)


def _enlarged_frame(av, frame, fmt: str, out_fmt: str, model, out_hw, tile):
    """One decoded frame -> the enlarged ``av.VideoFrame`` (its timestamps and colour tags kept)."""
    if fmt not in PLANAR:  # 10-bit, packed, semi-planar...: 8-bit 4:2:0
        frame = frame.reformat(format="yuv420p")
    elif frame.format.name != fmt:  # a format change mid-stream
        frame = frame.reformat(format=fmt)
    sub = PLANAR.get(fmt, (2, 2))
    planes = enlarge_planes(_planes(frame), sub, model, out_hw, tile)
    new = av.VideoFrame(out_hw[1], out_hw[0], out_fmt)
    for plane, px in zip(new.planes, planes):
        rows = np.zeros((plane.height, plane.line_size), np.uint8)
        rows[:, :plane.width] = px
        plane.update(rows)
    new.pts, new.time_base = frame.pts, frame.time_base
    for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
        setattr(new, tag, getattr(frame, tag))
    return new


def enlarge_video_job(job, model, opts, on_written=None, on_frame=None) -> list[Path]:
    """``tinysr upscale``'s step for one video: :func:`upscale_video` of ``job.src`` into
    ``job.target`` with ``opts`` (:class:`tinysr.image.jobs.Options`: size, codec, overwrite, skip).
    Returns ``[target]``, or ``[]`` when it is there and ``opts.skip_existing``; ``ValueError``
    (one line) when it is there otherwise."""
    import os  # noqa: PLC0415

    if os.path.lexists(job.target) and not opts.overwrite:
        if opts.skip_existing:
            return []
        raise ValueError(f"{job.target} exists (use --overwrite to replace it)")
    sized = opts.width is not None or opts.height is not None
    try:
        upscale_video(job.src, job.target, model, None if sized else opts.scale, width=opts.width, height=opts.height,
                      codec=opts.codec, crf=opts.crf, preset=opts.preset, max_pixels=opts.max_pixels,
                      overwrite=opts.overwrite, tile=opts.tile, on_frame=on_frame)
    except FileExistsError:
        raise ValueError(f"{job.target} exists (use --overwrite to replace it); written meanwhile by someone "
                         "else, kept") from None
    except OSError as exc:  # a full disk, a file size limit: the temporary is gone already
        raise ValueError(f"{job.target}: not written ({exc.strerror or exc}); nothing left under that name") from None
    if on_written:
        on_written(job.target)
    return [job.target]
