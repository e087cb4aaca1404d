"""The Python API (tinysr.upscale, load_model, evaluate_folder, SRCNN) against the command line.

Every input kind (PIL image, path, uint8/uint16 arrays in every channel layout) must give exactly
the pixels ``tinysr.cli.upscale.main`` writes for the same image; the CLI runs in-process on tiny
images with the bundled x2 weights.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tinysr
import tinysr.cli.progress
from tinysr import api
from tinysr.cli.evaluate import main as evaluate_main
from tinysr.cli.upscale import main as infer_main
from tinysr.weights import bundled_path

SCALE = 2


def _pixels(kind: str, h: int = 11, w: int = 9) -> np.ndarray:
    """A tiny test image of ``kind``: ``(H, W)`` for one channel, ``(H, W, C)`` otherwise."""
    rng = np.random.default_rng(len(kind) * 7 + h)
    if kind == "L16":
        return rng.integers(0, 65536, (h, w), dtype=np.uint16)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[kind]
    px = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return px[:, :, 0] if channels == 1 else px


def _cli_output(tmp_path, src, *flags) -> Image.Image:
    out = tmp_path / "cli_out"
    assert infer_main([str(src), "-o", str(out), "-s", str(SCALE), *flags]) == 0
    with Image.open(out / f"{src.stem}_srcnn_x{SCALE}.png") as im:
        im.load()
        return im


def _saved(tmp_path, px: np.ndarray, name: str = "in.png"):
    path = tmp_path / name
    Image.fromarray(px).save(path)
    return path


EXPECTED_MODE = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "L16": "I;16"}


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA", "L16"])
def test_every_input_kind_gives_the_cli_pixels(tmp_path, kind):
    px = _pixels(kind)
    src = _saved(tmp_path, px)
    cli = _cli_output(tmp_path, src)
    expected = np.asarray(cli)
    assert cli.mode == EXPECTED_MODE[kind]
    assert expected.shape[:2] == (SCALE * px.shape[0], SCALE * px.shape[1])

    from_path = tinysr.upscale(src, SCALE)
    from_str = tinysr.upscale(str(src), SCALE)
    with Image.open(src) as im:
        from_pil = tinysr.upscale(im, SCALE)
    for out in (from_path, from_str, from_pil):
        assert isinstance(out, Image.Image)
        assert out.mode == cli.mode
        np.testing.assert_array_equal(np.asarray(out), expected)

    from_array = tinysr.upscale(px, SCALE)
    assert isinstance(from_array, np.ndarray)
    assert from_array.dtype == px.dtype and from_array.ndim == px.ndim
    np.testing.assert_array_equal(from_array, expected)


@pytest.mark.parametrize("kind", ["L", "L16"])
def test_one_channel_arrays_keep_their_channel_axis(tmp_path, kind):
    px = _pixels(kind)
    expected = np.asarray(_cli_output(tmp_path, _saved(tmp_path, px)))
    out = tinysr.upscale(px[:, :, None], SCALE)
    assert out.shape == (*expected.shape, 1) and out.dtype == px.dtype
    np.testing.assert_array_equal(out[:, :, 0], expected)


def test_palette_image_comes_back_rgb_as_from_the_cli(tmp_path):
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 8, (10, 12), dtype=np.uint8), "P")
    im.putpalette(rng.integers(0, 256, 8 * 3, dtype=np.uint8).tolist())
    src = tmp_path / "pal.png"
    im.save(src)
    cli = _cli_output(tmp_path, src)
    out = tinysr.upscale(im, SCALE)
    assert out.mode == cli.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(cli))


def test_icc_profile_and_dpi_come_along_as_from_the_cli(tmp_path):
    from PIL import ImageCms  # noqa: PLC0415

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "tagged.png"
    Image.fromarray(_pixels("RGB")).save(src, icc_profile=icc, dpi=(72, 72))
    cli = _cli_output(tmp_path, src)
    assert cli.info["icc_profile"] == icc
    with Image.open(src) as im:
        dpi = im.info["dpi"]  # 72 as PNG stores it (dots per metre)
    assert cli.info["dpi"] == pytest.approx((dpi[0] * SCALE, dpi[1] * SCALE), abs=0.05)  # stored again
    for image in (src, Image.open(src)):
        out = tinysr.upscale(image, SCALE)
        assert out.info["icc_profile"] == icc
        assert out.info["dpi"] == (dpi[0] * SCALE, dpi[1] * SCALE)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(cli))


def test_tile_and_weights_reach_the_pipeline(tmp_path):
    px = _pixels("RGB", 13, 10)
    src = _saved(tmp_path, px)
    weights = bundled_path(SCALE)
    expected = np.asarray(_cli_output(tmp_path, src, "--tile", "8", "--weights", str(weights)))
    model = tinysr.load_model(SCALE)
    for w in (weights, str(weights), model):
        np.testing.assert_array_equal(tinysr.upscale(px, SCALE, weights=w, tile=8), expected)
    assert tinysr.upscale(px, SCALE, tile=0, progress=True).shape == expected.shape


def test_progress_callable_gets_every_tile_and_the_pixels_do_not_change(tmp_path):
    px = _pixels("RGB", 13, 10)
    plain = tinysr.upscale(px, SCALE, tile=8)
    calls = []
    out = tinysr.upscale(px, SCALE, tile=8, progress=lambda done, total: calls.append((done, total)))
    total = 4 * 3  # a 26 x 20 output in 8-pixel tiles
    assert calls == [(k, total) for k in range(total + 1)]
    np.testing.assert_array_equal(out, plain)
    calls.clear()
    tinysr.upscale(_saved(tmp_path, px), SCALE, tile=8, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, total) for k in range(total + 1)]


def test_progress_true_draws_a_tile_bar_off_a_terminal_too(tmp_path, monkeypatch):
    """A notebook's stderr is no terminal: ``progress=True`` still shows the bar there."""
    import io  # noqa: PLC0415

    px = _pixels("RGB", 13, 10)
    src = _saved(tmp_path, px, "photo.png")
    plain = np.asarray(tinysr.upscale(src, SCALE, tile=8))
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(tinysr.cli.progress, "REFRESH_S", 0)  # a redraw per tile, so the last count shows
    np.testing.assert_array_equal(np.asarray(tinysr.upscale(src, SCALE, tile=8, progress=True)), plain)
    drawn = stderr.getvalue()
    assert "photo.png" in drawn and "%|" in drawn and "12/12" in drawn and "tile" in drawn
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    tinysr.upscale(px, SCALE, tile=8)  # progress=False: nothing
    assert sys.stderr.getvalue() == ""


