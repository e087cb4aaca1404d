"""The training-curve and filter pictures."""

import json

import numpy as np
from PIL import Image

from tinysr.cli.figures import filter_grid, main
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model


def test_filter_grid_normalises_each_filter():
    w = np.zeros((3, 1, 2, 2))
    w[0, 0] = [[0, 1], [2, 3]]
    w[1, 0] = [[-5, -5], [-5, 5]]
    g = filter_grid(w, cols=2, zoom=1, gap=1)
    assert g.shape == (2 * 3 + 1, 2 * 3 + 1)
    assert g[1, 1] == 0 and g[2, 2] == 255 and g[1, 2] == 85  # filter 0: 0, 1/3, ... of its range
    assert g[2, 5] == 255 and g[1, 4] == 0  # filter 1 at column 1
    assert (g[4:6, 1:3] == 0).all()  # a constant filter is drawn black, not NaN


def test_cli_writes_both_pictures(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "loss": 1.0, "psnr": 30 + e / 10}) + "\n" for e in range(1, 6)))
    assert main(["curve", str(log), str(tmp_path / "c.png"), "--target", "32.39"]) == 0
    assert Image.open(tmp_path / "c.png").size == (640, 400)
    w = save_model(tmp_path / "m.npz", SRCNN(init="he"))
    assert main(["filters", str(w), str(tmp_path / "f.png")]) == 0
    assert Image.open(tmp_path / "f.png").mode == "L"
    (tmp_path / "empty.jsonl").write_text(json.dumps({"epoch": 1, "loss": 1.0}) + "\n")
    assert main(["curve", str(tmp_path / "empty.jsonl"), str(tmp_path / "x.png")]) == 2


def test_compare_crop_panels_are_bicubic_and_srcnn():
    from tinysr.cli.figures import compare_crop
    from tinysr.image.enlarge import enlarge

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, size=(30, 42, 3), dtype=np.uint8)
    model = SRCNN(init="he", seed=1)
    fig = compare_crop(original, model, 3, box=(3, 6, 12, 15), zoom=2)
    assert fig.shape == (12 * 2 + 16, 2 * 15 * 2 + 4, 3)
    assert compare_crop(original, model, 3, box=(3, 6, 12, 15), zoom=2, with_original=True).shape[1] == 3 * 30 + 8
    # the right panel is the SRCNN enlargement's crop, magnified
    from tinysr.protocol.imresize import imresize
    from tinysr.protocol.metrics import to_uint8_matlab

    low = to_uint8_matlab(imresize(original.astype(np.float64) / 255.0, 1 / 3))
    sr, _ = enlarge(low, "RGB", model, 3, bicubic=True)
    assert np.array_equal(fig[16::2, 34::2], sr[3:15, 6:21])
