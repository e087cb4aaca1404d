"""tinysr's Python API: enlarge images, load a network, score a folder.

    import tinysr
    big = tinysr.upscale("photo.png", 3)                  # a PIL.Image, 3x larger
    arr = tinysr.upscale(np_uint8_rgb, 2)                 # an array of the same dtype and layout
    model = tinysr.load_model(3)                          # the bundled x3 SRCNN
    res = tinysr.evaluate_folder("Set5", 3)               # PSNR/SSIM under the authors' protocol

:func:`upscale` runs the pipeline of ``tinysr upscale`` (:func:`tinysr.image.enlarge.enlarge` on the
pixels and kind :mod:`tinysr.image.io` reads), so it returns the pixels the command writes:
colour goes through Matlab BT.601 YCbCr with SRCNN on Y, grayscale stays grayscale, alpha is
bicubic-enlarged and kept, 16 bits per sample stay 16 bits (16-bit colour from a file comes back as
an :class:`tinysr.image.io.Image16`, which saves as a 16-bit PNG or TIFF). These functions are what ``import
tinysr`` exposes (lazily: ``import tinysr`` alone imports no NumPy).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from tinysr.errors import NoSuchFile
from tinysr.progress import tile_callback
from tinysr.image.enlarge import array_kind, check_scale, enlarge, network_scale, output_size
from tinysr.image.inference import AUTO, restore_y
from tinysr.image.io import Image16, default_max_pixels, enlarged_dpi, image_meta, pixels_from_image, read_image
from tinysr.image.jpeg_quality import DENOISE_CHOICES, choose_level, denoise_weights, file_jpeg_quality, jpeg_quality
from tinysr.nn.model import SRCNN
from tinysr.ops.backend import resolve_backend
from tinysr.protocol.evaluation import evaluate_dir
from tinysr.weights import bundled_path, load_weights

__all__ = ["upscale", "upscale_video", "load_model", "evaluate_folder", "SRCNN"]

def _check_scale(scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer (2, 3 or 4 for the bundled weights), got {scale!r}")
    return int(scale)


def _bundled(scale: int) -> Path:
    return bundled_path(scale, "pass weights= a .npz or .mat file or an SRCNN")


def _weights_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise NoSuchFile(f"{path}: no such weights file")
    return path


def _model(weights, scale: int, backend: str) -> SRCNN:
    """The network for ``weights`` (None: bundled for ``scale``; a path; an SRCNN) on ``backend``."""
    xp = resolve_backend(backend)
    if isinstance(weights, SRCNN):
        return weights if weights.xp is xp else weights.to(xp)
    if weights is None:
        return load_weights(_bundled(scale), xp=xp)
    if isinstance(weights, (str, os.PathLike)):
        return load_weights(_weights_file(weights), xp=xp)
    raise TypeError(f"weights must be None, a path (.npz or .mat) or an SRCNN, got {type(weights).__name__}")


def _array_pixels(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """A caller's ``(H, W)`` / ``(H, W, C)`` uint8 or uint16 array -> enlarge's ``(H, W, C)`` pixels and kind."""
    kind = array_kind(arr.shape, arr.dtype)
    return (arr[:, :, None] if arr.ndim == 2 else arr), kind


def _as_image(pixels: np.ndarray, meta: dict, scale) -> Image.Image:
    """enlarge's ``(H, W, C)`` output -> a PIL image (``L``, ``LA``, ``RGB``, ``RGBA`` or ``I;16``)
    with the input's ICC profile and its DPI times ``scale`` in ``info``, as the command writes them;
    16-bit colour or gray + alpha, which a PIL image cannot hold, an :class:`~tinysr.image.io.Image16`."""
    if pixels.dtype == np.uint16 and pixels.shape[2] > 1:
        info = {"icc_profile": meta.get("icc"), "dpi": enlarged_dpi(meta, scale), "exif": meta.get("exif"),
                "xmp": meta.get("xmp")}
        return Image16(pixels, {k: v for k, v in info.items() if v})
    im = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    if meta.get("icc"):
        im.info["icc_profile"] = meta["icc"]
    if meta.get("dpi"):
        im.info["dpi"] = enlarged_dpi(meta, scale)
    for key in ("exif", "xmp"):
        if meta.get(key):
            im.info[key] = meta[key]
    # What im.save(...) writes without being told (Pillow merges an image's own encoderinfo into
    # save's options): the DPI, EXIF and XMP, as the command writes them.
    im.encoderinfo = {k: v for k, v in (("dpi", im.info.get("dpi")), ("exif", meta.get("exif")),
                                        ("xmp", meta.get("xmp"))) if v}
    return im


def upscale(image, scale: float | None = None, *, width: int | None = None, height: int | None = None,
            weights=None, backend: str = "numpy", tile: int | None = None, progress=False, denoise: str = "auto"):
    """Enlarge ``image`` by ``scale`` (or to ``width``/``height``) with SRCNN, exactly as ``tinysr upscale`` does.

    Args:
        image: one of
            - a ``PIL.Image.Image``: ``L``, ``LA``, ``RGB``, ``RGBA``, 16-bit grayscale (``I;16``),
              or a mode tinysr converts (palette -> RGB(A), ``PA`` -> RGBA, CMYK and YCbCr -> RGB,
              1-bit -> L); turned upright by its EXIF orientation, as the command does;
            - a path (``str`` or ``os.PathLike``) of an image file, read as the command reads it
              (one larger than this machine's memory holds for the enlargement,
              :func:`tinysr.image.io.default_max_pixels`, is refused from its header);
            - a NumPy array: uint8 ``(H, W)`` or ``(H, W, C)`` with C = 1 (gray), 2 (gray + alpha),
              3 (RGB), 4 (RGBA), on 0..255; or uint16 in the same layouts on 0..65535 (16 bits per
              sample, enlarged at 16 bits).
        scale: the enlargement factor, any number > 1 (default 3 unless ``width``/``height``); the
            bicubic step is Matlab's ``imresize(img, scale)`` (``ceil(scale * H)`` rows), and the
            bundled network nearest ``scale`` restores Y (2, 3, 4 ship; x2.5 uses x2, x3.5 uses x3:
            :func:`tinysr.image.enlarge.network_scale`).
        width, height: the output size in pixels instead of a scale: one of them keeps the aspect
            (the other side rounded half up), both give that exact size
            (:func:`tinysr.image.enlarge.output_size`); it must enlarge the image.
        weights: ``None`` (the bundled weights for ``scale``), a tinysr ``.npz`` or the authors'
            ``.mat`` file, or an :class:`SRCNN` (moved to ``backend`` if it lives elsewhere).
        backend: ``"numpy"`` (CPU), ``"cupy"`` (GPU) or ``"auto"``.
        tile: output tile edge in pixels; ``None``: the command's default (``"auto"``: 512 on the
            CPU, on the GPU the largest its free memory allows); 0: the whole
            image in one piece. The memory of a run grows with ``tile**2``.
        progress: ``False`` (nothing shown); ``True``: a bar of the output tiles on stderr, also
            where it is no terminal (a notebook), for images of 4 tiles or more; a callable
            ``progress(done, total)``: called with the tiles done and their number, ``(0, T)``
            first, then after each tile up to ``(T, T)``, on the calling thread (an exception it
            raises stops the work); or a :class:`tinysr.progress.Progress`. No effect on the pixels.
        denoise: which bundled model restores it (:mod:`tinysr.image.jpeg_quality`): ``"auto"``
            (a JPEG file or a ``PIL.Image`` opened from one: the model for its estimated quality;
            anything else, arrays included: the clean model), ``"none"`` (the clean model),
            ``"low"``, ``"medium"`` or ``"high"`` (the compression-aware models, for JPEG quality
            about 80-97, 55-79 and below 55). With ``weights`` given only ``"auto"`` or ``"none"``.

    Returns:
        The same kind as ``image``, ``scale`` times larger in each direction (or of the size asked): a ``PIL.Image`` for
        an image or a path (mode ``L``, ``LA``, ``RGB``, ``RGBA`` or ``I;16``; for a 16-bit colour
        or gray + alpha file (48/64-bit PNG, 16-bit TIFF) an :class:`tinysr.image.io.Image16`, whose
        ``save`` writes a 16-bit PNG or TIFF and ``np.asarray`` gives its uint16 pixels; its ``info`` holds
        the input's ICC profile, where it fits the output, and its DPI times ``scale``, as the
        command writes them); for an array, an array of its dtype and layout (``(s*H, s*W)``
        for ``(H, W)``, ``(s*H, s*W, C)`` for ``(H, W, C)``; ``s*H`` rounded up).

    Raises:
        FileNotFoundError: ``image`` or ``weights`` names no file.
        ValueError: a bad ``scale`` or ``tile``, an unreadable or unsupported image, an array of
            another dtype or channel count, no bundled weights for ``scale``, bad weights.
        TypeError: ``image``, ``weights`` or ``progress`` of another type.
        tinysr.ops.backend.BackendError: the backend cannot run here (e.g. no CuPy).
    """
    sized = width is not None or height is not None
    if sized and scale is not None:
        raise ValueError("give scale or width/height, not both")
    scale = None if sized else check_scale(3 if scale is None else scale)
    if tile is None:
        tile = AUTO
    elif tile != AUTO and (isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 0):
        raise ValueError(f"tile must be None, 'auto' or an integer >= 0, got {tile!r}")
    else:
        tile = tile if tile == AUTO else int(tile) or None
    named = isinstance(image, (str, os.PathLike))
    with tile_callback(progress, desc=Path(image).name if named else "upscale") as on_tile:  # checks progress
        pixels, kind, finish = _input(image, scale)
        in_hw = pixels.shape[:2]
        out_hw = output_size(in_hw, scale, width, height)
        net = network_scale(in_hw, out_hw)
        model = _model(_denoise_weights(weights, denoise, image, net), net, backend)
        sr, _ = enlarge(pixels, kind, model, scale or 1, tile=tile, on_tile=on_tile, size=out_hw if sized else None)
    return finish(sr, (out_hw[1] / in_hw[1], out_hw[0] / in_hw[0]))


def _denoise_weights(weights, denoise, image, scale: int):
    """``weights``, or where it is ``None`` the bundled weights ``denoise`` picks for ``image``."""
    if not isinstance(denoise, str) or denoise not in DENOISE_CHOICES:
        raise ValueError(f"denoise must be one of {', '.join(DENOISE_CHOICES)}, got {denoise!r}")
    if weights is not None:
        if denoise not in ("auto", "none"):
            raise ValueError(f"denoise={denoise!r} picks bundled weights; it cannot go with weights=")
        return weights
    if isinstance(image, Image.Image):
        quality = jpeg_quality(image)
    elif isinstance(image, (str, os.PathLike)):
        quality = file_jpeg_quality(image)
    else:
        quality = None
    level = choose_level(denoise, quality)
    return None if level == "none" else denoise_weights(scale, level)


def _input(image, scale):
    """:func:`upscale`'s ``image`` -> ``(pixels, kind, finish)``: enlarge's ``(H, W, C)`` integer
    pixels and kind, and ``finish(sr, (sx, sy))`` turning its ``(s*H, s*W, C)`` output (``sx``, ``sy``
    times larger) into ``image``'s kind. ``scale`` None: an output size (the memory limit is the reading's)."""
    if isinstance(image, Image.Image):
        pixels, kind = pixels_from_image(image)
        meta = image_meta(image)
        return pixels, kind, lambda sr, factors: _as_image(sr, meta, factors)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise NoSuchFile(f"{path}: no such image file")
        pixels, kind, meta = read_image(path, default_max_pixels(math.ceil(scale) if scale else 1))
        return pixels, kind, lambda sr, factors: _as_image(sr, meta, factors)
    if isinstance(image, np.ndarray):
        pixels, kind = _array_pixels(image)
        return pixels, kind, (lambda sr, _: sr[:, :, 0]) if image.ndim == 2 else (lambda sr, _: sr)
    raise TypeError(f"image must be a PIL.Image, a path or a NumPy array, got {type(image).__name__}")


def upscale_video(src, dst, scale: float | None = None, *, width: int | None = None, height: int | None = None,
                  weights=None, backend: str = "numpy", codec: str | None = None, crf: int | None = None,
                  preset: str | None = None, overwrite: bool = False, tile: int | None = None, progress=False) -> Path:
    """Enlarge the video file ``src`` into ``dst``, as ``tinysr upscale clip.mp4 -o big.mp4`` does
    (:func:`tinysr.image.video.upscale_video`; needs the ``[video]`` extra, ``pip install "tinysr[video]"``).

    Each frame's Y' (the video's own luma, e.g. BT.709) is enlarged by :func:`tinysr.image.enlarge.enlarge`
    as images are, Cb/Cr by the Matlab bicubic; same frame count, timestamps and frame rate; audio
    and subtitles copied untouched; colour tags and rotation kept; written atomically.

    Args:
        src, dst: video paths; ``dst``'s suffix (``.mp4``, ``.mkv``, ``.mov``, ``.webm``, ``.m4v``) picks the container.
        scale, width, height: as :func:`upscale` (default scale 3); the size is rounded up to whole chroma samples (even for 4:2:0).
        weights, backend, tile: as :func:`upscale`.
        codec, crf, preset: the encoder (default ``libx264``, crf 18, preset ``medium``).
        overwrite: replace an existing ``dst`` (otherwise ``FileExistsError``).
        progress: ``False``, ``True`` (a frame bar with ETA on stderr) or ``progress(done, total)`` per frame.

    Returns ``dst`` as a ``Path``. Raises ``ImportError`` without PyAV, ``ValueError`` for a bad
    size, an unreadable video, an unknown codec.
    """
    from tinysr.image.enlarge import BundledModels  # noqa: PLC0415
    from tinysr.image.video import upscale_video as transcode  # noqa: PLC0415

    sized = width is not None or height is not None
    if sized and scale is not None:
        raise ValueError("give scale or width/height, not both")
    scale = None if sized else check_scale(3 if scale is None else scale)
    model = _model(weights, 0, backend) if weights is not None else BundledModels(resolve_backend(backend))
    with tile_callback(progress, desc=Path(src).name, unit="frame", least=1) as on_frame:
        return transcode(src, dst, model, scale, width=width, height=height, codec=codec, crf=crf, preset=preset,
                         overwrite=overwrite, tile=AUTO if tile is None else (int(tile) or None), on_frame=on_frame)


def load_model(scale_or_path, *, backend: str = "numpy") -> SRCNN:
    """An :class:`SRCNN` with trained weights, float32 on ``backend`` (``"numpy"``, ``"cupy"``, ``"auto"``).

    ``scale_or_path``: 2, 3 or 4 for the bundled 9-1-5 weights of that scale, or the path of a
    tinysr ``.npz`` (model or checkpoint) or the authors' ``.mat``. The model's
    ``predict(y)`` restores one bicubic-upscaled Y plane: ``y`` ``(H, W)`` float32 on [0, 1], on
    the model's device -> ``(H, W)`` on the same scale (replicate padding, not clipped).
    """
    if isinstance(scale_or_path, (str, os.PathLike)):
        return load_weights(_weights_file(scale_or_path), xp=resolve_backend(backend))
    return load_weights(_bundled(_check_scale(scale_or_path)), xp=resolve_backend(backend))


def evaluate_folder(folder, scale: int, *, weights=None, bicubic: bool = False, backend: str = "numpy") -> dict:
    """PSNR and SSIM of SRCNN (or bicubic) on every image of ``folder``, under the authors' protocol.

    The numbers of ``tinysr evaluate FOLDER --scale S --json`` (:mod:`tinysr.protocol.evaluation`): luma
    (Matlab BT.601 Y) of each image cropped to a multiple of ``scale``, Matlab-bicubic down and
    back up, the network on Y, both rounded to uint8, ``scale`` pixels shaved from each border.

    Args:
        folder: a folder of ground-truth images (``.bmp``, ``.png``, ``.jpg``, ``.tif``...).
        scale: 2, 3 or 4 (any positive integer with your own ``weights``).
        weights: ``None`` (bundled for ``scale``), a ``.npz``/``.mat`` path or an :class:`SRCNN`.
        bicubic: score the bicubic baseline instead of a network (no ``weights`` then).
        backend: ``"numpy"``, ``"cupy"`` or ``"auto"``.

    Returns:
        ``{"dataset": folder name, "scale": s, "method": str, "mean": {"psnr": dB, "ssim": float},
        "images": [{"name": file stem, "psnr": dB, "ssim": float}, ...]}``, the images sorted by
        file name; PSNR in dB on 0..255 luma, SSIM in [-1, 1].

    Raises:
        FileNotFoundError: no such folder (or weights file). NotADirectoryError: ``folder`` is a
        file. ValueError: no images in it, a bad ``scale``, ``weights`` together with ``bicubic``.
    """
    scale = _check_scale(scale)
    folder = Path(folder)
    if bicubic:
        if weights is not None:
            raise ValueError("pass weights or bicubic=True, not both")
        method, predict = "bicubic", None
    else:
        model = _model(weights, scale, backend)
        if weights is None:
            method = f"tinysr x{scale} ({model.arch})"
        elif isinstance(weights, SRCNN):
            method = f"SRCNN ({model.arch})"
        else:
            method = f"{Path(weights).name} ({model.arch})"

        def predict(y):
            return restore_y(model, y, tile=AUTO)

    rows = evaluate_dir(folder, scale, predict)
    mean = {"psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows]))}
    return {"dataset": folder.name, "scale": scale, "method": method, "mean": mean,
            "images": [{"name": r["name"], "psnr": float(r["psnr"]), "ssim": float(r["ssim"])} for r in rows]}
