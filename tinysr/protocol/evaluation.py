"""The SRCNN evaluation protocol (the authors' ``demo_SR.m``), without any network.

Steps, for scale ``s``:

1. read the image as uint8; 3 channels -> Y with Matlab ``rgb2ycbcr`` (BT.601 studio swing);
   a single channel is used as Y directly (:func:`read_y_uint8`);
2. ``modcrop(Y, s)``, then ``/ 255`` to float64 on [0, 1] (:func:`prepare_pair`);
3. low resolution: Matlab-bicubic ``imresize(., 1/s)``, then back up ``imresize(., s)`` in
   float64, no rounding in between -> the bicubic input on [0, 1] (:func:`prepare_pair`);
4. a restorer (e.g. SRCNN) maps that bicubic Y to a restored Y, same shape, [0, 1] scale;
5. ground truth and prediction -> ``uint8(x*255)`` (round half away from zero, saturate),
   shave ``s`` pixels from every border, PSNR and SSIM on the uint8 Y (:func:`score`).

:func:`evaluate_dir` runs all of it over a folder (bicubic baseline when no restorer is given).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tinysr.image.io import ImageTooLarge, open_image, physical_memory
from tinysr.protocol.color import rgb2y
from tinysr.protocol.degrade import jpeg_bytes
from tinysr.protocol.imresize import imresize
from tinysr.protocol.metrics import modcrop, psnr, shave, ssim, to_uint8_matlab

__all__ = ["IMAGE_EXTENSIONS", "UnsupportedImage", "list_images", "read_y_uint8", "read_uint8", "prepare_pair", "score",
           "evaluate_dir", "evaluate_dir_jpeg"]

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Memory per image pixel while it is evaluated: a handful of float64 planes (ground truth, low
# resolution, bicubic, prediction, the uint8 copies scored), with room to spare.
EVAL_BYTES_PER_PIXEL = 64


class UnsupportedImage(ValueError):
    """An image the protocol does not score (not 8-bit: 16-bit grayscale, 32-bit, float)."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files (extensions in :data:`IMAGE_EXTENSIONS`, any case) of ``folder``, sorted by name.

    Raises ``FileNotFoundError`` for a missing folder, ``NotADirectoryError`` for a file, and
    ``ValueError`` when it holds no supported image.
    """
    d = Path(folder)
    if not d.exists():
        raise FileNotFoundError(f"image folder not found: {d}")
    if not d.is_dir():
        raise NotADirectoryError(f"not a folder: {d}")
    files = sorted(
        (p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {d}")
    return files


def read_y_uint8(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an 8-bit image file and return its luma ``(H, W)`` uint8 on 0..255.

    RGB (and RGBA, whose alpha is ignored, and palette images, expanded to RGB) -> Y of Matlab
    ``rgb2ycbcr``; single-channel 8-bit (``L``, or 1-bit) images are used as Y directly.
    ``max_pixels`` and errors: as :func:`read_uint8`.
    """
    img = read_uint8(path, max_pixels)
    return img if img.ndim == 2 else rgb2y(img)


