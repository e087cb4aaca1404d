"""Any output size (issue #28 item 2): ``-s 2.5``, ``--width``, ``--height`` through the command
and the API; the Matlab bicubic to the exact size, then the nearest bundled network."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

import tinysr
from tinysr.cli.upscale import main
from tinysr.image.enlarge import enlarge, network_scale, output_size
from tinysr.image.inference import restore_y
from tinysr.protocol.color import rgb2ycbcr, ycbcr2rgb
from tinysr.protocol.imresize import imresize
from tinysr.protocol.metrics import to_uint8_matlab
from tinysr.weights import bundled_path, load_weights


def _rgb(h=13, w=17, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("s, hw, want", [(1.5, (13, 17), (20, 26)), (2.5, (13, 17), (33, 43)),
                                         (3.5, (10, 10), (35, 35)), (2, (13, 17), (26, 34))])
def test_scale_gives_matlabs_ceil_size(s, hw, want):
    assert output_size(hw, s) == want
    assert tinysr.upscale(_rgb(*hw), s).shape == (*want, 3)


def test_width_or_height_keep_the_aspect_and_both_give_the_exact_size():
    img = _rgb(13, 17)
    assert tinysr.upscale(img, width=40).shape == (31, 40, 3)  # 13 * 40 / 17 = 30.6 -> 31
    assert tinysr.upscale(img, height=30).shape == (30, 39, 3)  # 17 * 30 / 13 = 39.2 -> 39
    assert tinysr.upscale(img[:, :, 0], width=50, height=20).shape == (20, 50)


@pytest.mark.parametrize("bad", [0.5, 1, 1.0, 0, -2, float("nan"), float("inf"), True, "2"])
def test_scales_not_above_1_are_refused(bad):
    with pytest.raises(ValueError, match="greater than 1"):
        tinysr.upscale(_rgb(), bad)


def test_sizes_that_do_not_enlarge_are_refused():
    with pytest.raises(ValueError, match="only enlarges"):
        tinysr.upscale(_rgb(13, 17), width=16)
    with pytest.raises(ValueError, match="not both"):
        tinysr.upscale(_rgb(), 2, width=40)


def test_the_network_is_the_smallest_bundled_scale_at_or_above():
    assert [network_scale((10, 10), (round(10 * s), round(10 * s))) for s in (1.2, 1.5, 2, 2.2, 2.5, 3, 3.5, 4, 6)] \
        == [2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert network_scale((10, 20), (25, 41)) == 3  # the larger axis factor decides


def _via(img: np.ndarray, n: int, out_hw) -> np.ndarray:
    """The reference: the whole-image float pipeline at the integer scale ``n`` (YCbCr, imresize,
    the xN network on Y, RGB, uint8), then imresize of that to ``out_hw``, rounded."""
    ycc = imresize(rgb2ycbcr(img.astype(np.float64) / 255), float(n))
    ycc[:, :, 0] = restore_y(load_weights(bundled_path(n)), ycc[:, :, 0], tile=None)
    big = to_uint8_matlab(np.clip(ycbcr2rgb(ycc), 0, 1))
    return to_uint8_matlab(np.clip(imresize(big.astype(np.float64) / 255, output_shape=out_hw), 0, 1))


@pytest.mark.parametrize("s, n", [(2.5, 3), (1.5, 2)])
def test_a_scale_between_networks_is_the_next_network_then_bicubic_down(s, n):
    img = _rgb(11, 9, seed=3)
    got = tinysr.upscale(img, s, tile=0)
    want = _via(img, n, output_size(img.shape[:2], s))
    assert got.shape == want.shape and np.array_equal(got, want)
    assert np.array_equal(tinysr.upscale(img, s, tile=8), got)  # tiles change nothing


def test_width_is_the_same_pipeline_to_that_size():
    img = _rgb(21, 30, seed=4)
    got = tinysr.upscale(img, width=70)  # 21 * 70 / 30 = 49 rows: x2.33 -> the x3 network, then down
    assert got.shape == (49, 70, 3) and np.array_equal(got, _via(img, 3, (49, 70)))
    exact = tinysr.upscale(img, width=90)  # exactly x3: the x3 path itself, no resize
    assert np.array_equal(exact, tinysr.upscale(img, 3))


def test_above_the_largest_network_the_bicubic_goes_to_the_size():
    img = _rgb(7, 6, seed=5)
    got, _ = enlarge(img, "RGB", load_weights(bundled_path(4)), 5.5, tile=None)
    ycc = imresize(rgb2ycbcr(img.astype(np.float64) / 255), 5.5)
    ycc[:, :, 0] = restore_y(load_weights(bundled_path(4)), ycc[:, :, 0], tile=None)
    assert got.shape == (39, 33, 3) and np.array_equal(got, to_uint8_matlab(np.clip(ycbcr2rgb(ycc), 0, 1)))


# -- the command ---------------------------------------------------------------------------------------

def _png(path, h=13, w=17, dpi=None):
    Image.fromarray(_rgb(h, w)).save(path, **({"dpi": dpi} if dpi else {}))
    return path


@pytest.mark.parametrize("flags, name, size", [(["-s", "2.5"], "a_srcnn_x2.5.png", (43, 33)),
                                               (["-s", "1.5"], "a_srcnn_x1.5.png", (26, 20)),
                                               (["-s", "2.0"], "a_srcnn_x2.png", (34, 26)),
                                               (["--width", "40"], "a_srcnn_w40.png", (40, 31)),
                                               (["--height", "30"], "a_srcnn_h30.png", (39, 30)),
                                               (["--width", "50", "--height", "20"], "a_srcnn_50x20.png", (50, 20))])
def test_the_command_writes_exactly_that_size(tmp_path, capsys, flags, name, size):
    src = _png(tmp_path / "a.png", dpi=(72, 72))
    assert main([str(src), "-o", str(tmp_path / "o"), *flags]) == 0
    with Image.open(tmp_path / "o" / name) as im:
        assert im.size == size
        assert im.info["dpi"] == pytest.approx((72 * size[0] / 17, 72 * size[1] / 13), rel=1e-3)  # same print size
        got = np.asarray(im)
    sized = {"--width": "width", "--height": "height"}
    kwargs = {sized[f]: int(v) for f, v in zip(flags[::2], flags[1::2]) if f in sized}
    assert np.array_equal(got, tinysr.upscale(_rgb(), float(flags[1]) if flags[0] == "-s" else None, **kwargs))


@pytest.mark.parametrize("flags, match", [(["-s", "0.5"], "-s.*greater than 1"), (["-s", "1"], "greater than 1"),
                                          (["-s", "x"], "greater than 1"),
                                          (["-s", "2", "--width", "40"], "not both"),
                                          (["--width", "0"], "--width"),
                                          (["--width", "16"], "does not enlarge")])
def test_bad_sizes_are_one_line(tmp_path, capsys, flags, match):
    src = _png(tmp_path / "a.png")
    try:
        status = main([str(src), "-o", str(tmp_path / "o"), *flags])
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code
    err = capsys.readouterr().err
    lines = err.splitlines()  # one line saying why (exit 2), or for the image refused one and the count (exit 1)
    assert (status, len(lines)) in ((2, 1), (1, 2)) and all(x.startswith("infer.py: ") for x in lines), err
    assert re.search(match, lines[0]), err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_width_in_a_folder_picks_each_images_network(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_rgb(10, 20)).save(folder / "small.png")  # 20 -> 60: x3
    Image.fromarray(_rgb(10, 40)).save(folder / "wide.png")  # 40 -> 60: x1.5, the x2 network then down
    assert main([str(folder), "-o", str(tmp_path / "o"), "--width", "60", "-q"]) == 0
    small = np.asarray(Image.open(tmp_path / "o" / "small_srcnn_w60.png"))
    wide = np.asarray(Image.open(tmp_path / "o" / "wide_srcnn_w60.png"))
    assert np.array_equal(small, tinysr.upscale(_rgb(10, 20), 3))
    assert wide.shape == (15, 60, 3) and np.array_equal(wide, _via(_rgb(10, 40), 2, (15, 60)))