def test_a_bad_progress_argument_raises_type_error_before_any_work(monkeypatch):
    monkeypatch.setattr(api, "enlarge", lambda *a, **k: pytest.fail("enlarge ran"))
    with pytest.raises(TypeError, match="progress must be"):
        tinysr.upscale(_pixels("RGB"), SCALE, progress="yes")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), np.float64), "uint8"),
    (np.zeros((4, 4, 3), np.int32), "uint8"),
    (np.zeros((4, 4, 5), np.uint8), "1, 2, 3 or 4 channels"),
    (np.zeros((4, 4, 0), np.uint8), "1, 2, 3 or 4 channels"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"\(H, W\) or \(H, W, C\)"),
    (np.zeros((4,), np.uint8), r"\(H, W\) or \(H, W, C\)"),
    (np.zeros((0, 4), np.uint8), "empty image"),
])
def test_bad_arrays_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        tinysr.upscale(bad, SCALE)


@pytest.mark.parametrize("scale", [0, -2, 0.5, 1, True, "3", float("nan")])
def test_bad_scale_raises_value_error(scale):
    with pytest.raises(ValueError, match="scale must be a number greater than 1"):
        tinysr.upscale(np.zeros((4, 4), np.uint8), scale)


def test_scale_without_bundled_weights_says_so():
    assert tinysr.upscale(np.zeros((4, 4), np.uint8), 5).shape == (20, 20)  # above x4: the x4 network (any size)
    with pytest.raises(ValueError, match="no bundled weights for scale 7"):
        tinysr.load_model(7)


