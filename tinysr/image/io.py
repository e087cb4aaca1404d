"""Reading images into tinysr's integer pixels (and, for the CLI and API, the size policy).

:func:`read_pixels` opens a file, checks it (a regular file, a size within ``max_pixels`` read
from the header before anything is decoded), decodes it and hands the Pillow image to
:func:`pixels_from_image`, which turns every mode tinysr handles into one of the kinds of
:data:`tinysr.image.enlarge.KINDS`: uint8 ``L``, ``LA``, ``RGB``, ``RGBA`` or uint16 ``L16``, ``LA16``,
``RGB16``, ``RGBA16``.

16 bits per sample: Pillow keeps 16-bit grayscale (``I;16``) but narrows 16-bit colour and gray +
alpha to 8 bits, so those files are decoded here instead: a PNG by :mod:`tinysr.image.png16`, a
TIFF by ``tifffile`` (the ``[tiff]`` extra; without it such a TIFF is refused in one line, never read
at 8 bits). :func:`write_image` writes them back at 16 bits (PNG: :mod:`tinysr.image.png16`; TIFF:
``tifffile``) and refuses JPEG and WebP, which hold 8 bits.

Size policy: tinysr, not Pillow's decompression-bomb default (89 Mpixel warning, 179 Mpixel
error), decides how large an image may be. Pillow's check is turned off while tinysr opens a
file (so it prints no warning) and :func:`default_max_pixels` (what the machine's memory holds)
or the caller's ``max_pixels`` is applied to the header's size instead.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tinysr.errors import NoSuchFile

__all__ = ["read_pixels", "read_image", "pixels_from_image", "image_meta", "write_image", "open_image",
           "is_image", "default_max_pixels", "physical_memory", "ImageTooLarge", "FORMATS", "format_for",
           "deep_kind", "Image16"]

# Output formats: name -> (Pillow format, canonical suffix, lossy, 16-bit grayscale kept)
FORMATS = {
    "png": ("PNG", ".png", False, True),
    "jpg": ("JPEG", ".jpg", True, False),
    "webp": ("WEBP", ".webp", True, False),
    "tiff": ("TIFF", ".tif", False, True),
}
SUFFIXES = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
DEFAULT_QUALITY = {"jpg": 95, "webp": 90}

EXIF_ORIENTATION = 0x0112
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageTooLarge(ValueError):
    """An image whose header names more pixels than the size limit allows."""


def physical_memory() -> int:
    """This machine's physical memory in bytes (8 GiB where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_max_pixels(scale: int = 1, compare: bool = False, memory: int | None = None) -> int:
    """The largest input (width x height, in pixels) whose enlargement fits in ``memory`` bytes
    (default: :func:`physical_memory`).

    Counted for the widest 8-bit kind (RGBA, 4 bytes per pixel): the input, the ``scale**2``
    times larger output, the PNG encoder's copy of it, and with ``compare`` the bicubic output
    and the side-by-side image (two more outputs' worth each). ``scale=1`` gives the limit for
    reading alone (the decoded image and its copies).
    """
    memory = physical_memory() if memory is None else memory
    outputs = 2 + (4 if compare else 0)
    return max(1, memory // (4 * (1 + scale * scale * outputs)))


@contextmanager
def _pillow_limit_off():
    """Pillow's decompression-bomb check off (no warning, no error) while the header is parsed
    and the pixels decoded, and Pillow's other warnings (corrupt EXIF, palette transparency)
    silenced: tinysr applies its own limit to the header's size and reports in one line."""
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open_regular(path: Path):
    """A binary file object on ``path`` if it is a regular file; ``ValueError`` otherwise.

    Opened non-blocking, then checked with fstat, so a FIFO or device is refused instead of
    waiting forever for a writer (and a name swapped between a check and the open cannot slip one in).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NoSuchFile(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path}: not a regular file (a pipe, device or folder); not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_image(path) -> bool:
    """Whether ``path`` is a regular file whose header Pillow recognises (nothing is decoded)."""
    try:
        f = _open_regular(Path(path))
    except ValueError:
        return False
    try:
        with _pillow_limit_off():
            Image.open(f).close()
        return True
    except Exception:  # any failure to identify it: not an image
        return False
    finally:
        f.close()


@contextmanager
def open_image(path, max_pixels: int | None = None, advice: str = "--max-pixels to change it"):
    """Open ``path`` as a decoded Pillow image, within the size limit; the file is closed on exit.

    ``max_pixels``: the largest width x height allowed (``None``: :func:`default_max_pixels`
    for reading alone; 0: no limit). Checked on the header's size, before decoding.
    Raises ``ValueError`` (:class:`ImageTooLarge` for the size) with a one-line message naming
    the file for a missing, non-regular, unreadable, truncated or too large image; ``advice``
    ends the size message (the caller's way to change the limit; a command without
    ``--max-pixels`` names none).
    """
    path = Path(path)
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    f = _open_regular(path)
    try:
        try:
            with _pillow_limit_off():
                im = Image.open(f)
        except UnidentifiedImageError:
            empty = os.fstat(f.fileno()).st_size == 0
            raise ValueError(f"{path}: not a readable image ({'an empty file' if empty else 'not an image format Pillow knows'})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable image ({_one_line(exc)})") from None
        with im:
            w, h = im.size
            if limit and w * h > limit:
                raise ImageTooLarge(f"{path}: {w}x{h} is {w * h / 1e6:.1f} Mpixel, over the limit of "
                                    f"{limit / 1e6:.1f} Mpixel ({advice})")
            try:
                if not deep_kind(im):  # one Pillow would narrow to 8 bits is decoded by pixels_from_image
                    with _pillow_limit_off():
                        im.load()
            except MemoryError:
                raise ValueError(f"{path}: not enough memory to decode {w}x{h} pixels") from None
            except Exception as exc:  # decoders raise many types for corrupt data; name it, one line
                raise ValueError(f"{path}: not a readable image ({_one_line(exc)})") from None
            yield im
    finally:
        f.close()


def deep_kind(im: Image.Image) -> str | None:
    """The 16-bit kind (``LA16``, ``RGB16``, ``RGBA16``) of a not yet decoded Pillow image that Pillow
    would narrow to 8 bits (a PNG or TIFF of 16 bits per sample, gray + alpha or colour), from its
    tiles' raw mode; None for every other image (16-bit grayscale Pillow reads itself)."""
    if im.format not in ("PNG", "TIFF") or not im.tile:
        return None
    args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) else args
    if not isinstance(rawmode, str) or ";16" not in rawmode:
        return None
    base = rawmode.split(";")[0]
    return f"{base}16" if base in ("LA", "RGB", "RGBA") else None


