"""infer.py as ``tinysr upscale`` for photos (tinysr issue #18 items 1, 4, 5): the flags, the
weights' scale, EXIF orientation, ICC and DPI, output formats, folders, labelled comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from tinysr.cli.upscale import main
from tinysr.image.enlarge import enlarge
from tinysr.image.io import pixels_from_image, read_pixels, write_image
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model
from tinysr.weights import load_weights

from .test_progress import written


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _rgb(seed=1, size=(20, 14)):
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _img(path, size=(20, 14), seed=1, **save):
    Image.fromarray(_rgb(seed, size)).save(path, **save)
    return path


def _status(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infer.py: error:"), err
    return lines[0]


# -- 1. flags ------------------------------------------------------------------------------------------

def test_inputs_positional_and_repeated_i(tmp_path, weights, capsys):
    a, b, c = (_img(tmp_path / f"{n}.png", seed=i) for i, n in enumerate("abc"))
    assert main([str(a), "-i", str(b), "--input", str(c), "-o", str(tmp_path / "o"), "-s", "2",
                 "--weights", weights]) == 0
    assert [(i, n, Path(p).name) for i, n, p in written(capsys.readouterr().out)] == [
        (1, 3, "a_srcnn_x2.png"), (2, 3, "b_srcnn_x2.png"), (3, 3, "c_srcnn_x2.png")]


def test_out_is_still_an_alias(tmp_path, weights):
    assert main([str(_img(tmp_path / "a.png")), "--out", str(tmp_path / "o"), "--weights", weights]) == 0
    assert (tmp_path / "o" / "a_srcnn_x3.png").is_file()


def test_o_with_an_image_suffix_names_the_output_file(tmp_path, weights, capsys):
    target = tmp_path / "sub" / "big.jpg"
    assert main([str(_img(tmp_path / "a.png")), "-o", str(target), "-s", "2", "--weights", weights]) == 0
    assert written(capsys.readouterr().out) == [(1, 1, str(target))]
    with Image.open(target) as im:
        assert im.format == "JPEG" and im.size == (40, 28)


@pytest.mark.parametrize("extra,match", [
    (["{b}", "-o", "{t}/x.png"], "names one file"),
    (["-o", "{t}/x.png", "--format", "jpg"], "disagree"),
    (["--quality", "80"], "--quality applies to the lossy formats"),
    (["--quality", "101", "--format", "jpg"], "--quality: must be 1..100"),
    ([], None),  # no input at all: see below
])
def test_flag_errors_are_one_line(tmp_path, weights, capsys, extra, match):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.png")
    subs = {"{b}": str(b), "{t}/x.png": str(tmp_path / "x.png")}
    argv = ([str(a)] if match else []) + [subs.get(x, x) for x in extra] + ["--weights", weights]
    if not match:
        argv += ["-o", str(tmp_path / "o")]
    assert _status(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert (match or "no INPUT") in line
    assert not (tmp_path / "x.png").exists()


def test_help_is_plain_text(capsys):
    assert _status(["--help"]) == 0
    text = capsys.readouterr().out
    assert "-i INPUT, --input INPUT" in text and "-o PATH, --output PATH, --out PATH" in text
    assert "examples:" in text and "\x1b" not in text


# -- 5. the weights' own scale -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def x2_weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w2") / "x2.npz", SRCNN(n1=8, n2=4, init="he", seed=0),
                          meta={"scale": 2}))


def test_weights_for_another_scale_are_refused_unless_force(tmp_path, x2_weights, capsys):
    src = str(_img(tmp_path / "a.png"))
    assert _status([src, "-s", "3", "--weights", x2_weights, "-o", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "trained for x2" in line and "--force" in line
    assert not (tmp_path / "o").exists()
    assert main([src, "-s", "3", "--weights", x2_weights, "-o", str(tmp_path / "o"), "--force"]) == 0
    assert Image.open(tmp_path / "o" / "a_srcnn_x3.png").size == (60, 42)


def test_without_s_the_weights_scale_is_used(tmp_path, x2_weights):
    assert main([str(_img(tmp_path / "a.png")), "--weights", x2_weights, "-o", str(tmp_path / "o")]) == 0
    assert Image.open(tmp_path / "o" / "a_srcnn_x2.png").size == (40, 28)


# -- 4. photos -------------------------------------------------------------------------------------

def test_exif_orientation_is_applied_before_enlarging(tmp_path, weights):
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: view rotated 90 degrees clockwise
    sideways = _img(tmp_path / "sideways.png", exif=exif)
    upright = tmp_path / "upright.png"
    with Image.open(sideways) as im:
        ImageOps.exif_transpose(im).save(upright)
    out = tmp_path / "o"
    assert main([str(sideways), str(upright), "-o", str(out), "--weights", weights, "-s", "2"]) == 0
    a = np.asarray(Image.open(out / "sideways_srcnn_x2.png"))
    b = np.asarray(Image.open(out / "upright_srcnn_x2.png"))
    assert a.shape == (40, 28, 3)  # 20 wide, 14 high, turned: 14 wide, 20 high, x2
    assert np.array_equal(a, b)
    pixels, kind = read_pixels(sideways)
    assert pixels.shape == (20, 14, 3) and kind == "RGB"


def test_pixels_from_image_turns_an_in_memory_image(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    with Image.open(_img(tmp_path / "s.png", exif=exif)) as im:
        im.load()
        assert pixels_from_image(im)[0].shape == (20, 14, 3)
        assert pixels_from_image(im, exif_transpose=False)[0].shape == (14, 20, 3)


def test_icc_profile_and_dpi_are_carried_over(tmp_path, weights):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = _img(tmp_path / "photo.png", icc_profile=icc, dpi=(100, 100))
    for fmt in ("png", "jpg", "tiff"):
        out = tmp_path / fmt
        assert main([str(src), "-o", str(out), "--weights", weights, "--format", fmt]) == 0
        (target,) = out.iterdir()
        with Image.open(target) as im:
            assert im.info.get("icc_profile") == icc, fmt
            assert im.info["dpi"] == pytest.approx((300, 300), abs=0.1), fmt


@pytest.mark.parametrize("fmt,suffix,pillow", [("jpg", ".jpg", "JPEG"), ("webp", ".webp", "WEBP"),
                                                ("tiff", ".tif", "TIFF"), ("png", ".png", "PNG")])
def test_output_formats(tmp_path, weights, fmt, suffix, pillow):
    out = tmp_path / "o"
    argv = [str(_img(tmp_path / "a.png")), "-o", str(out), "--weights", weights, "--format", fmt]
    assert main(argv + (["--quality", "80"] if fmt in ("jpg", "webp") else [])) == 0
    with Image.open(out / f"a_srcnn_x3{suffix}") as im:
        assert im.format == pillow and im.size == (60, 42) and im.mode == "RGB"


def test_lossless_formats_hold_the_png_pixels(tmp_path, weights):
    src = _img(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / "p"), "--weights", weights]) == 0
    assert main([str(src), "-o", str(tmp_path / "t"), "--weights", weights, "--format", "tiff"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p" / "a_srcnn_x3.png")),
                          np.asarray(Image.open(tmp_path / "t" / "a_srcnn_x3.tif")))


def test_png_pixels_are_those_of_enlarge(tmp_path, weights):
    """The CLI's default output is exactly tinysr.image.enlarge.enlarge's integers (no change of numbers)."""
    src = _img(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / "o"), "--weights", weights]) == 0
    sr, _ = enlarge(_rgb(), "RGB", load_weights(weights), 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "a_srcnn_x3.png")), sr)


def test_16_bit_stays_16_bit_where_the_format_allows(tmp_path, weights):
    src = tmp_path / "deep.png"
    Image.fromarray((np.random.default_rng(3).random((10, 12)) * 65535).astype(np.uint16)).save(src)
    assert main([str(src), "-o", str(tmp_path / "t"), "-s", "2", "--weights", weights, "--format", "tiff"]) == 0
    assert main([str(src), "-o", str(tmp_path / "p"), "-s", "2", "--weights", weights]) == 0
    assert main([str(src), "-o", str(tmp_path / "j"), "-s", "2", "--weights", weights, "--format", "jpg",
                 "--quality", "100"]) == 0
    tif = Image.open(tmp_path / "t" / "deep_srcnn_x2.tif")
    png = np.asarray(Image.open(tmp_path / "p" / "deep_srcnn_x2.png")).astype(int)
    assert tif.mode.startswith("I;16") and np.array_equal(np.asarray(tif).astype(int), png)
    jpg = Image.open(tmp_path / "j" / "deep_srcnn_x2.jpg")
    assert jpg.mode == "L" and np.abs(np.asarray(jpg).astype(int) - png / 257).max() < 8


def test_write_image_refuses_alpha_in_jpeg_and_keeps_existing(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    with pytest.raises(ValueError, match="no alpha"):
        write_image(tmp_path / "a.jpg", rgba)
    (tmp_path / "b.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        write_image(tmp_path / "b.png", rgba)
    assert (tmp_path / "b.png").read_bytes() == b"precious"
    write_image(tmp_path / "b.png", rgba, overwrite=True)
    assert Image.open(tmp_path / "b.png").mode == "RGBA"


def test_folder_takes_every_readable_image_and_says_what_it_skips(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _img(folder / "a.webp", lossless=True)
    Image.fromarray(_rgb(2)).convert("P").save(folder / "b.gif")
    _img(folder / "c.unusual_suffix", format="PNG")
    (folder / "notes.txt").write_text("not an image")
    _img(folder / "sub" / "d.png")
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights]) == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["a_srcnn_x3.png", "b_srcnn_x3.png", "c_srcnn_x3.png"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("infer.py: skipped ") for line in err[:2])
    assert err[2].startswith("infer.py: 3 written, 0 skipped, 0 failed of 3 images")
    assert "notes.txt: not an image" in err[0] and "sub: a subfolder (--recursive" in err[1]


def test_recursive_keeps_the_subfolders(tmp_path, weights):
    folder = tmp_path / "in"
    (folder / "x" / "y").mkdir(parents=True)
    _img(folder / "top.png")
    _img(folder / "x" / "y" / "deep.png")
    _img(folder / "x" / "top.png")  # same name, other folder: no clash
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights, "--recursive"]) == 0
    got = sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*.png"))
    assert got == ["top_srcnn_x3.png", "x/top_srcnn_x3.png", "x/y/deep_srcnn_x3.png"]


def test_compare_is_written_even_when_the_output_exists_and_is_labelled(tmp_path, weights, capsys):
    src = _img(tmp_path / "a.png", size=(30, 20))
    out = tmp_path / "o"
    assert main([str(src), "-o", str(out), "--weights", weights]) == 0
    before = (out / "a_srcnn_x3.png").read_bytes()
    capsys.readouterr()
    assert main([str(src), "-o", str(out), "--weights", weights, "--compare"]) == 0
    assert (out / "a_srcnn_x3.png").read_bytes() == before  # kept
    assert written(capsys.readouterr().out) == [(1, 1, str(out / "a_compare_x3.png"))]
    cmp = np.asarray(Image.open(out / "a_compare_x3.png"))
    sr = np.asarray(Image.open(out / "a_srcnn_x3.png"))
    assert cmp.shape == (60, 180, 3)
    assert np.array_equal(cmp[30:, 90:], sr[30:])  # below the label: the enlargement itself
    left, right = cmp[:12, :40], cmp[:12, 90:130]  # the label boxes: white text on black
    for box in (left, right):
        assert (box == 0).all(axis=2).sum() > 50 and (box == 255).all(axis=2).sum() > 10
    assert not np.array_equal(left, right)  # "bicubic" and "SRCNN x3" differ


def test_a_profile_that_does_not_fit_is_not_carried(tmp_path, weights):
    """A CMYK JPEG's profile does not describe its RGB conversion: the output gets none."""
    cmyk_icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    cmyk_icc[16:20] = b"CMYK"
    src = tmp_path / "print.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (14, 20, 4), dtype=np.uint8), "CMYK").save(
        src, icc_profile=bytes(cmyk_icc))
    assert main([str(src), "-o", str(tmp_path / "o"), "--weights", weights]) == 0
    with Image.open(tmp_path / "o" / "print_srcnn_x3.png") as im:
        assert im.mode == "RGB" and "icc_profile" not in im.info
    with pytest.raises(ValueError, match="ICC profile is for CMYK"):
        write_image(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8), icc=bytes(cmyk_icc))


def test_recursive_output_inside_the_input_folder_is_not_read_again(tmp_path, weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    _img(folder / "a.png")
    argv = [str(folder), "-o", str(folder / "sr"), "--weights", weights, "--recursive"]
    assert main(argv) == 0
    assert main(argv) == 1  # a's output exists; photos/sr/a_srcnn_x3.png is not an input
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == ["a.png", "sr", "sr/a_srcnn_x3.png"]