def test_bad_files_and_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        tinysr.upscale(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        tinysr.upscale(np.zeros((4, 4), np.uint8), weights=tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        tinysr.load_model(str(tmp_path / "nope.npz"))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        tinysr.upscale(text)
    with pytest.raises(ValueError, match="tile"):
        tinysr.upscale(np.zeros((4, 4), np.uint8), tile=-1)
    with pytest.raises(TypeError, match="list"):
        tinysr.upscale([[0, 1], [2, 3]])
    with pytest.raises(TypeError, match="weights"):
        tinysr.upscale(np.zeros((4, 4), np.uint8), weights=3)
    with pytest.raises(ValueError, match="unsupported pixel format 'F'"):
        tinysr.upscale(Image.new("F", (4, 4)))


def test_load_model_predicts_a_y_plane_on_0_1():
    model = tinysr.load_model(3)
    assert isinstance(model, tinysr.SRCNN) and model.arch == "9-1-5"
    yy, xx = np.mgrid[0:20, 0:24]
    y = (0.2 + 0.6 * (xx + yy) / (19 + 23)).astype(np.float32)  # a smooth ramp on [0.2, 0.8]
    out = model.predict(y)
    assert out.shape == (20, 24) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.abs(out - y).max() < 0.05  # restores a smooth ramp to itself, on the same [0, 1] scale
    same = tinysr.load_model(bundled_path(3))
    np.testing.assert_array_equal(same.predict(y), out)


def _folder(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (26, 25, 3), dtype=np.uint8)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 256, (24, 30), dtype=np.uint8)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize("flags, kwargs", [([], {}), (["--bicubic"], {"bicubic": True}),
                                           (["--weights", str(bundled_path(3))], {"weights": bundled_path(3)})])
def test_evaluate_folder_gives_the_cli_json(tmp_path, capsys, flags, kwargs):
    folder = _folder(tmp_path)
    assert evaluate_main([str(folder), "-s", "3", "--json", *flags]) == 0
    expected = json.loads(capsys.readouterr().out)
    got = tinysr.evaluate_folder(folder, 3, **kwargs)
    assert got == expected
    assert [r["name"] for r in got["images"]] == ["a", "b"]
    assert got["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in got["images"]]))


def test_evaluate_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        tinysr.evaluate_folder(tmp_path / "none", 3)
    with pytest.raises(ValueError, match="not both"):
        tinysr.evaluate_folder(_folder(tmp_path), 3, weights=bundled_path(3), bicubic=True)
    with pytest.raises(ValueError, match="scale"):
        tinysr.evaluate_folder(tmp_path, 0)


def test_lazy_exports():
    assert tinysr.upscale is api.upscale
    assert tinysr.load_model is api.load_model
    assert tinysr.evaluate_folder is api.evaluate_folder
    from tinysr.nn.model import SRCNN

    assert tinysr.SRCNN is SRCNN
    assert set(tinysr.__all__) <= set(dir(tinysr))
    with pytest.raises(AttributeError, match="no_such_name"):
        tinysr.no_such_name  # noqa: B018


def test_import_tinysr_is_light():
    code = ("import sys, tinysr; tinysr.__version__; "
            "heavy = [m for m in ('numpy', 'numba', 'h5py', 'PIL', 'scipy', 'tinysr.api') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_module_map_lists_every_module_and_only_those():
    """tinysr/__init__'s module map names each module of the package and its subpackages once, and nothing else."""
    import re  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    package = Path(tinysr.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    # tinysr.kernels is the top-level kernels/ folder in a checkout (package-dir), a package in the wheel;
    # tinysr.weights is listed as one package (its own files are data)
    subpackages = {p for p in package.iterdir() if (p / "__init__.py").is_file()} - {package / "kernels"}
    assert {p.name for p in subpackages} == {"weights", "nn", "ops", "protocol", "image", "cli", "distributed", "serve"}
    modules.add("weights")
    for sub in subpackages - {package / "weights"}:
        assert not [p for p in sub.iterdir() if (p / "__init__.py").is_file()], sub  # one level only
        modules |= {f"{sub.name}.{p.stem}" for p in sub.glob("*.py")} - {f"{sub.name}.__init__"}
    mapped = re.findall(r"^- ``([\w.]+)`` ", tinysr.__doc__, re.M)  # not the API's "- ``tinysr.upscale(...)``:"
    assert len(mapped) == len(set(mapped)), sorted(mapped)
    assert set(mapped) == modules