def _tifffile():
    try:
        import tifffile  # noqa: PLC0415  (optional: the [tiff] extra)
    except ImportError:
        raise _DeepError("16-bit colour TIFF needs the tiff extra (pip install 'tinysr[tiff]'); "
                         "not read or written at 8 bits") from None
    return tifffile


class _DeepError(ValueError):
    """A 16-bit PNG or TIFF that cannot be decoded at 16 bits (its message names no file)."""


def _read_deep(f, fmt: str) -> np.ndarray:
    """The uint16 ``(H, W, C)`` pixels of the 16-bit PNG or TIFF open as ``f`` (:func:`deep_kind`)."""
    from tinysr.image.png16 import read_png16  # noqa: PLC0415

    where = f.tell()  # Pillow reads on from here if it decodes the image later (for EXIF after the pixels)
    f.seek(0)
    data = f.read()
    f.seek(where)
    if fmt == "PNG":
        try:
            return read_png16(data)
        except ValueError as exc:
            raise _DeepError(str(exc)) from None
    tifffile = _tifffile()
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:  # tifffile wants a named file, not a descriptor
            page = tif.pages[0]
            arr = page.asarray()
            if page.planarconfig == 2 and arr.ndim == 3:  # separate planes: (C, H, W)
                arr = np.moveaxis(arr, 0, -1)
    except Exception as exc:  # tifffile raises many types for what it cannot decode; one line
        raise _DeepError(f"not a readable 16-bit TIFF ({_one_line(exc)})") from None
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (2, 3, 4):
        raise _DeepError(f"unsupported 16-bit TIFF layout {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr)


def _turn(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, C)`` pixels turned as EXIF ``orientation`` says (what ``ImageOps.exif_transpose`` does)."""
    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
             8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns[orientation](pixels)) if orientation in turns else pixels


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def pixels_from_image(im: Image.Image, exif_transpose: bool = True) -> tuple[np.ndarray, str]:
    """A Pillow image's integer pixels ``(H, W, C)`` and its kind.

    uint8 0..255 for kinds ``L``, ``LA``, ``RGB``, ``RGBA`` (C = 1, 2, 3, 4); uint16 0..65535
    ``(H, W, 1)`` for ``L16`` (16-bit grayscale, ``I;16*`` modes), and ``(H, W, C)`` for ``LA16``,
    ``RGB16``, ``RGBA16`` (a 16-bit PNG or TIFF opened by :func:`open_image`, or by ``Image.open`` and
    not yet decoded: :func:`deep_kind`; one Pillow has decoded holds 8 bits only). Palette images become RGB, or
    RGBA when they have a transparent index; ``PA`` becomes RGBA, ``CMYK`` and ``YCbCr`` RGB,
    1-bit ``L``. An animated GIF/WebP/APNG or multi-page TIFF is refused (``ValueError``), never cut
    to its first frame. ``exif_transpose``: first turn the image as its EXIF orientation tag says (a
    photo taken sideways comes out upright; an image without the tag is unchanged).
    Raises ``ValueError`` for other modes (32-bit integer, float, ...).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _pixels_from_image(im, exif_transpose)


def _pixels_from_image(im: Image.Image, exif_transpose: bool = True) -> tuple[np.ndarray, str]:
    """Body of :func:`pixels_from_image`."""
    frames = getattr(im, "n_frames", 1)
    if isinstance(frames, int) and frames > 1:  # never silently cut to its first frame
        raise ValueError(f"an animated or multi-page image ({frames} frames); tinysr enlarges single images: "
                         "save the frames as images, or make it a video")
    kind = deep_kind(im)
    if kind and getattr(im, "fp", None) is not None:  # not decoded yet (open_image, or a caller's Image.open)
        pixels = _read_deep(im.fp, im.format)
        try:
            orientation = im.getexif().get(EXIF_ORIENTATION, 1) if exif_transpose else 1
        except Exception:  # a corrupt EXIF block: keep the pixels as stored
            orientation = 1
        return _turn(pixels, orientation), kind
    if exif_transpose:
        im = _upright(im)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16)[:, :, None], "L16"
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr"):
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"unsupported pixel format {mode!r} (need 8-bit grayscale or colour, or 16-bit grayscale)")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, im.mode


