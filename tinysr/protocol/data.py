"""SRCNN training pairs, exactly as the authors' ``generate_train.m``, with an HDF5 cache.

For every image of a folder, sorted by file name:

1. Matlab ``rgb2ycbcr`` on the uint8 RGB image, keep Y (a single-channel image is Y already),
   ``im2double`` (/255, so [0, 1]);
2. ``label = modcrop(Y, scale)`` of size ``(h, w)``;
3. ``input = imresize(imresize(label, 1/scale), [h, w])`` (Matlab bicubic, float64, no rounding);
4. for ``x in range(0, h - 33 + 1, 14)`` (rows, outer loop) and ``y in range(0, w - 33 + 1, 14)``
   (columns, inner loop): input patch ``input[x:x+33, y:y+33]`` and label patch
   ``label[x+6:x+6+21, y+6:y+6+21]`` (the centre 21x21, 6 = (33 - 21) / 2).

On T91 this gives 21,910 pairs at x2, 21,884 at x3 and 21,772 at x4. Pairs are kept in this
extraction order (the authors' ``randperm`` shuffle is left to the training loop).

CLI: ``tinysr prepare --images DIR --scale S --out FILE`` (:mod:`tinysr.cli.prepare`).
"""

from __future__ import annotations

if __name__ == "__main__":  # the older spelling of `tinysr prepare`: python -m tinysr.protocol.data prepare ...
    # (here, before the heavy imports: a signal while they load ends it in one line, status 130)
    import sys

    from tinysr.cli.entry import run  # (the command line lives in tinysr.cli)

    if sys.argv[1:2] != ["prepare"]:
        print("python -m tinysr.protocol.data: error: the command is 'prepare' (tinysr prepare --help)", file=sys.stderr)
        sys.exit(2)
    del sys.argv[1]
    run("tinysr.cli.prepare", "python -m tinysr.protocol.data prepare")

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from tinysr.atomic import remove_stale_temporaries, temporary_name
from tinysr.image.io import ImageTooLarge, physical_memory
from tinysr.protocol.color import rgb2y, rgb2ycbcr
from tinysr.protocol.degrade import draw_qualities, jpeg_low_res, parse_degrade
from tinysr.protocol.evaluation import list_images, read_uint8, read_y_uint8
from tinysr.protocol.imresize import imresize
from tinysr.protocol.metrics import modcrop

__all__ = ["make_patches", "source_hash", "source_files", "cache_settings", "default_cache_path",
           "load_or_build_cache", "read_cache", "is_patch_cache", "SCALES"]

SCALES = (2, 3, 4)  # the upscaling factors the authors trained (and tinysr prepares patches for)
FORMAT_VERSION = 1
# Memory a training image's pixel takes while its patches are cut (float64 planes, the patches
# overlapping 33x33 every 14 pixels, their float32 copies), with room to spare: the size limit.
PATCH_BYTES_PER_PIXEL = 128
COLOUR_CONVERSION = "matlab rgb2ycbcr BT.601 Y"
RESIZE_METHOD = "matlab imresize bicubic"


def _check_geometry(scale: int, input_size: int, label_size: int, stride: int) -> None:
    named = (("scale", scale), ("input_size", input_size), ("label_size", label_size), ("stride", stride))
    for name, v in named:
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if label_size > input_size or (input_size - label_size) % 2:
        raise ValueError(
            f"label_size ({label_size}) must be <= input_size ({input_size}) with an even difference"
        )


