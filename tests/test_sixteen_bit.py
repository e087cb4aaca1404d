"""16-bit colour end to end (issue #28 item 3): 48/64-bit PNGs and 16-bit TIFFs are read, enlarged
and written at 16 bits per sample, in the command and the API; never narrowed to 8 bits unasked.

The 16-bit PNGs the tests feed in are written here by hand (struct + zlib, unfiltered rows, and
Adam7 interlacing), independently of :mod:`tinysr.image.png16`; outputs are checked against
Pillow's own reading (its 8-bit view of a 16-bit colour PNG is the high byte of each sample) and
against the 8-bit pipeline on the same image.
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

import tinysr
from tinysr.cli.upscale import main
from tinysr.image.enlarge import enlarge
from tinysr.image.io import Image16, _turn, read_image, write_image
from tinysr.image.png16 import read_png16, write_png16
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model

COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def hand_png16(path, px: np.ndarray, interlace: bool = False, extra: bytes = b"", after: bytes = b"") -> None:
    """A 16-bit PNG of uint16 ``(H, W, C)`` ``px``, every row unfiltered (type 0), by hand."""
    h, w, c = px.shape
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for r0, c0, dr, dc in passes for row in px[r0::dr, c0::dc]
                   if px[r0::dr, c0::dc].size)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, COLOUR_TYPE[c], 0, 0,
                                                                         int(interlace)))
                     + extra + _chunk(b"IDAT", zlib.compress(raw)) + after + _chunk(b"IEND", b""))


def png_depth(path) -> int:
    data = path.read_bytes()
    assert data[12:16] == b"IHDR"
    return data[24]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _rgb8(channels=3, size=(17, 13), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_reader_decodes_hand_written_16_bit_pngs(tmp_path, channels, interlace):
    px = np.random.default_rng(channels).integers(0, 65536, (11, 13, channels), dtype=np.uint16)
    hand_png16(tmp_path / "a.png", px, interlace)
    np.testing.assert_array_equal(read_png16((tmp_path / "a.png").read_bytes()), px)


def test_reader_undoes_every_filter_pillow_uses(tmp_path):
    """Pillow writes 16-bit grayscale with adaptive filtering (Sub, Up, Average, Paeth)."""
    gray = np.cumsum(np.random.default_rng(5).integers(0, 3000, (40, 41)), axis=1).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_png16((tmp_path / "g.png").read_bytes())[:, :, 0], gray)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_writer_output_reads_back_in_pillow(tmp_path, channels):
    px = np.random.default_rng(channels).integers(0, 65536, (9, 14, channels), dtype=np.uint16)
    with open(tmp_path / "w.png", "wb") as f:
        write_png16(f, px, {"dpi": (300, 300)})
    im = Image.open(tmp_path / "w.png")
    assert png_depth(tmp_path / "w.png") == 16 and round(im.info["dpi"][0]) == 300
    if channels == 1:
        np.testing.assert_array_equal(np.asarray(im, dtype=np.uint16), px[:, :, 0])
    else:  # Pillow narrows 16-bit colour to the high byte of each sample
        np.testing.assert_array_equal(np.asarray(im), (px >> 8).astype(np.uint8))
    np.testing.assert_array_equal(read_png16((tmp_path / "w.png").read_bytes()), px)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-30], "truncated"),
    (lambda b: b[:50] + bytes([b[50] ^ 0xFF]) + b[51:], "checksum"),  # a byte of the IDAT data
])
def test_a_damaged_16_bit_png_is_one_error_line(tmp_path, weights, capsys, damage, message):
    hand_png16(tmp_path / "a.png", _rgb8().astype(np.uint16) * 257)
    (tmp_path / "a.png").write_bytes(damage((tmp_path / "a.png").read_bytes()))
    assert main([str(tmp_path / "a.png"), "-s", "2", "-o", str(tmp_path / "out"), "--weights", weights]) == 1
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert "a.png" in first and message in first and "Traceback" not in err
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_command_keeps_16_bits_and_matches_the_8_bit_path(tmp_path, weights, capsys, channels):
    """An input whose 16-bit values are 257 * v8: output / 257 is within 1 of the 8-bit output."""
    v8 = _rgb8(channels)
    Image.fromarray(v8).save(tmp_path / "e.png")
    hand_png16(tmp_path / "d.png", v8.astype(np.uint16) * 257)
    out = tmp_path / "out"
    assert main([str(tmp_path / "d.png"), str(tmp_path / "e.png"), "-s", "2", "-o", str(out), "--weights", weights]) == 0
    assert png_depth(out / "d_srcnn_x2.png") == 16 and png_depth(out / "e_srcnn_x2.png") == 8
    deep = read_png16((out / "d_srcnn_x2.png").read_bytes())
    shallow = np.asarray(Image.open(out / "e_srcnn_x2.png")).astype(np.float64)
    assert deep.shape == (26, 34, channels)
    assert np.abs(deep / 257.0 - shallow).max() <= 1.0
    assert np.any(deep % 257 != 0)  # real 16-bit values, not 8-bit ones widened
    if channels in (2, 4):  # alpha kept, at 16 bits
        assert np.any(deep[:, :, -1] % 257 != 0) and np.abs(deep[:, :, -1] / 257.0 - shallow[:, :, -1]).max() <= 1.0


def test_16_bit_output_equals_enlarge_at_16_bits_and_keeps_metadata(tmp_path, weights):
    px = np.random.default_rng(3).integers(0, 65536, (12, 15, 3), dtype=np.uint16)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">tinysr</x:xmpmeta>'
    phys = _chunk(b"pHYs", struct.pack(">IIB", 3937, 3937, 1))  # 100 dpi
    itxt = _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    tags = Image.Exif()
    tags[0x010F] = "Camera"  # Make
    exif = _chunk(b"eXIf", tags.tobytes()[6:])  # the TIFF block, without JPEG's "Exif\0\0"
    hand_png16(tmp_path / "m.png", px, extra=phys + itxt, after=exif)  # EXIF after the pixels: Pillow decodes for it
    out = tmp_path / "m2.png"
    assert main([str(tmp_path / "m.png"), "-s", "2", "-o", str(out), "--weights", weights, "-q"]) == 0
    model = tinysr.load_model(weights)
    expected, _ = enlarge(px, "RGB16", model, 2)
    np.testing.assert_array_equal(read_png16(out.read_bytes()), expected)
    im = Image.open(out)
    kept = im.info["xmp"]
    assert round(im.info["dpi"][0]) == 200 and xmp in (kept if isinstance(kept, bytes) else kept.encode())
    assert im.getexif()[0x010F] == "Camera"


def test_lossy_output_is_refused_not_narrowed(tmp_path, weights, capsys):
    hand_png16(tmp_path / "d.png", _rgb8().astype(np.uint16) * 257)
    out = tmp_path / "o.jpg"
    assert main([str(tmp_path / "d.png"), "-s", "2", "-o", str(out), "--weights", weights]) == 1
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert "16 bits per channel" in first and "png or tiff" in first and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ValueError, match="holds 8 bits"):
        write_image(tmp_path / "x.webp", np.zeros((4, 4, 3), np.uint16))


@pytest.mark.parametrize("channels", [3, 4])
def test_tiff_16_bit_in_and_out(tmp_path, weights, channels):
    tifffile = pytest.importorskip("tifffile", reason="the [tiff] extra (tifffile) is not installed")
    px = np.random.default_rng(4).integers(0, 65536, (10, 12, channels), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", px, photometric="rgb", compression="zlib",
                     extrasamples=(2,) if channels == 4 else None)
    hand_png16(tmp_path / "p.png", px)
    assert Image.open(tmp_path / "t.tif").mode == "RGBA"[:channels]  # what Pillow alone would give: 8 bits
    out = tmp_path / "out"
    assert main([str(tmp_path / "t.tif"), str(tmp_path / "p.png"), "-s", "2", "-o", str(out), "--weights", weights,
                 "--format", "keep", "-q"]) == 0
    got = tifffile.imread(out / "t_srcnn_x2.tif")
    assert got.dtype == np.uint16 and got.shape == (20, 24, channels)
    assert Image.open(out / "t_srcnn_x2.tif").mode == "RGBA"[:channels]  # alpha marked as alpha
    np.testing.assert_array_equal(got, read_png16((out / "p_srcnn_x2.png").read_bytes()))


def test_without_tifffile_a_16_bit_tiff_is_refused_in_one_line(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile", reason="the [tiff] extra (tifffile) is not installed")
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((4, 5, 3), np.uint16), photometric="rgb")
    monkeypatch.setitem(sys.modules, "tifffile", None)  # as if the extra were absent
    with pytest.raises(ValueError, match=r"t\.tif: 16-bit colour TIFF needs the tiff extra.*not read or written at 8 bits"):
        read_image(tmp_path / "t.tif")


def test_api_arrays_and_paths_stay_16_bit(tmp_path, weights):
    v8 = _rgb8(3, seed=7)
    v16 = v8.astype(np.uint16) * 257
    sr8 = tinysr.upscale(v8, 2, weights=weights)
    sr16 = tinysr.upscale(v16, 2, weights=weights)
    assert sr16.dtype == np.uint16 and sr16.shape == sr8.shape
    assert np.abs(sr16 / 257.0 - sr8).max() <= 1.0
    hand_png16(tmp_path / "a.png", v16)
    for source in (tmp_path / "a.png", Image.open(tmp_path / "a.png")):  # a path, or Pillow's image not yet decoded
        img = tinysr.upscale(source, 2, weights=weights)
        assert isinstance(img, Image16) and img.mode == "RGB;16" and img.size == (34, 26)
        np.testing.assert_array_equal(np.asarray(img), sr16)
    img.save(tmp_path / "round.png")
    assert png_depth(tmp_path / "round.png") == 16
    np.testing.assert_array_equal(read_png16((tmp_path / "round.png").read_bytes()), sr16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_16_bit_pixels_turns_as_pillow_does(orientation):
    px = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    im = Image.fromarray(px)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    np.testing.assert_array_equal(_turn(px, orientation), np.asarray(ImageOps.exif_transpose(im)))


def test_16_bit_tiff_output_keeps_icc_dpi_and_xmp(tmp_path):
    pytest.importorskip("tifffile", reason="the [tiff] extra (tifffile) is not installed")
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    px = np.full((4, 5, 3), 1000, np.uint16)
    write_image(tmp_path / "x.tif", px, icc=icc, dpi=(150, 150), xmp=b"<x>kept</x>")
    im = Image.open(tmp_path / "x.tif")
    assert im.info["icc_profile"] == icc and im.info["dpi"] == (150.0, 150.0) and im.tag_v2[700] == b"<x>kept</x>"