def _upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation says; ``im`` itself (no copy) when no turn is needed."""
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block: keep the pixels as stored
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(im)
    return im


def icc_space(icc: bytes | None) -> str | None:
    """An ICC profile's data colour space (``"RGB"``, ``"GRAY"``, ``"CMYK"``, ...) from its header."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def image_meta(im: Image.Image) -> dict:
    """What an output should carry over from the input image ``im``: ``{"icc": bytes or None,
    "dpi": (x, y) dots per inch or None, "exif": bytes or None, "xmp": bytes or None}``
    (:func:`photo_tags`). The ICC profile is kept only where it describes the output's colour
    space (an RGB profile for colour, a gray one for grayscale; a CMYK image's profile does not
    describe its RGB conversion)."""
    icc = im.info.get("icc_profile") or None
    want = "GRAY" if im.mode in ("L", "LA", "1", "I;16", "I;16B", "I;16L") else "RGB"
    if deep_kind(im) == "LA16":  # Pillow calls a 16-bit gray + alpha PNG RGBA
        want = "GRAY"
    if icc_space(icc) != want:
        icc = None
    dpi = im.info.get("dpi")
    try:
        dpi = (float(dpi[0]), float(dpi[1])) if dpi and float(dpi[0]) > 0 and float(dpi[1]) > 0 else None
    except (TypeError, ValueError, IndexError):
        dpi = None
    return {"icc": icc, "dpi": dpi, **photo_tags(im)}


# EXIF tags an enlarged, upright image must not repeat: its orientation (applied) and its size.
_EXIF_IFD = 0x8769
_STALE_EXIF = (0xA002, 0xA003)  # PixelXDimension, PixelYDimension (Exif IFD)
_XMP_ORIENTATION = re.compile(rb'(tiff:Orientation\s*=\s*["\'])\d(["\'])|(<tiff:Orientation>)\d(</tiff:Orientation>)')


