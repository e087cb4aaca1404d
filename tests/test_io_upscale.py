"""tinysr upscale on hostile folders, names, flags and weights (tinysr issue #23, items 6-12)."""

from __future__ import annotations

import os
import shutil
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinysr
from tinysr.cli.upscale import main
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model

from .test_infer_safety import no_hang  # noqa: F401  (a fixture: a hang becomes a failure)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0), meta={"scale": 3}))


def _img(path, size=(20, 14), seed=1, **save):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, **save)
    return path


def _lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("infer.py: ") for line in lines), err  # no traceback, nothing else
    return lines


# -- item 9, 11: --max-pixels values ---------------------------------------------------------------

@pytest.mark.parametrize("value,match", [("inf", "finite"), ("nan", "finite"), ("1e400", "finite"),
                                         ("0.4", "at least 1 pixel"), ("-5", "at least 1 pixel")])
def test_max_pixels_values_that_are_no_limit_or_no_number_are_refused(tmp_path, weights, capsys, value, match):
    with pytest.raises(SystemExit) as info:
        main([str(_img(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "--weights", weights, "--max-pixels", value])
    assert info.value.code == 2
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--max-pixels" in lines[0] and match in lines[0]
    assert not (tmp_path / "o").exists()


# -- item 8: links to ancestors --------------------------------------------------------------------

def test_recursive_reads_each_real_folder_once_through_links_to_ancestors(tmp_path, weights, capsys, no_hang):
    top = tmp_path / "photos"
    (top / "a" / "b").mkdir(parents=True)
    _img(top / "p.png")
    _img(top / "a" / "q.png", seed=2)
    _img(top / "a" / "b" / "r.png", seed=3)
    for d, name in ((top / "a" / "b", "up"), (top / "a" / "b", "top"), (top / "a", "again"), (top, "self")):
        os.symlink(top if name in ("top", "self") else top / "a", d / name)
    out = tmp_path / "o"
    assert main([str(top), "-o", str(out), "--weights", weights, "--recursive"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a/b/r_srcnn_x3.png", "a/q_srcnn_x3.png", "p_srcnn_x3.png"]
    skipped = [line for line in _lines(capsys.readouterr().err) if "already read" in line]
    assert len(skipped) == 4


# -- item 9: a DPI the output format cannot hold ---------------------------------------------------

def test_a_dpi_too_large_for_png_is_dropped_and_the_batch_goes_on(tmp_path, weights, capsys):
    big = _img(tmp_path / "a.png", dpi=(1e8, 1e8))  # fits PNG; times 3 does not
    plain = _img(tmp_path / "b.png", seed=2, dpi=(300, 300))
    out = tmp_path / "o"
    assert main([str(big), str(plain), "-o", str(out), "--weights", weights]) == 0
    assert _only_the_summary(capsys.readouterr().err, 2)
    with Image.open(out / "a_srcnn_x3.png") as im:
        assert "dpi" not in im.info and im.size == (60, 42)
    with Image.open(out / "b_srcnn_x3.png") as im:
        assert np.allclose(im.info["dpi"], (900, 900), atol=0.01)


def test_a_dpi_too_large_for_jpeg_is_dropped_not_wrapped(tmp_path, weights):
    src = _img(tmp_path / "a.png", dpi=(30000, 30000))  # x3 = 90000 > JPEG's 16 bits (it used to wrap to 24464)
    assert main([str(src), "-o", str(tmp_path / "a.jpg"), "--weights", weights]) == 0
    with Image.open(tmp_path / "a.jpg") as im:
        assert "dpi" not in im.info and im.info["jfif_unit"] == 0  # no density recorded


# -- item 10: names, unwritable folders, stdout ----------------------------------------------------

def test_a_240_character_input_name_is_written(tmp_path, weights, capsys):
    src = _img(tmp_path / ("n" * 236 + ".png"))  # output name: 249 characters, its temporary longer still
    out = tmp_path / "o"
    assert main([str(src), "-o", str(out), "--weights", weights]) == 0, capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["n" * 236 + "_srcnn_x3.png"]


def _in_own_mount(tmp_path, options: str, argv: list[str]):
    """Run ``infer.py argv`` with ``tmp_path/out`` a tmpfs mounted with ``options`` (a real read-only
    or full file system), in a user and mount namespace of its own; skip where the kernel refuses."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small file system")
    out = tmp_path / "out"
    out.mkdir()
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o {options} tmpfs {out}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode().strip()}")
    script = f'mount -t tmpfs -o {options} tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(out),
                           sys.executable, str(ROOT / "infer.py"), *argv, "-o", str(out)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("options,reason", [("ro,size=1m", "Read-only file system"),
                                            ("size=24k", "No space left on device")])
def test_an_unwritable_output_folder_is_one_line_naming_it(tmp_path, weights, options, reason):
    srcs = [str(_img(tmp_path / f"{n}.png", size=(60, 60), seed=k)) for k, n in enumerate("abcd")]
    r = _in_own_mount(tmp_path, options, srcs + ["--weights", weights, "-q"])
    assert r.returncode == 1, r.stderr
    lines = _lines(r.stderr)
    assert lines[0] == f"infer.py: error: {tmp_path / 'out'}: cannot write into this folder ({reason}); " \
                       "its 4 remaining images not enlarged", lines
    assert lines[1:] == ["infer.py: 4 of 4 images failed"]
    assert ".tmp" not in r.stderr


def _only_the_summary(err: str, n: int) -> bool:
    """stderr of a clean batch of ``n`` images: nothing but the closing summary line."""
    return re.fullmatch(rf"infer\.py: {n} written, 0 skipped, 0 failed of {n} images in [0-9.]+ s\n", err) is not None


def test_stdout_on_a_full_device_does_not_fail_written_images(tmp_path, weights):
    srcs = [str(_img(tmp_path / f"{n}.png", seed=k)) for k, n in enumerate("ab")]
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, str(ROOT / "infer.py"), *srcs, "-o", str(tmp_path / "o"),
                            "--weights", weights], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0 and _only_the_summary(r.stderr, 2)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_srcnn_x3.png", "b_srcnn_x3.png"]


# -- item 12: names that clash, -o the input folder --------------------------------------------------

def test_only_the_true_clash_is_refused(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(_img(tmp_path / "x.png", seed=1)).save(folder / "a.jpg", quality=95)
    _img(folder / "a.png", seed=2)
    _img(folder / "a.PNG", seed=3)
    out = tmp_path / "o"
    assert main([str(folder), "-o", str(out), "--weights", weights]) == 1
    lines = _lines(capsys.readouterr().err)
    refusals = [line for line in lines if "would both be written" in line]
    assert len(refusals) == 1 and str(folder / "a.png") in refusals[0] and str(folder / "a.PNG") in refusals[0]
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg_srcnn_x3.png", "a_png_srcnn_x3.png"]


def test_output_folder_equal_to_the_input_folder_does_not_enlarge_its_outputs_again(tmp_path, weights, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _img(folder / "a.png")
    for _ in range(3):
        main([str(folder), "-o", str(folder), "--weights", weights, "--compare", "--overwrite"])
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_compare_x3.png", "a_srcnn_x3.png"]
    err = capsys.readouterr().err
    assert "a_srcnn_x3.png: named as tinysr's output" in err and "error" not in err


# -- items 6, 7: weights ---------------------------------------------------------------------------

def _huge_bias_weights(tmp_path):
    model = SRCNN(n1=8, n2=4, init="he", seed=0)
    model.conv1.bias[...] = np.finfo(np.float32).max  # finite, but every output overflows
    return save_model(tmp_path / "huge.npz", model, meta={"scale": 3}), model


def test_weights_that_overflow_are_refused_in_one_line(tmp_path, capsys):
    path, _ = _huge_bias_weights(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning would fail here
        assert main([str(_img(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "--weights", str(path)]) == 2
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "huge.npz" in lines[0] and "NaN or Inf" in lines[0]
    assert not (tmp_path / "o").exists()


def test_an_image_the_weights_overflow_on_is_an_error_not_a_black_image(tmp_path):
    _, model = _huge_bias_weights(tmp_path)  # never loaded from a file: the per-image check catches it
    img = np.random.default_rng(0).integers(0, 256, (14, 20, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="not finite"):
            tinysr.upscale(img, scale=3, weights=model)


@pytest.mark.parametrize("meta", [{"scale": 7}, {"scale": -3}, {"recipe": {"scale": 7}}, {"scale": "3"}])
def test_weights_naming_an_unsupported_scale_are_refused_at_load(tmp_path, capsys, meta):
    path = save_model(tmp_path / "odd.npz", SRCNN(n1=8, n2=4, init="he", seed=0), meta=meta)
    assert main([str(_img(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "--weights", str(path)]) == 2
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "odd.npz" in lines[0] and "tinysr enlarges by 2, 3 or 4" in lines[0]
    assert not (tmp_path / "o").exists()


def test_mat_weights_without_s_say_they_carry_no_scale(tmp_path, capsys):
    scipy_io = pytest.importorskip("scipy.io")
    mat = tmp_path / "w.mat"
    rng = np.random.default_rng(0)
    scipy_io.savemat(str(mat), {"weights_conv1": rng.normal(0, 0.1, (81, 8)), "biases_conv1": np.zeros((8, 1)),
                                "weights_conv2": rng.normal(0, 0.1, (8, 1, 4)), "biases_conv2": np.zeros((4, 1)),
                                "weights_conv3": rng.normal(0, 0.1, (4, 25)), "biases_conv3": np.zeros((1, 1))})
    src = str(_img(tmp_path / "a.png"))
    assert main([src, "-o", str(tmp_path / "o"), "--weights", str(mat)]) == 0
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and "w.mat" in lines[0] and "records no scale" in lines[0] and "-s" in lines[0]
    assert main([src, "-o", str(tmp_path / "o2"), "--weights", str(mat), "-s", "2"]) == 0
    assert capsys.readouterr().err == ""


# -- item 12: SRCNN.predict, --backend auto ----------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda y: (y * 255).astype(np.uint8), "float Y plane on \\[0, 1\\], got uint8"),
    (lambda y: np.stack([y] * 3, axis=-1), "one Y plane \\(H, W\\), got shape \\(12, 10, 3\\)"),
    (lambda y: y * 255, "divide 0..255 values by 255"),
])
def test_predict_refuses_what_is_not_a_y_plane_on_0_1(make, match):
    model = SRCNN(n1=8, n2=4, init="he", seed=0)
    y = np.random.default_rng(0).random((12, 10)).astype(np.float32)
    assert model.predict(y).shape == (12, 10)
    with pytest.raises(ValueError, match=match):
        model.predict(make(y))


def test_backend_auto_says_what_it_chose(tmp_path, weights, capsys):
    src = str(_img(tmp_path / "a.png"))
    assert main([src, "-o", str(tmp_path / "o"), "--weights", weights, "--backend", "auto"]) == 0
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("infer.py: --backend auto: ") and (
        "numpy" in lines[0] or "cupy" in lines[0])
    assert main([src, "-o", str(tmp_path / "o2"), "--weights", weights, "--backend", "auto", "-q"]) == 0
    assert capsys.readouterr().err == ""



@pytest.fixture
def unwritable(tmp_path):
    """A folder nothing can be created in: mode 0555, or for root (whom modes do not stop) immutable."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.getuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True) if shutil.which("chattr") else None
    if r is None or r.returncode != 0:
        pytest.skip("running as root, and this file system has no immutable attribute (chattr +i)")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_folder_that_refuses_writes_is_one_line_naming_it(tmp_path, weights, capsys, unwritable):
    srcs = [str(_img(tmp_path / f"{n}.png", seed=k)) for k, n in enumerate("abc")]
    assert main(srcs + ["-o", str(unwritable), "--weights", weights, "-q"]) == 1
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 2 and lines[1] == "infer.py: 3 of 3 images failed", lines
    assert lines[0].startswith(f"infer.py: error: {unwritable}: cannot write into this folder (")
    assert lines[0].endswith("); its 3 remaining images not enlarged") and ".tmp" not in lines[0]
    assert list(unwritable.iterdir()) == []


@pytest.mark.parametrize("name,own", [("a_srcnn_x3.png", True), ("a_srcnn_x2.5.jpg", True), ("a_compare_w1000.png", True),
                                      ("a_srcnn_h800.webp", True), ("a_srcnn_1000x800.tif", True),
                                      ("clip_srcnn_x2.mp4", True), ("a_srcnn_x3.txt", False), ("a_x3.png", False),
                                      ("srcnn_x3_photo.png", False)])
def test_outputs_of_every_size_are_known_as_tinysrs_own(name, own):
    from tinysr.image.jobs import is_own_output

    assert is_own_output(Path(name)) == own
