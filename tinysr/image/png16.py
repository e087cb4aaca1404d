"""16-bit PNG pixels, which Pillow reads and writes only for grayscale (it narrows 16-bit colour to 8 bits).

:func:`read_png16` decodes a PNG of 16 bits per sample (gray + alpha, RGB, RGBA; also gray)
into uint16 ``(H, W, C)``: the IDAT stream inflated with zlib, each row unfiltered (the five PNG
filters, a numba loop: a Python loop over bytes would take seconds per megapixel), Adam7
interlacing undone. :func:`write_png16` writes uint16 ``(H, W, C)`` pixels (C = 1..4) as a
16-bit PNG: rows Sub-filtered (NumPy), deflated, and the ancillary chunks (ICC profile, DPI,
EXIF, XMP) those of a 1x1 PNG Pillow writes with the same options, so they are written exactly
as tinysr's 8-bit outputs carry them. Small and self-contained; pypng does the same in pure
Python, much slower on photos.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from tinysr.ops.primitives_cpu import numba_loop

__all__ = ["read_png16", "write_png16", "png16_kind", "SIGNATURE"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels (0 gray, 2 RGB, 4 gray + alpha, 6 RGBA; 3, palette, is never 16-bit)
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
COLOUR_TYPE = {c: t for t, c in CHANNELS.items()}
# Adam7 passes: (first row, first column, row step, column step)
ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
KIND = {1: "L16", 2: "LA16", 3: "RGB16", 4: "RGBA16"}


def _chunks(data: bytes):
    """``(type, body)`` of each chunk of a PNG file's bytes; ``ValueError`` for a truncated or corrupt file."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG file")
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ValueError("truncated PNG (a chunk runs past the end of the file)")
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"corrupt PNG (bad checksum in its {kind.decode('latin-1')} chunk)")
        yield kind, body
        pos += 12 + length
        if kind == b"IEND":
            return
    raise ValueError("truncated PNG (no IEND chunk)")


def png16_kind(head: bytes) -> str | None:
    """The tinysr kind (``L16``, ``LA16``, ``RGB16``, ``RGBA16``) of a 16-bit PNG from its first 26
    bytes (signature and IHDR), or None for any other PNG or file."""
    if len(head) < 26 or head[:8] != SIGNATURE or head[12:16] != b"IHDR" or head[24] != 16:
        return None
    channels = CHANNELS.get(head[25])
    return KIND[channels] if channels else None


@numba_loop
def _unfilter(data, start, height, stride, bpp, out):  # pragma: no cover - compiled by numba
    """Undo the PNG filters of ``height`` rows of ``stride`` bytes (each after its filter-type
    byte) found from ``data[start]``, into ``out`` ``(height, stride)`` uint8. Returns -1, or the
    first row whose filter type is unknown."""
    for y in range(height):
        row = start + y * (stride + 1)
        f = data[row]
        if f > 4:
            return y
        for x in range(stride):
            raw = np.int32(data[row + 1 + x])
            a = np.int32(out[y, x - bpp]) if x >= bpp else np.int32(0)
            b = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
            c = np.int32(out[y - 1, x - bpp]) if y > 0 and x >= bpp else np.int32(0)
            if f == 0:
                v = raw
            elif f == 1:
                v = raw + a
            elif f == 2:
                v = raw + b
            elif f == 3:
                v = raw + (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                v = raw + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))
            out[y, x] = np.uint8(v & 255)
    return -1


def read_png16(data: bytes) -> np.ndarray:
    """A 16-bit PNG's pixels, uint16 ``(H, W, C)`` (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA),
    values 0..65535 as stored. ``data``: the file's bytes. ``ValueError`` in one line for a PNG
    that is not 16-bit, truncated or corrupt."""
    header, idat = None, []
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise ValueError("corrupt PNG (no IHDR chunk)")
    width, height, depth, colour, _, _, interlace = header
    if depth != 16 or colour not in CHANNELS:
        raise ValueError("not a 16-bit PNG")
    channels = CHANNELS[colour]
    bpp = 2 * channels
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as exc:
        raise ValueError(f"corrupt PNG (its image data does not inflate: {exc})") from None
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    out = np.empty((height, width, channels), dtype=np.uint16)
    pos = 0
    for r0, c0, dr, dc in passes:
        h, w = -(-(height - r0) // dr), -(-(width - c0) // dc)
        if h <= 0 or w <= 0:
            continue
        stride = w * bpp
        if pos + h * (stride + 1) > raw.size:
            raise ValueError("truncated PNG (less image data than its size)")
        rows = np.empty((h, stride), dtype=np.uint8)
        bad = _unfilter(raw, pos, h, stride, bpp, rows)
        if bad >= 0:
            raise ValueError(f"corrupt PNG (unknown filter type in row {bad})")
        out[r0::dr, c0::dc] = rows.view(">u2").reshape(h, w, channels)
        pos += h * (stride + 1)
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png16(f, pixels: np.ndarray, options: dict | None = None) -> None:
    """Write uint16 ``(H, W, C)`` pixels (C = 1..4: gray, gray + alpha, RGB, RGBA) to the binary file
    ``f`` as a 16-bit PNG. ``options``: Pillow PNG ``save`` options for the ancillary chunks
    (``icc_profile``, ``dpi``, ``exif``, ``pnginfo``), written as Pillow writes them."""
    from PIL import Image  # noqa: PLC0415

    h, w, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, w * 2 * channels)
    filtered = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # Sub: each byte minus the same byte of the pixel to its left, modulo 256
    filtered[:, 1:] = rows
    filtered[:, 1 + 2 * channels:] -= rows[:, :-2 * channels]
    probe = io.BytesIO()  # the metadata chunks, exactly as Pillow writes them
    Image.new("L", (1, 1)).save(probe, format="PNG", **(options or {}))
    extra = [(k, b) for k, b in _chunks(probe.getvalue()) if k not in (b"IHDR", b"IDAT", b"IEND")]
    f.write(SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, COLOUR_TYPE[channels], 0, 0, 0)))
    f.write(b"".join(_chunk(k, b) for k, b in extra))  # before IDAT, in Pillow's order, as Pillow places them
    f.write(_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)) + _chunk(b"IEND", b""))
