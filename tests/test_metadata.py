"""Photos keep what they carry (issue #28 item 3): EXIF and XMP copied with the orientation set
upright, ``--strip-metadata``, the API result's ``save`` writing DPI and EXIF, animated images refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import tinysr
from tinysr.cli.upscale import main
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'tiff:Orientation="6"><dc:creator>Ada</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>')
GPS_IFD = 0x8825


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _photo(path, fmt="JPEG"):
    """A 12x8 (stored) photo taken sideways: EXIF orientation 6 (turn 90 degrees clockwise), camera,
    date and GPS tags, XMP saying the same orientation, 300 DPI."""
    arr = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "TinyCam"  # Make
    exif[0x0132] = "2026:12:08 03:00:00"  # DateTime
    exif.get_ifd(GPS_IFD)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    im.save(path, format=fmt, exif=exif, xmp=XMP, dpi=(300, 300), **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def _tags(path):
    with Image.open(path) as im:
        exif = im.getexif()
        return im.size, exif, im.info.get("xmp") or im.info.get("XML:com.adobe.xmp"), im.info.get("dpi")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_and_xmp_are_copied_with_the_orientation_upright(tmp_path, weights, capsys, suffix):
    src = _photo(tmp_path / "sideways.jpg")
    out = tmp_path / f"big{suffix}"
    assert main([str(src), "-o", str(out), "--weights", weights, "-s", "2"]) == 0
    size, exif, xmp, _ = _tags(out)
    assert size == (16, 24)  # the pixels were turned upright (stored 12x8 -> 8x12 -> x2)
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "TinyCam" and exif.get(0x0132) == "2026:12:08 03:00:00"
    if suffix != ".tif":  # TIFF keeps the main tags only (README, Errors and limits)
        assert exif.get_ifd(GPS_IFD).get(2) == (52.0, 31.0, 12.0)
    xmp = xmp.encode() if isinstance(xmp, str) else xmp
    assert b"<dc:creator>Ada</dc:creator>" in xmp and b'tiff:Orientation="1"' in xmp and b'Orientation="6"' not in xmp


def test_strip_metadata_drops_exif_and_xmp_and_keeps_the_rest(tmp_path, weights):
    src = _photo(tmp_path / "sideways.jpg")
    out = tmp_path / "big.png"
    assert main([str(src), "-o", str(out), "--weights", weights, "-s", "2", "--strip-metadata", "-q"]) == 0
    size, exif, xmp, dpi = _tags(out)
    assert size == (16, 24) and len(exif) == 0 and xmp is None
    assert dpi == pytest.approx((600, 600), abs=0.1)  # the DPI stays (the print size)


def test_the_api_results_save_writes_dpi_and_exif(tmp_path):
    src = _photo(tmp_path / "sideways.jpg")
    big = tinysr.upscale(src, 2)
    for name in ("a.png", "a.jpg"):
        big.save(tmp_path / name)
        size, exif, _, dpi = _tags(tmp_path / name)
        assert size == (16, 24) and dpi == pytest.approx((600, 600), abs=0.1), name
        assert exif.get(0x010F) == "TinyCam" and exif.get(0x0112) == 1, name


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(np.full((6, 6, 3), v, np.uint8)) for v in (0, 120, 250)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, suffix", [("GIF", ".gif"), ("PNG", ".png"), ("WEBP", ".webp")])
def test_animated_images_are_refused_in_one_line_not_cut_to_a_frame(tmp_path, weights, capsys, fmt, suffix):
    src = tmp_path / f"anim{suffix}"
    src.write_bytes(_animated(fmt))
    assert main([str(src), "-o", str(tmp_path / "o"), "--weights", weights]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"infer.py: error: {src}: an animated or multi-page image (3 frames); tinysr enlarges single "
                      "images: save the frames as images, or make it a video")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    with pytest.raises(ValueError, match="animated"):
        tinysr.upscale(src, 2)


def test_format_keep_writes_each_output_in_its_inputs_format(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    arr = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for name, fmt in (("a.jpg", "JPEG"), ("b.webp", "WEBP"), ("c.tif", "TIFF"), ("d.bmp", "BMP"), ("e.png", "PNG"),
                      ("e.bmp", "BMP")):
        Image.fromarray(arr).save(folder / name, format=fmt)
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out), "--weights", weights, "-s", "2", "--format", "keep",
                 "--quality", "80", "-q"]) == 0
    got = {p.name: Image.open(p).format for p in out.iterdir()}
    assert got == {"a_srcnn_x2.jpg": "JPEG", "b_srcnn_x2.webp": "WEBP", "c_srcnn_x2.tif": "TIFF",
                   "d_srcnn_x2.png": "PNG", "e_png_srcnn_x2.png": "PNG", "e_bmp_srcnn_x2.png": "PNG"}


def test_a_callers_pil_image_keeps_its_own_exif(tmp_path):
    with Image.open(_photo(tmp_path / "sideways.jpg")) as im:
        big = tinysr.upscale(im, 2)
        assert im.getexif().get(0x0112) == 6 and im.size == (12, 8)  # the caller's image is not changed
    assert big.size == (16, 24)
    tags = Image.Exif()
    tags.load(big.info["exif"])
    assert tags.get(0x0112) == 1 and tags.get(0x010F) == "TinyCam"