def _image_patches(
    y_uint8: np.ndarray, scale: int, input_size: int, label_size: int, stride: int,
    low: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Patches of one uint8 Y image, float64 on [0, 1].

    ``low``: the low-resolution Y ``(h / scale, w / scale)`` float64 on [0, 1] to enlarge into the
    inputs (a degraded one, :func:`degraded_low_y`); ``None``: the bicubic downscale of the label.
    Returns inputs ``(n, input_size, input_size)`` and labels ``(n, label_size, label_size)``.
    """
    label_img = modcrop(y_uint8.astype(np.float64) / 255.0, scale)
    h, w = label_img.shape
    nx = len(range(0, h - input_size + 1, stride))
    ny = len(range(0, w - input_size + 1, stride))
    if nx == 0 or ny == 0:
        return np.empty((0, input_size, input_size)), np.empty((0, label_size, label_size))
    low = imresize(label_img, 1.0 / scale) if low is None else low
    input_img = imresize(low, output_shape=(h, w))
    pad = (input_size - label_size) // 2
    win = np.lib.stride_tricks.sliding_window_view
    inp = win(input_img, (input_size, input_size))[::stride, ::stride][:nx, :ny]
    lab = win(label_img[pad:, pad:], (label_size, label_size))[::stride, ::stride][:nx, :ny]
    return (
        inp.reshape(nx * ny, input_size, input_size),
        lab.reshape(nx * ny, label_size, label_size),
    )


def degraded_low_y(img_uint8: np.ndarray, scale: int, quality: int) -> np.ndarray:
    """Y of the JPEG-compressed low-resolution image (:func:`tinysr.protocol.degrade.jpeg_low_res`),
    float64 on [0, 1], as ``tinysr upscale`` sees it: Matlab ``rgb2ycbcr`` of the decoded RGB / 255,
    unrounded (grayscale: / 255)."""
    low = jpeg_low_res(img_uint8, scale, quality).astype(np.float64) / 255.0
    return low if low.ndim == 2 else rgb2ycbcr(low)[:, :, 0]


def make_patches(
    images_dir: str | Path,
    scale: int,
    input_size: int = 33,
    label_size: int = 21,
    stride: int = 14,
    check: Callable[[], None] | None = None,
    degrade: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Cut the SRCNN training pairs of every image in ``images_dir`` (see the module docstring).

    ``check``, when given, is called after each image (it may raise to stop the work).
    ``degrade``: ``None`` (the authors' bicubic inputs) or a JPEG spec ``jpeg:Q1-Q2[xN]``
    (:mod:`tinysr.protocol.degrade`): each image gives ``N`` copies (copy by copy, images in
    order), each with inputs from :func:`degraded_low_y` at a quality drawn by
    :func:`~tinysr.protocol.degrade.draw_qualities` for ``seed``; labels as without it.

    Returns:
        ``inputs`` ``(N, 1, input_size, input_size)`` float32 on [0, 1] (bicubic-degraded Y),
        ``labels`` ``(N, 1, label_size, label_size)`` float32 on [0, 1] (ground-truth Y), and the
        sorted list of source file names used.
    """
    _check_geometry(scale, input_size, label_size, stride)
    files = list_images(images_dir)
    ins, labs = [], []
    qualities = None if degrade is None else draw_qualities(degrade, seed, len(files))
    limit = physical_memory() // PATCH_BYTES_PER_PIXEL
    for copy in range(1 if qualities is None else len(qualities)):
        for i, path in enumerate(files):
            try:
                if qualities is None:
                    y, low = read_y_uint8(path, max_pixels=limit), None
                else:
                    img = read_uint8(path, max_pixels=limit)
                    y = img if img.ndim == 2 else rgb2y(img)
                    low = degraded_low_y(img, int(scale), int(qualities[copy, i]))
                a, b = _image_patches(y, int(scale), input_size, label_size, stride, low)
                ins.append(a.astype(np.float32))
                labs.append(b.astype(np.float32))
            except ImageTooLarge as exc:  # its advice names a flag of the enlarging commands, not of training
                raise ValueError(f"{without_flag_advice(str(exc))} for cutting training patches on this "
                                 f"machine ({PATCH_BYTES_PER_PIXEL} bytes of memory a pixel)") from None
            except MemoryError:
                raise ValueError(f"{path}: not enough memory to cut training patches from it "
                                  f"(use smaller images, or fewer of them)") from None
            if check is not None:
                check()
    if sum(len(a) for a in ins) == 0:
        raise ValueError(f"no {input_size}x{input_size} patch fits in any image of {images_dir}")
    try:
        inputs = np.concatenate(ins)[:, None]
        labels = np.concatenate(labs)[:, None]
    except MemoryError:
        n = sum(len(a) for a in ins)
        raise ValueError(f"{images_dir}: not enough memory to hold its {n} training patches") from None
    return np.ascontiguousarray(inputs), np.ascontiguousarray(labels), [p.name for p in files]


def source_hash(images_dir: str | Path) -> tuple[str, list[str]]:
    """sha256 (hex) over the names and bytes of the folder's images (sorted), and the names."""
    files = list_images(images_dir)
    h = hashlib.sha256()
    for p in files:
        data = p.read_bytes()
        name = p.name.encode("utf-8")
        h.update(len(name).to_bytes(8, "little") + name)
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest(), [p.name for p in files]


def source_files(images_dir: str | Path) -> dict[str, str]:
    """sha256 (hex) of each image file of the folder, by file name (what a training run records
    of its data, so a resume can name an image added, removed or replaced)."""
    files = {}
    for p in list_images(images_dir):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        files[p.name] = h.hexdigest()
    return files


# Settings that only some caches record (:func:`cache_settings`): one recorded but not asked for is a mismatch.
OPTIONAL_SETTINGS = ("degrade", "degrade_seed")


def cache_settings(scale: int, input_size: int = 33, label_size: int = 21, stride: int = 14,
                   degrade: str | None = None, seed: int = 0) -> dict:
    """Everything but the images that defines a patch cache: the one place that lists it (a new
    degradation or geometry setting goes here). Stored as the cache's attributes, and part of the
    shared cache's file name (:func:`default_cache_path`). A degraded cache (``degrade``, a
    :mod:`tinysr.protocol.degrade` spec) also records the spec and the ``seed`` of its draws."""
    extra = {} if degrade is None else {"degrade": degrade, "degrade_seed": int(seed)}
    return {**extra,
        "scale": int(scale),
        "input_size": int(input_size),
        "label_size": int(label_size),
        "stride": int(stride),
        "colour_conversion": COLOUR_CONVERSION,
        "resize_method": RESIZE_METHOD,
        "format_version": FORMAT_VERSION,
    }


def default_cache_path(images_dir: str | Path, settings: dict) -> Path:
    """The shared patch cache of a folder of images cut with ``settings`` (:func:`cache_settings`):
    ``$XDG_CACHE_HOME/tinysr/patches/NAME-xS-KEY.h5`` (default ``~/.cache``), KEY a hash of the
    folder's resolved path and the settings. Every run on the same data and settings shares it;
    its content is still checked against the images each time (:func:`load_or_build_cache`)."""
    folder = Path(images_dir).expanduser().resolve()
    key = hashlib.sha256(json.dumps({"images": str(folder), **settings}, sort_keys=True).encode()).hexdigest()[:16]
    root = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(root) / "tinysr" / "patches" / f"{folder.name}-x{settings['scale']}-{key}.h5"


def _expected_attrs(
    scale: int, input_size: int, label_size: int, stride: int, digest: str, names: list[str],
    degrade: str | None = None, seed: int = 0,
) -> dict:
    return {**cache_settings(scale, input_size, label_size, stride, degrade=degrade, seed=seed),
            "sources": list(names), "sources_sha256": digest}


def _attr_equal(stored, expected) -> bool:
    if isinstance(expected, list):
        try:
            got = [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(stored).ravel()]
        except Exception:
            return False
        return got == expected
    if isinstance(stored, bytes):
        stored = stored.decode()
    if isinstance(expected, str):
        return isinstance(stored, str) and stored == expected
    try:
        return np.ndim(stored) == 0 and int(stored) == expected and float(stored) == float(expected)
    except (TypeError, ValueError):
        return False


def read_cache(
    cache_path: str | Path, expected: dict
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Load a cache file if it is intact and its attributes equal ``expected`` (and it records no
    :data:`OPTIONAL_SETTINGS` that ``expected`` lacks); else ``None``."""
    p = Path(cache_path)
    if not p.is_file():
        return None
    try:
        with h5py.File(p, "r") as f:
            for key, value in expected.items():
                if key not in f.attrs or not _attr_equal(f.attrs[key], value):
                    return None
            if any(key in f.attrs and key not in expected for key in OPTIONAL_SETTINGS):
                return None  # e.g. a degraded cache is never the clean one asked for
            if "inputs" not in f or "labels" not in f or "count" not in f.attrs:
                return None
            n = int(f.attrs["count"])
            isz, lsz = expected["input_size"], expected["label_size"]
            if f["inputs"].shape != (n, 1, isz, isz) or f["labels"].shape != (n, 1, lsz, lsz):
                return None
            if f["inputs"].dtype != np.float32 or f["labels"].dtype != np.float32:
                return None
            inputs = f["inputs"][()]
            labels = f["labels"][()]
    except Exception:  # unreadable, truncated or corrupt: rebuild
        return None
    if not (np.all(np.isfinite(inputs)) and np.all(np.isfinite(labels))):
        return None
    return inputs, labels, list(expected["sources"])


def _write_cache(cache_path: Path, inputs: np.ndarray, labels: np.ndarray, attrs: dict) -> None:
    """Write the cache atomically: a temporary file in the same folder (named by
    :func:`tinysr.atomic.temporary_name`, so a later run can remove it if this one is killed),
    then published by :func:`_publish` (concurrent runs sharing the cache each publish a whole
    file; a foreign file at the path is never replaced)."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(cache_path, ".tmp")
    try:
        with h5py.File(tmp, "w-") as f:
            f.create_dataset("inputs", data=inputs)
            f.create_dataset("labels", data=labels)
            for key, value in attrs.items():
                if isinstance(value, list):
                    f.attrs[key] = np.array(value, dtype=h5py.string_dtype())
                else:
                    f.attrs[key] = value
            f.attrs["count"] = int(inputs.shape[0])
        _publish(Path(tmp), cache_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _publish(tmp: Path, cache_path: Path) -> None:
    """Give the finished ``tmp`` the name ``cache_path``: taken only if free (a hard link, which
    fails if any file is there), else replacing only a tinysr patch cache (one another run has
    just written holds the same patches)."""
    try:
        os.link(tmp, cache_path)
        tmp.unlink()
        return
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system: check, then replace
        pass
    _refuse_foreign(cache_path)
    os.replace(tmp, cache_path)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MARKERS = (b"colour_conversion", b"sources_sha256")  # attribute names only a tinysr cache has


def is_patch_cache(path: str | Path) -> bool:
    """Whether the file at ``path`` may be replaced by a rebuilt patch cache: a tinysr patch
    cache (an HDF5 file whose root attributes include ``colour_conversion`` and
    ``sources_sha256``, whatever their values), one cut short (the HDF5 signature, and one of
    those attribute names in its first MiB, where HDF5 keeps the root group's attribute names),
    or an empty file. Anything else (a checkpoint, an image, another HDF5 file) is not."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return False
    if not head:
        return True
    if not head.startswith(HDF5_SIGNATURE):
        return False
    try:
        with h5py.File(p, "r") as f:
            return all(m.decode() in f.attrs for m in _MARKERS)
    except Exception:  # unreadable (cut short, corrupt): judge by the bytes
        return any(m in head for m in _MARKERS)


def _refuse_foreign(cache_path: Path) -> None:
    if os.path.lexists(cache_path) and not (cache_path.is_file() and is_patch_cache(cache_path)):
        raise ValueError(f"{cache_path}: exists and is not a tinysr patch cache; refusing to replace it "
                         f"(move it away, or choose another cache path)")


def load_or_build_cache(
    images_dir: str | Path,
    scale: int,
    cache_path: str | Path,
    input_size: int = 33,
    label_size: int = 21,
    stride: int = 14,
    *,
    check: Callable[[], None] | None = None,
    on_build: Callable[[], None] | None = None,
    degrade: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Training pairs from the HDF5 cache at ``cache_path``, (re)building it when needed.

    The cache is reused only when it opens, every attribute (scale, patch geometry, colour
    conversion, resize method, format version, sorted source names, sha256 of the sources'
    names and bytes) matches, and the datasets have the right shapes and dtype. Otherwise it is
    rebuilt with :func:`make_patches` and written atomically. Returns what :func:`make_patches`
    returns.

    Only a file that :func:`is_patch_cache` accepts is ever replaced: anything else at
    ``cache_path`` raises ``ValueError`` naming it, before any work. Temporaries of this cache
    left by a killed process are removed. ``check`` is called between images and after the
    write (it may raise to stop); ``on_build`` just before a build starts. ``degrade`` and
    ``seed``: as for :func:`make_patches`; a degraded cache also records both (``degrade``,
    ``degrade_seed``), and a clean one is never taken for a degraded one or the reverse.
    """
    _check_geometry(scale, input_size, label_size, stride)
    if degrade is not None:
        parse_degrade(degrade)
    cache_path = Path(cache_path)
    _refuse_foreign(cache_path)
    remove_stale_temporaries(cache_path.parent, ".tmp", name=cache_path.name)
    digest, names = source_hash(images_dir)
    expected = _expected_attrs(scale, input_size, label_size, stride, digest, names, degrade, seed)
    cached = read_cache(cache_path, expected)
    if cached is not None:
        return cached
    if on_build is not None:
        on_build()
    inputs, labels, used = make_patches(images_dir, scale, input_size, label_size, stride, check=check,
                                        degrade=degrade, seed=seed)
    if used != names:  # folder changed while building: do not cache an inconsistent set
        raise RuntimeError(f"images in {images_dir} changed while building the cache; retry")
    _refuse_foreign(cache_path)  # something put there while the patches were cut
    _write_cache(cache_path, inputs, labels, expected)
    if check is not None:
        check()
    return inputs, labels, used


def without_flag_advice(message: str) -> str:
    """``message`` of an image reader's error without its advice to use ``--max-pixels``, a flag of
    the enlarging commands that training and preparing patches do not have."""
    return message.split(" (--max-pixels")[0]
