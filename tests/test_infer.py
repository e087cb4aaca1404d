"""infer.py: real enlargement of colour/gray/alpha images, safe outputs, one-line errors."""

import numpy as np
import pytest
from PIL import Image

from tinysr.cli.upscale import main
from tests.reference_pipeline import super_resolve
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model

from .test_progress import written


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _img(path, mode, size=(20, 14)):
    rng = np.random.default_rng(1)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("scale", [2, 3])
def test_output_size_and_mode(tmp_path, weights, capsys, mode, scale):
    src = _img(tmp_path / "in.png", mode)
    assert main([str(src), "-o", str(tmp_path / "out"), "-s", str(scale), "--weights", weights]) == 0
    out = tmp_path / "out" / f"in_srcnn_x{scale}.png"
    assert written(capsys.readouterr().out) == [(1, 1, str(out))]
    im = Image.open(out)
    assert im.size == (20 * scale, 14 * scale) and im.mode == mode


def test_16bit_grayscale_png_stays_16bit(tmp_path, weights):
    src = tmp_path / "deep.png"
    arr = (np.random.default_rng(3).random((10, 12)) * 65535).astype(np.uint16)
    Image.fromarray(arr).save(src)
    assert Image.open(src).mode.startswith("I;16")
    assert main([str(src), "-o", str(tmp_path / "o"), "-s", "2", "--weights", weights]) == 0
    out = Image.open(tmp_path / "o" / "deep_srcnn_x2.png")
    assert out.size == (24, 20) and out.mode == "I;16"
    assert np.asarray(out).max() > 255  # real 16-bit values, not 8-bit ones widened


def test_output_folder_that_cannot_be_made(tmp_path, weights, capsys):
    src = _img(tmp_path / "in.png", "RGB")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert main([str(src), "-o", str(blocker / "sub"), "--weights", weights]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("infer.py: error:")
    assert blocker.read_text() == "a file, not a folder"


def test_colour_path_is_bicubic_chroma_plus_network_luma(tmp_path):
    """With a network that returns its input (identity), the result equals Matlab-bicubic RGB."""
    from tinysr.protocol.imresize import imresize

    m = SRCNN(f1=3, f2=1, f3=3, n1=1, n2=1, dtype=np.float64)
    p = {k: np.zeros_like(v) for k, v in m.params.items()}
    p["conv1.weight"][0, 0, 1, 1] = 1.0  # ReLU passes the non-negative Y through
    p["conv2.weight"][0, 0, 0, 0] = 1.0
    p["conv3.weight"][0, 0, 1, 1] = 1.0
    m.set_params(p)
    img = np.random.default_rng(2).random((9, 7, 3))
    sr, bic = super_resolve(img, "RGB", m, 3)
    np.testing.assert_allclose(sr, bic, atol=1e-12)
    np.testing.assert_allclose(bic, np.clip(imresize(img, 3.0), 0, 1), atol=1e-9)


def test_compare_tiny_image_and_folder(tmp_path, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    _img(folder / "a.png", "RGB", (1, 1))
    _img(folder / "b.bmp", "L", (5, 3))
    (folder / "notes.txt").write_text("not an image")
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights, "--compare"]) == 0
    assert Image.open(tmp_path / "o" / "a_srcnn_x3.png").size == (3, 3)
    assert Image.open(tmp_path / "o" / "b_compare_x3.png").size == (30, 9)


def test_existing_output_kept_unless_overwrite(tmp_path, weights, capsys):
    src = _img(tmp_path / "in.png", "RGB")
    out = tmp_path / "o"
    out.mkdir()
    (out / "in_srcnn_x3.png").write_bytes(b"precious")
    assert main([str(src), "-o", str(out), "--weights", weights]) == 1
    assert (out / "in_srcnn_x3.png").read_bytes() == b"precious"
    assert "exists" in capsys.readouterr().err
    assert main([str(src), "-o", str(out), "--weights", weights, "--overwrite"]) == 0
    assert Image.open(out / "in_srcnn_x3.png").size == (60, 42)


def test_output_equal_to_input_is_refused(tmp_path, weights, capsys):
    """Output names add a suffix, so only a link can make the output the input itself."""
    src = _img(tmp_path / "in.png", "RGB")
    before = src.read_bytes()
    out = tmp_path / "o"
    out.mkdir()
    (out / "in_srcnn_x3.png").symlink_to(src)
    assert main([str(src), "-o", str(out), "--weights", weights, "--overwrite"]) == 1
    assert src.read_bytes() == before
    assert "overwrite its input" in capsys.readouterr().err


def test_one_bad_image_among_many(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _img(folder / "good.png", "RGB")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights]) == 1
    err = capsys.readouterr().err
    assert "bad.png: not a readable image" in err and err.splitlines()[-1].startswith("infer.py: 1 written, 0 skipped, 1 failed of 2 images in ")
    assert (tmp_path / "o" / "good_srcnn_x3.png").is_file()


def test_missing_bundled_weights_is_one_line(tmp_path, monkeypatch, capsys):
    """An install whose package lost its weight files: one line naming the way out, exit 2."""
    import tinysr.weights

    (tmp_path / "noweights").mkdir()
    monkeypatch.setattr(tinysr.weights, "BUNDLED_DIR", tmp_path / "noweights")
    assert _exit_status([str(_img(tmp_path / "i.png", "RGB")), "-s", "2", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no bundled weights for scale 2" in err and "--weights" in err
    assert not (tmp_path / "o" / "i_srcnn_x2.png").exists()


@pytest.mark.parametrize("argv,match", [
    (["/no/such.png", "--weights", "{w}"], "no such file"),
    (["{empty}", "--weights", "{w}"], "no images"),
    (["{img}", "--weights", "/no/w.npz"], "no such weights file"),
    (["{img}", "--weights", "{w}", "--tile", "-3"], "--tile"),
    (["{img}", "--weights", "{w}", "--threads", "0"], "--threads"),
    (["{img}", "--weights", "{w}", "--threads", "-1"], "--threads: must be >= 1, got -1"),
    (["{img}", "--weights", "{w}", "--threads", "2", "--scheduler"], "--threads .*--scheduler"),
    (["{img}", "-s", "0.5", "--weights", "{w}"], "-s/--scale: must be a number greater than 1"),
    (["{img}", "--weights", "{w}", "--backend", "cupy"], "CuPy|CUDA"),
])
def test_argument_errors_exit_2_one_line(tmp_path, weights, capsys, argv, match):
    from tinysr.ops.backend import cupy_available

    if "cupy" in argv and cupy_available():
        pytest.skip("a GPU is usable here")
    (tmp_path / "empty").mkdir()
    subs = {"{w}": weights, "{empty}": str(tmp_path / "empty"), "{img}": str(_img(tmp_path / "i.png", "RGB"))}
    assert _exit_status([subs.get(a, a) for a in argv] + ["-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    import re
    assert len(err.splitlines()) == 1 and re.search(match, err)


def test_threads_do_not_change_the_output(tmp_path, weights):
    """240x180 output at x2: about a dozen blocks of the fused path, so 1 and 3 threads split
    them differently; the PNG bytes must be the same."""
    src = _img(tmp_path / "in.png", "RGB", size=(120, 90))
    written = []
    for threads in ("1", "3"):
        out = tmp_path / f"t{threads}"
        assert main([str(src), "-o", str(out), "-s", "2", "--weights", weights, "--threads", threads]) == 0
        written.append((out / "in_srcnn_x2.png").read_bytes())
    assert written[0] == written[1]


def _exit_status(argv):
    """``main(argv)``'s status, whether returned or raised by argparse as SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code
