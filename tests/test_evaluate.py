"""The authors' weights reproduce the paper under tinysr's protocol; the evaluate CLI."""

import json

import numpy as np
import pytest

from tinysr.cli import evaluate
from tinysr.image.inference import restore_y, tile_spans
from tinysr.nn.model import SRCNN
from tinysr.protocol.evaluation import evaluate_dir
from tinysr.protocol.paths import data_dir, reference_models_dir
from tinysr.weights import load_weights


def _need(path):
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set TINYSR_SHARED)")
    return path


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


# REFERENCE.md, "Official 9-1-5 weights trained on T91" and "Official 9-5-5 weights".
AUTHORS_915 = [("Set5", 2, 36.34), ("Set5", 3, 32.39), ("Set5", 4, 30.08),
               ("Set14", 2, 32.18), ("Set14", 3, 29.00), ("Set14", 4, 27.20)]
AUTHORS_955 = [("Set5", 3, 32.75, 0.9090), ("Set14", 3, 29.29, 0.8215)]


@pytest.mark.parametrize("dataset,scale,psnr", AUTHORS_915)
def test_authors_915_weights_reproduce_the_paper(dataset, scale, psnr, tol_db=0.01):
    weights = _need(reference_models_dir() / "9-1-5_91images" / f"x{scale}.mat")
    model = load_weights(weights)
    rows = evaluate_dir(_need(data_dir(dataset)), scale, lambda y: restore_y(model, y))
    assert abs(_mean(rows, "psnr") - psnr) <= tol_db


@pytest.mark.parametrize("dataset,scale,psnr,ssim", AUTHORS_955)
def test_authors_955_weights_reproduce_the_paper(dataset, scale, psnr, ssim, tol_db=0.01, tol_ssim=5e-4):
    weights = _need(reference_models_dir() / "9-5-5_imagenet" / f"x{scale}.mat")
    model = load_weights(weights)
    rows = evaluate_dir(_need(data_dir(dataset)), scale, lambda y: restore_y(model, y))
    assert abs(_mean(rows, "psnr") - psnr) <= tol_db
    assert abs(_mean(rows, "ssim") - ssim) <= tol_ssim


def test_authors_915_x3_per_image():
    weights = _need(reference_models_dir() / "9-1-5_91images" / "x3.mat")
    model = load_weights(weights)
    rows = evaluate_dir(_need(data_dir("Set5")), 3, lambda y: restore_y(model, y))
    expected = {"baby_GT": 35.01, "bird_GT": 34.90, "butterfly_GT": 27.58, "head_GT": 33.55, "woman_GT": 30.91}
    assert {r["name"]: round(r["psnr"], 2) for r in rows} == expected


def test_zero_padding_is_worse_than_replicate_on_butterfly():
    """REFERENCE.md: zero padding instead of replicate costs about 1.2 dB on butterfly x3."""
    from tinysr.protocol.evaluation import prepare_pair, read_y_uint8, score

    weights = _need(reference_models_dir() / "9-1-5_91images" / "x3.mat")
    model = load_weights(weights, dtype=np.float64)
    gt, bic = prepare_pair(read_y_uint8(_need(data_dir("Set5") / "butterfly_GT.bmp")), 3)
    rep = score(gt, model.forward(bic[None, None], "replicate", train=False)[0, 0], 3)[0]
    zero = score(gt, model.forward(bic[None, None], "zero", train=False)[0, 0], 3)[0]
    assert rep - zero > 0.8


@pytest.mark.parametrize("arch,tile,shape", [("9-5-5", 20, (41, 64)), ("9-3-5", 7, (23, 30)), ("9-5-5", 16, (50, 37))])
def test_tiled_inference_equals_untiled(arch, tile, shape, monkeypatch):
    model = SRCNN.from_arch(arch, n1=8, n2=4, init="he", seed=1, dtype=np.float64)
    y = np.random.default_rng(0).random(shape)
    whole = restore_y(model, y, tile=None)
    pieces = []
    real = model.engine.predict
    monkeypatch.setattr(model.engine, "predict", lambda m, piece: pieces.append(piece.shape) or real(m, piece))
    np.testing.assert_allclose(restore_y(model, y, tile=tile), whole, rtol=0, atol=1e-12)
    assert len(pieces) > 1, "a network run layer by layer should go tile by tile"