def photo_tags(im: Image.Image) -> dict:
    """The EXIF (camera, date, GPS, ...) and XMP an enlargement of ``im`` should carry:
    ``{"exif": bytes or None, "xmp": bytes or None}``. The orientation is set to 1 (upright: tinysr
    turns the pixels first) in both, and the EXIF pixel dimensions, which would be wrong, are dropped."""
    exif = None
    try:
        tags = Image.Exif()  # a copy: the caller's image keeps its own tags
        tags.load(im.getexif().tobytes())
        if len(tags) or tags.get_ifd(_EXIF_IFD):
            if EXIF_ORIENTATION in tags:
                tags[EXIF_ORIENTATION] = 1
            ifd = tags.get_ifd(_EXIF_IFD)
            for tag in _STALE_EXIF:
                ifd.pop(tag, None)
            exif = tags.tobytes()
    except Exception:  # a corrupt EXIF block is not worth failing the image for: it is left out
        exif = None
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, bytes) and xmp:
        xmp = _XMP_ORIENTATION.sub(lambda m: (m[1] or m[3]) + b"1" + (m[2] or m[4]), xmp)
    else:
        xmp = None
    return {"exif": exif, "xmp": xmp}


def metadata_options(fmt: str, exif: bytes | None, xmp: bytes | None) -> dict:
    """Pillow ``save`` options that write ``exif`` and ``xmp`` into a ``fmt`` file (png, jpg, webp, tiff;
    TIFF keeps the main EXIF tags, not the Exif and GPS sub-blocks)."""
    options = {}
    if exif and fmt == "tiff":  # TIFF tags are the file's own: the main EXIF tags (camera, date, ...)
        tags = Image.Exif()
        tags.load(exif)
        # libtiff cannot write the Exif and GPS sub-blocks from Pillow's dictionary: they are left out
        options["tiffinfo"] = {k: v for k, v in tags.items() if k not in (_EXIF_IFD, 0x8825, 0xA005)}
    elif exif:
        options["exif"] = exif
    if xmp:
        if fmt == "png":
            from PIL import PngImagePlugin  # noqa: PLC0415

            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
        elif fmt == "tiff":
            options.setdefault("tiffinfo", {})[700] = xmp
        else:
            options["xmp"] = xmp
    return options


def enlarged_dpi(meta: dict, scale):
    """The DPI an output ``scale`` times larger carries (the print size stays), or None.
    ``scale``: a number, or ``(x, y)`` factors for an output of another aspect."""
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    return (meta["dpi"][0] * sx, meta["dpi"][1] * sy) if meta.get("dpi") else None


def fitting_dpi(fmt: str, dpi) -> tuple[float, float] | None:
    """``dpi`` ``(x, y)`` as format ``fmt`` (a key of :data:`FORMATS`) can record it, or None
    where it cannot (its field would overflow or round to 0: PNG stores whole pixels per metre in
    32 bits, JPEG whole dots per inch in 16, TIFF a 32-bit rational; WebP has no field). Such a
    DPI is dropped, not clamped: a clamped one would be a wrong print size."""
    if not dpi or fmt == "webp":
        return None
    x, y = float(dpi[0]), float(dpi[1])
    if fmt == "png":
        fits = all(1 <= v / 0.0254 + 0.5 < 2 ** 32 for v in (x, y))
    elif fmt == "jpg":
        fits = all(1 <= round(v) <= 0xFFFF for v in (x, y))
    else:
        fits = all(0 < v < 2 ** 32 - 1 for v in (x, y))
    return (x, y) if fits else None


def read_image(path, max_pixels: int | None = None) -> tuple[np.ndarray, str, dict]:
    """:func:`read_pixels` plus the input's :func:`image_meta` (ICC profile, DPI)."""
    with open_image(path, max_pixels) as im:
        try:
            pixels, kind = pixels_from_image(im)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except MemoryError:
            raise ValueError(f"{path}: not enough memory for {im.size[0]}x{im.size[1]} pixels") from None
        return pixels, kind, image_meta(im)