def read_uint8(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an 8-bit image file as uint8 on 0..255: ``(H, W, 3)`` RGB or ``(H, W)`` grayscale.

    RGBA (alpha ignored) and palette images -> RGB; ``L``, ``LA`` (alpha ignored) and 1-bit -> grayscale.
    ``max_pixels``: size limit checked on the header before decoding (``None``: what the
    machine's memory holds for evaluating it, ``EVAL_BYTES_PER_PIXEL`` per pixel; 0: none); Pillow's own
    decompression-bomb limit and warning do not apply. No EXIF turn: files are scored as stored.
    Raises ``OSError`` (missing, non-regular or unreadable file), :class:`UnsupportedImage` (a
    ``ValueError``: not 8-bit) or ``ValueError`` (too large), with the file name in a one-line message.
    """
    p = Path(path)
    try:
        limit = physical_memory() // EVAL_BYTES_PER_PIXEL if max_pixels is None else max_pixels
        advice = "what this machine's memory holds for evaluating it" if max_pixels is None else "max_pixels"
        with open_image(p, limit, advice) as im:
            mode = im.mode
            if mode in ("L", "1"):
                return np.asarray(im.convert("L"), dtype=np.uint8).copy()
            if mode == "LA":
                return np.asarray(im.getchannel("L"), dtype=np.uint8).copy()
            if mode in ("RGB", "RGBA", "P", "PA"):
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ImageTooLarge:
        raise
    except ValueError as exc:
        raise OSError(f"cannot read image {exc}") from None
    bits = "16-bit grayscale" if mode.startswith("I;16") else f"pixel format {mode!r}"
    raise UnsupportedImage(f"{p}: {bits}; the protocol scores 8-bit grayscale or RGB images")


def prepare_pair(y_uint8: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and bicubic input for one Y image.

    Args:
        y_uint8: ``(H, W)`` uint8 Y on 0..255.
        scale: integer upscaling factor ``s`` >= 1.

    Returns:
        ``(gt, bicubic)``: both ``(H', W')`` float64 on [0, 1], with ``H' = H - H % s`` and
        ``W' = W - W % s``; ``bicubic = imresize(imresize(gt, 1/s), s)`` (unrounded).
    """
    y = np.asarray(y_uint8)
    if y.ndim != 2 or y.dtype != np.uint8:
        raise ValueError(f"prepare_pair expects an (H, W) uint8 Y image, got {y.shape} {y.dtype}")
    s = _check_scale(scale)
    gt = modcrop(y, s).astype(np.float64) / 255.0
    if gt.shape[0] < s or gt.shape[1] < s:
        raise ValueError(f"image of shape {y.shape} is too small for scale {s}")
    low = imresize(gt, 1.0 / s)
    bicubic = imresize(low, float(s))
    if bicubic.shape != gt.shape:  # cannot happen for integer s; guards against misuse
        raise ValueError(f"bicubic shape {bicubic.shape} differs from ground truth {gt.shape}")
    return gt, bicubic


def score(gt_float: np.ndarray, pred_float: np.ndarray, scale: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of a prediction against the ground truth, both ``(H, W)`` on [0, 1].

    Both are converted with Matlab ``uint8(x*255)`` and shaved by ``scale`` pixels per border.
    """
    gt = np.asarray(gt_float)
    pred = np.asarray(pred_float)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"score: need two (H, W) images of equal shape, got {gt.shape} and {pred.shape}")
    s = _check_scale(scale)
    a = shave(to_uint8_matlab(gt), s)
    b = shave(to_uint8_matlab(pred), s)
    return psnr(a, b), ssim(a, b)


def evaluate_dir(
    folder: str | Path,
    scale: int,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    on_prediction: Callable[[str, np.ndarray], None] | None = None,
    on_image: Callable[[int, int], None] | None = None,
    on_skip: Callable[[Path, str], None] | None = None,
) -> list[dict]:
    """Evaluate every image of ``folder`` (sorted by file name) at ``scale``.

    ``predict`` maps the bicubic Y ``(H, W)`` float64 [0, 1] to the restored Y (same shape,
    [0, 1] scale, unclipped is fine); ``None`` scores the bicubic baseline itself.
    ``on_prediction(name, pred)``, when given, receives each image's stem and scored prediction
    (e.g. to save it). ``on_image(done, total)``, when given, is told the progress in images:
    once with ``done = 0`` before the first, then after each (e.g. a bar: :mod:`tinysr.cli.progress`).
    ``on_skip(path, why)``, when given, is told of each image the protocol cannot score
    (:class:`UnsupportedImage`, e.g. 16-bit), which is left out; without it such an image raises.
    ``ValueError`` when no image is left to score.
    Returns ``[{"name": file stem, "psnr": dB, "ssim": float}, ...]``.
    """
    s = _check_scale(scale)
    results = []
    paths = list_images(folder)
    if on_image is not None:
        on_image(0, len(paths))
    done = 0
    for path in paths:
        try:
            y = read_y_uint8(path)
        except UnsupportedImage as exc:
            if on_skip is None:
                raise
            on_skip(path, str(exc))
            y = None
        done += 1
        if y is None:
            if on_image is not None:
                on_image(done, len(paths))
            continue
        gt, bicubic = prepare_pair(y, s)
        if predict is None:
            pred = bicubic
        else:
            pred = np.asarray(predict(bicubic), dtype=np.float64)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"predict returned shape {pred.shape} for {path.name}, expected {gt.shape}"
                )
        if on_prediction is not None:
            on_prediction(path.stem, pred)
        p, q = score(gt, pred, s)
        results.append({"name": path.stem, "psnr": p, "ssim": q})
        if on_image is not None:
            on_image(done, len(paths))
    if not results:
        raise ValueError(f"{folder}: none of its {len(paths)} images can be scored (all skipped)")
    return results


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or int(scale) != scale or int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def evaluate_dir_jpeg(
    folder: str | Path,
    scale: int,
    quality: int | None,
    methods: dict[str, Callable[[Image.Image], np.ndarray] | None],
    on_image: Callable[[int, int], None] | None = None,
) -> dict[str, list[dict]]:
    """The JPEG protocol (issue #27) over every image of ``folder`` (sorted by file name).

    For scale ``s``: the uint8 ground truth (RGB, or grayscale), ``modcrop``-ed to ``s``, is
    Matlab-bicubic downscaled as uint8 and saved by Pillow as a JPEG at ``quality`` (4:2:0;
    :func:`tinysr.protocol.degrade.jpeg_low_res`), or, for ``quality=None``, kept as it is (a
    lossless input). Each method enlarges that low-resolution image, given as a ``PIL.Image``
    opened from the JPEG's bytes (so its ``format`` and ``quantization`` are a file's) or made
    from the array, to an ``(s*h, s*w[, 3])`` uint8 array; ``None`` is Matlab bicubic of every
    channel on [0, 1], rounded like Matlab's ``uint8``. Scored: Y (Matlab ``rgb2ycbcr`` of the
    uint8 output) against the ground truth's Y, ``s`` pixels shaved, PSNR and SSIM.

    Returns ``{method name: [{"name": file stem, "psnr": dB, "ssim": float, "quality": the
    method-independent JPEG quality used or None}, ...]}``.
    """
    s = _check_scale(scale)
    paths = list_images(folder)
    results: dict[str, list[dict]] = {name: [] for name in methods}
    if on_image is not None:
        on_image(0, len(paths))
    for n, path in enumerate(paths, 1):
        gt = modcrop(read_uint8(path), s)
        gt_y = gt if gt.ndim == 2 else rgb2y(gt)
        if quality is None:
            low = imresize(gt, 1.0 / s)
            low_image = Image.fromarray(low)
        else:
            low_image = Image.open(io.BytesIO(jpeg_bytes(gt, s, quality)))
            low_image.load()
            low = np.asarray(low_image)
        for name, method in methods.items():
            if method is None:
                out = to_uint8_matlab(imresize(low.astype(np.float64) / 255.0, float(s)))
            else:
                out = np.asarray(method(low_image))
            if out.shape != gt.shape or out.dtype != np.uint8:
                raise ValueError(f"method {name} returned {out.shape} {out.dtype} for {path.name}, "
                                 f"expected {gt.shape} uint8")
            out_y = out if out.ndim == 2 else rgb2y(out)
            a, b = shave(gt_y, s), shave(out_y, s)
            results[name].append({"name": path.stem, "psnr": psnr(a, b), "ssim": ssim(a, b), "quality": quality})
        if on_image is not None:
            on_image(n, len(paths))
    return results
