"""The bicubic baseline under the authors' protocol reproduces the papers' numbers.

Reads Set5/Set14 from the shared data folder (``tinysr.protocol.paths.data_dir``); skips only when a
folder is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tinysr.protocol.evaluation import evaluate_dir, prepare_pair, read_y_uint8, score
from tinysr.protocol.paths import data_dir

# (set, scale) -> (mean PSNR dB, mean SSIM), REFERENCE.md "Bicubic".
EXPECTED = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.23, 0.8687),
    ("Set14", 3): (27.54, 0.7736),
    ("Set14", 4): (26.00, 0.7019),
}
SET5_X3 = {"baby": 33.91, "bird": 32.57, "butterfly": 24.04, "head": 32.88, "woman": 28.56}


def _folder(name):
    d = data_dir(name)
    if not d.is_dir():
        pytest.skip(f"shared data folder {d} is absent")
    return d


@pytest.mark.parametrize("set_name, scale", list(EXPECTED))
def test_bicubic_means(set_name, scale):
    results = evaluate_dir(_folder(set_name), scale)
    assert len(results) == (5 if set_name == "Set5" else 14)
    assert [r["name"] for r in results] == sorted(r["name"] for r in results)
    mean_psnr = float(np.mean([r["psnr"] for r in results]))
    mean_ssim = float(np.mean([r["ssim"] for r in results]))
    exp_psnr, exp_ssim = EXPECTED[(set_name, scale)]
    assert abs(mean_psnr - exp_psnr) <= 0.01, mean_psnr
    assert abs(mean_ssim - exp_ssim) <= 0.0005, mean_ssim


def test_set5_x3_per_image():
    results = evaluate_dir(_folder("Set5"), 3)
    got = {r["name"].split("_")[0]: r["psnr"] for r in results}
    assert set(got) == set(SET5_X3)
    for name, expected in SET5_X3.items():
        assert abs(got[name] - expected) <= 0.01, (name, got[name])


def test_predict_callable_is_used_and_identity_matches_baseline():
    folder = _folder("Set5")
    seen = []

    def identity(y):
        seen.append(y.shape)
        return y.copy()

    base = evaluate_dir(folder, 4)
    same = evaluate_dir(folder, 4, predict=identity)
    assert len(seen) == 5
    assert [r["psnr"] for r in base] == [r["psnr"] for r in same]
    gt_like = evaluate_dir(folder, 4, predict=lambda y: np.zeros_like(y))
    assert all(r["psnr"] < 10 for r in gt_like)


def test_grayscale_bridge_used_as_y():
    path = _folder("Set14") / "bridge.bmp"
    y = read_y_uint8(path)
    with Image.open(path) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(y, np.asarray(im))


def test_prepare_pair_and_score_shapes(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (50, 47), dtype=np.uint8)
    gt, bic = prepare_pair(y, 3)
    assert gt.shape == bic.shape == (48, 45)
    assert gt.dtype == bic.dtype == np.float64
    np.testing.assert_array_equal(gt, y[:48, :45] / 255.0)
    p, s = score(gt, gt, 3)
    assert p == float("inf") and s == pytest.approx(1.0)
    with pytest.raises(ValueError):
        score(gt, bic[:-1], 3)


def test_errors_for_missing_or_empty_dirs_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_dir(tmp_path / "nope", 3)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        evaluate_dir(tmp_path, 3)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.png"):
        read_y_uint8(bad)
    with pytest.raises(OSError, match="broken.png"):
        evaluate_dir(tmp_path, 3)