def read_pixels(path, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """Read an image file's integer pixels ``(H, W, C)`` and kind (see :func:`pixels_from_image`),
    turned upright by its EXIF orientation.

    ``max_pixels``: as :func:`open_image` (``None``: what this machine's memory holds; 0: no
    limit). Raises ``ValueError`` with a one-line message naming the file for a missing,
    non-regular (FIFO, device), unreadable, truncated, too large or unsupported image.
    """
    pixels, kind, _ = read_image(path, max_pixels)
    return pixels, kind


def _write_deep(f, name: str, img: np.ndarray, options: dict) -> None:
    """uint16 ``(H, W, C)`` pixels (C = 2, 3, 4) as a 16-bit PNG or TIFF, with ``options`` (Pillow's save
    options: ``icc_profile``, ``dpi``, ``exif``, ``pnginfo``, ``tiffinfo``)."""
    if name == "png":
        from tinysr.image.png16 import write_png16  # noqa: PLC0415

        write_png16(f, img, {k: v for k, v in options.items() if k in ("icc_profile", "dpi", "exif", "pnginfo")})
        return
    tifffile = _tifffile()
    xmp = options.get("tiffinfo", {}).get(700)
    dpi = options.get("dpi")
    buf = io.BytesIO()  # tifffile wants a named file, not a descriptor
    try:
        tifffile.imwrite(buf, img, photometric="minisblack" if img.shape[2] == 2 else "rgb",
                         extrasamples=(2,) if img.shape[2] in (2, 4) else None,  # 2: unassociated alpha
                         compression="zlib", iccprofile=options.get("icc_profile"),
                         resolution=(dpi[0], dpi[1]) if dpi else None, resolutionunit="INCH" if dpi else None,
                         extratags=[(700, 1, len(xmp), xmp, True)] if xmp else None, metadata=None)
    except (ValueError, TypeError, OverflowError, struct.error) as exc:  # a value its tags cannot hold
        raise _DeepError(f"cannot be written as a 16-bit TIFF ({_one_line(exc)})") from None
    f.write(buf.getvalue())


def format_for(path, fmt: str | None = None) -> str:
    """The output format name (a key of :data:`FORMATS`) for ``path``: ``fmt`` if given, else
    from the suffix; ``ValueError`` for an unknown format or suffix."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: cannot tell the output format from {suffix or 'no suffix'!r} "
                         f"(use one of {', '.join(SUFFIXES)})")
    return SUFFIXES[suffix]


def write_image(path, pixels: np.ndarray, *, fmt: str | None = None, quality: int | None = None,
                icc: bytes | None = None, dpi: tuple[float, float] | None = None, overwrite: bool = False,
                exif: bytes | None = None, xmp: bytes | None = None) -> Path:
    """Write integer pixels as an image file, atomically.

    Args:
        path: the output file; its folder must exist.
        pixels: ``(H, W)`` or ``(H, W, C)`` uint8 0..255 (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA),
            or uint16 0..65535 in the same layouts (16 bits per sample).
        fmt: ``png``, ``jpg``, ``webp`` or ``tiff`` (:data:`FORMATS`); ``None``: from ``path``'s suffix.
        quality: 1..100 for ``jpg`` (default 95) and ``webp`` (default 90); refused for the lossless formats.
        icc: an ICC profile to embed (the input's; it describes the same colour space).
        dpi: ``(x, y)`` dots per inch to record (PNG, JPEG, TIFF; WebP has no field for it); one
            the format's field cannot hold is dropped (:func:`fitting_dpi`).
        overwrite: replace an existing file; otherwise the name is taken only if free
            (``FileExistsError`` when something, even a dangling symlink, is there).
        exif, xmp: EXIF and XMP blocks to embed (:func:`photo_tags`; every format holds both).

    16 bits stay 16 bits in PNG and TIFF (16-bit colour and gray + alpha: :mod:`tinysr.image.png16`,
    and ``tifffile``, the ``[tiff]`` extra, whose TIFF carries the ICC profile, DPI and XMP but not EXIF);
    JPEG and WebP hold 8 bits, so 16-bit grayscale is rounded to ``round(v / 257)`` and 16-bit colour
    refused (``ValueError``: never narrowed unasked). JPEG has no alpha channel: an image with alpha is refused.
    """
    from tinysr.atomic import atomic_write  # noqa: PLC0415

    path = Path(path)
    name = format_for(path, fmt)
    pillow_format, _, lossy, keeps16 = FORMATS[name]
    img = np.asarray(pixels)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype not in (np.uint8, np.uint16) or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (2, 3, 4)):
        raise ValueError(f"write_image: need (H, W[, C]) uint8 or uint16 pixels, got {img.shape} {img.dtype}")
    if quality is not None:
        if not lossy:
            raise ValueError(f"--quality applies to the lossy formats (jpg, webp), not {name}")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"--quality must be 1..100, got {quality}")
    deep = img.dtype == np.uint16 and img.ndim == 3  # 16-bit colour or gray + alpha: not Pillow's to write
    if deep and not keeps16:
        raise ValueError(f"{path}: 16-bit {'colour' if img.shape[2] > 2 else 'gray + alpha'}; {name} holds 8 bits per "
                         "channel (write png or tiff to keep 16 bits)")
    if img.dtype == np.uint16 and not keeps16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257): 65535 -> 255
    alpha = img.ndim == 3 and img.shape[2] in (2, 4)
    if name == "jpg" and alpha:
        raise ValueError(f"{path}: JPEG has no alpha channel; write png, webp or tiff to keep it")
    pil = Image.fromarray(img) if not deep else Image.new("RGBA" if img.shape[2] == 4 else ("LA" if img.shape[2] == 2 else "RGB"), (1, 1))
    if name == "webp" and pil.mode in ("L", "LA"):  # WebP stores colour only
        pil = pil.convert("RGBA" if alpha else "RGB")
    if icc:
        want = "GRAY" if pil.mode in ("L", "LA", "I;16") else "RGB"
        if icc_space(icc) != want:
            if name == "webp" and (img.ndim == 2 or img.shape[2] == 2):
                icc = None  # the gray profile does not fit WebP's RGB; the gray values are the same
            else:
                raise ValueError(f"{path}: the ICC profile is for {icc_space(icc)}, the pixels are {want}")
    options = {}
    if lossy:
        options["quality"] = int(quality) if quality is not None else DEFAULT_QUALITY[name]
    if name == "tiff":
        options["compression"] = "tiff_adobe_deflate"
    if icc:
        options["icc_profile"] = icc
    dpi = fitting_dpi(name, dpi)
    if dpi:
        options["dpi"] = dpi
    options.update(metadata_options(name, exif, xmp))

    def encode(f):
        try:
            if deep:
                _write_deep(f, name, img, options)
                return
            pil.save(f, format=pillow_format, **options)
        except (OverflowError, struct.error) as exc:  # a value a header field cannot hold: this image's error
            raise ValueError(f"{path}: cannot be written as {name} ({_one_line(exc)})") from None
        except _DeepError as exc:
            raise ValueError(f"{path}: {exc}") from None

    atomic_write(path, encode, replace=overwrite)
    return path


class Image16:
    """A 16-bit gray + alpha or colour image (what :func:`tinysr.upscale` returns for such a file, which
    a ``PIL.Image`` cannot hold at 16 bits): ``pixels`` uint16 ``(H, W, C)`` (C = 2, 3, 4), ``mode``
    (``"LA;16"``, ``"RGB;16"``, ``"RGBA;16"``), ``size`` ``(W, H)``, ``info`` (``icc_profile``, ``dpi``,
    ``exif``, ``xmp`` as a ``PIL.Image`` carries them). ``np.asarray(img)`` gives the pixels;
    ``img.save(path)`` writes a 16-bit PNG or TIFF (:func:`write_image`, replacing ``path`` as Pillow's
    ``save`` does; JPEG and WebP are refused: they hold 8 bits)."""

    def __init__(self, pixels: np.ndarray, info: dict | None = None):
        self.pixels = pixels
        self.info = dict(info or {})
        self.mode = ("LA", "RGB", "RGBA")[pixels.shape[2] - 2] + ";16"
        self.size = (pixels.shape[1], pixels.shape[0])

    def __array__(self, dtype=None, copy=None):
        return self.pixels if dtype is None else self.pixels.astype(dtype)

    def __repr__(self) -> str:
        return f"<tinysr Image16 mode={self.mode} size={self.size[0]}x{self.size[1]}>"

    def save(self, path, format: str | None = None) -> Path:  # noqa: A002  (Pillow's name)
        """Write to ``path`` (format from ``format``, ``png``/``tiff``, or the suffix), atomically."""
        i = self.info
        fmt = {"tif": "tiff"}.get(format.lower(), format.lower()) if format else None
        return write_image(path, self.pixels, fmt=fmt, icc=i.get("icc_profile"), dpi=i.get("dpi"), overwrite=True,
                           exif=i.get("exif"), xmp=i.get("xmp"))