def test_9_1_5_on_the_cpu_streams_in_one_piece_whatever_the_tile(monkeypatch):
    """The fused path holds no whole-image activations, so restore_y gives it the whole image."""
    from tinysr.ops import fused_predict

    model = SRCNN.from_arch("9-1-5", n1=8, n2=4, init="he", seed=1, dtype=np.float64)
    y = np.random.default_rng(0).random((50, 37))
    calls = []
    real = fused_predict.predict_fused
    monkeypatch.setattr(fused_predict, "predict_fused", lambda m, piece, engine: calls.append(piece.shape) or real(m, piece, engine))
    got = restore_y(model, y, tile=16)
    assert calls == [(50, 37)]
    np.testing.assert_array_equal(got, real(model, y, model.engine).astype(np.float64))


def test_tile_spans_cover_the_image():
    spans = list(tile_spans(10, 4, 2))
    assert spans == [(0, 4, 0, 6), (4, 8, 2, 10), (8, 10, 6, 10)]
    with pytest.raises(ValueError):
        list(tile_spans(10, 0, 2))


def test_cli_json_schema_and_bicubic_numbers(capsys):
    folder = _need(data_dir("Set5"))
    assert evaluate.main([str(folder), "--scale", "3", "--bicubic", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"dataset", "scale", "method", "mean", "images"}
    assert (res["dataset"], res["scale"], res["method"]) == ("Set5", 3, "bicubic")
    assert abs(res["mean"]["psnr"] - 30.39) <= 0.01 and abs(res["mean"]["ssim"] - 0.8682) <= 5e-4
    assert [r["name"] for r in res["images"]] == ["baby_GT", "bird_GT", "butterfly_GT", "head_GT", "woman_GT"]


def test_cli_npz_weights_and_saved_images(tmp_path, capsys):
    from PIL import Image

    from tinysr.nn.serialization import save_model

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 24, 3), dtype=np.uint8)).save(folder / "a.png")
    w = save_model(tmp_path / "m.npz", SRCNN(n1=4, n2=2, init="he"))
    out = tmp_path / "out"
    argv = [str(folder), "-s", "2", "--weights", str(w), "--save-images", str(out), "--json"]
    assert evaluate.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == "m.npz (9-1-5)" and np.isfinite(res["mean"]["psnr"])
    saved = np.asarray(Image.open(out / "a_x2_srcnn.png"))
    assert saved.shape == (30, 24) and saved.dtype == np.uint8
    assert evaluate.main(argv) == 2  # existing output kept without --overwrite
    assert "exists" in capsys.readouterr().err
    assert evaluate.main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize("argv,match", [
    (["/no/such/folder", "--bicubic"], "not found"),
    (["{empty}", "--bicubic"], "no images"),
    (["{imgs}", "--weights", "/no/such.npz"], "no such weights file"),
    (["{imgs}", "--weights", "{junk}"], "not a readable"),
    (["{imgs}", "--weights", "{txt}"], "unsupported weights format"),
    (["{imgs}", "--bicubic", "--backend", "cupy"], "CuPy|CUDA|GPU"),
    (["{imgs}", "--bicubic", "--tile", "-1"], "--tile"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv, match):
    from PIL import Image

    from tinysr.ops.backend import cupy_available

    if "cupy" in argv and cupy_available():
        pytest.skip("a GPU is usable here, so --backend cupy is not an error")
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    (tmp_path / "w.txt").write_text("x")
    subs = {"{empty}": tmp_path / "empty", "{imgs}": tmp_path / "imgs", "{junk}": tmp_path / "junk.npz",
            "{txt}": tmp_path / "w.txt"}
    argv = [str(subs.get(a, a)) for a in argv]
    assert _exit_status(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tinysr evaluate: error:")
    import re
    assert re.search(match, err)


def _exit_status(argv):
    """``evaluate.main(argv)``'s status, whether returned or raised by argparse as SystemExit."""
    try:
        return evaluate.main(argv)
    except SystemExit as exc:
        return exc.code


def test_save_images_keeps_a_file_made_between_check_and_write(tmp_path, monkeypatch, capsys):
    """Another process creates the saved image after the exists() check: kept, one line, exit 2."""
    from PIL import Image

    folder, out = tmp_path / "set", tmp_path / "saved"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / "a.png")
    target = out / "a_x3_bicubic.png"
    real = evaluate.to_uint8_matlab

    def convert_then_race(x):
        target.write_bytes(b"someone else's")
        return real(x)

    monkeypatch.setattr(evaluate, "to_uint8_matlab", convert_then_race)
    assert evaluate.main([str(folder), "--bicubic", "--save-images", str(out)]) == 2
    assert target.read_bytes() == b"someone else's"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists" in err
    assert [p.name for p in out.iterdir()] == ["a_x3_bicubic.png"]  # no temporary left


def test_ctrl_c_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_dir", interrupted)
    (tmp_path / "set").mkdir()
    try:
        status = evaluate.main([str(tmp_path / "set"), "--bicubic"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped evaluate.main(): a traceback")
    assert status == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err
