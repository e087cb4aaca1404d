"""The input says what it needs: the IJG quality of a JPEG, estimated from its quantisation tables."""

import io

import numpy as np
import pytest
from PIL import Image

from tinysr.image.jpeg_quality import (
    choose_level,
    describe,
    estimate_quality,
    file_jpeg_quality,
    ijg_tables,
    jpeg_quality,
    level_for_quality,
    probe_file,
)


def _photo(h=48, w=64, gray=False):
    """Smooth gradients and some noise: a stand-in for a photo, RGB ``(h, w, 3)`` or gray ``(h, w)`` uint8."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([120 + 80 * np.sin(xx / 7 + c) * np.cos(yy / 9) for c in range(3)], -1)
    img += np.random.default_rng(0).normal(0, 6, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[:, :, 0] if gray else img


def _jpeg(img, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", **save)
    return buf.getvalue()


def _opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("quality", range(10, 101))
def test_pillow_jpegs_give_their_quality(quality):
    im = _opened(_jpeg(_photo(), quality=quality))
    q, exact = estimate_quality(im.quantization)
    assert abs(q - quality) <= 5  # the bound; IJG tables are in fact matched exactly
    assert (q, exact) == (quality, True)
    assert jpeg_quality(im) == quality


@pytest.mark.parametrize("quality", [12, 50, 77, 95])
def test_grayscale_progressive_and_restart_marker_jpegs(quality):
    gray = _opened(_jpeg(_photo(gray=True), quality=quality))
    assert gray.mode == "L" and len(gray.quantization) == 1 and jpeg_quality(gray) == quality
    data = _jpeg(_photo(), quality=quality, progressive=True)
    prog = _opened(data)
    assert prog.info.get("progressive") and jpeg_quality(prog) == quality
    data = _jpeg(_photo(), quality=quality, restart_marker_blocks=1)
    assert any(bytes([0xFF, 0xD0 + k]) in data for k in range(8))  # RSTn markers are really there
    restart = _opened(data)
    assert jpeg_quality(restart) == quality
    restart.load()  # and it decodes


def test_non_standard_tables_give_the_nearest_quality_and_never_crash():
    luma, chroma = ijg_tables(70)
    rng = np.random.default_rng(1)
    # a camera-like variant of the q70 tables: every entry off by up to 20%
    noisy = [np.clip(np.round(t * rng.uniform(0.8, 1.2, 64)), 1, 255).astype(int).tolist() for t in (luma, chroma)]
    im = _opened(_jpeg(_photo(), qtables=noisy, subsampling=2))
    assert im.quantization[0] == noisy[0]  # the file really holds them
    q, exact = estimate_quality(im.quantization)
    assert not exact and abs(q - 70) <= 5 and level_for_quality(q) == "medium"
    # flat tables (every coefficient alike) and the extremes: some quality, a level, no error
    for table in ([[2] * 64], [[200] * 64, [255] * 64], [[40] * 64, [3] * 64]):
        q, exact = estimate_quality(dict(enumerate(_opened(_jpeg(_photo(), qtables=table)).quantization.values())))
        assert 1 <= q <= 100 and not exact and level_for_quality(q) in ("none", "low", "medium", "high")
    assert estimate_quality({0: [1] * 64}) == (100, True)
    with pytest.raises(ValueError, match="64 entries"):
        estimate_quality({0: [3] * 10})
    with pytest.raises(ValueError, match="no luminance"):
        estimate_quality({})


def test_other_images_and_files_have_no_jpeg_quality(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(_photo()).save(png)
    assert probe_file(png) == ("PNG", None)
    webp = tmp_path / "a.webp"
    Image.fromarray(_photo()).save(webp, lossless=True)
    assert probe_file(webp) == ("WEBP", None)
    jpg = tmp_path / "a.jpg"
    jpg.write_bytes(_jpeg(_photo(), quality=61))
    assert probe_file(jpg) == ("JPEG", 61) and file_jpeg_quality(jpg) == 61
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    assert probe_file(broken) == (None, None)
    assert jpeg_quality(Image.fromarray(_photo())) is None  # made in memory, even if later saved as JPEG


def test_levels_for_qualities_and_names():
    assert [level_for_quality(q) for q in (None, 100, 98, 97, 80, 79, 55, 54, 10)] == [
        "none", "none", "none", "low", "low", "medium", "medium", "high", "high"]
    assert choose_level("auto", 60) == "medium" and choose_level("high", None) == "high"
    assert choose_level("none", 20) == "none"
    with pytest.raises(ValueError, match="denoise must be one of"):
        choose_level("strong", 50)
    assert describe("JPEG", 78, "medium") == "JPEG q~78: medium"
    assert describe("PNG", None, "none") == "PNG: none"
    assert describe(None, None, "none") == "array: none"
