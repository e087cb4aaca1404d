"""Degradations in the patch maker: ``--degrade jpeg:Q1-Q2[xN]`` (tinysr prepare, train.py)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

import tinysr.protocol.data as data
from tinysr.cli.prepare import main as prepare
from tinysr.cli.train import main as train
from tinysr.image.jpeg_quality import estimate_quality
from tinysr.nn.serialization import read_npz
from tinysr.protocol.color import rgb2y, rgb2ycbcr
from tinysr.protocol.degrade import draw_qualities, jpeg_bytes, jpeg_low_res, parse_degrade
from tinysr.protocol.imresize import imresize

from .train_helpers import train_argv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_dir(tmp_path):
    """Two RGB photos-to-be (smooth with noise) and one grayscale image."""
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    yy, xx = np.mgrid[0:62, 0:71]
    for i, name in enumerate(("a.png", "b.bmp")):
        img = np.stack([128 + 90 * np.sin(xx / (5 + i) + c) * np.cos(yy / 6) for c in range(3)], -1)
        Image.fromarray(np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)).save(d / name)
    Image.fromarray(rng.integers(0, 256, (50, 47), dtype=np.uint8)).save(d / "c.png")
    return d


def test_parse_and_draw():
    assert parse_degrade("jpeg:30-60") == (30, 60, 1)
    assert parse_degrade("jpeg:75") == (75, 75, 1)
    assert parse_degrade("jpeg:10-95x3") == (10, 95, 3)
    for bad in ("jpeg:60-30", "jpeg:0-50", "jpeg:50-101", "png:10-20", "jpeg:10-20x0", "jpeg:10-20x99", "", None):
        with pytest.raises(ValueError):
            parse_degrade(bad)
    q = draw_qualities("jpeg:30-40x2", 5, 7)
    assert q.shape == (2, 7) and q.min() >= 30 and q.max() <= 40
    assert np.array_equal(q, draw_qualities("jpeg:30-40x2", 5, 7))
    assert not np.array_equal(q, draw_qualities("jpeg:30-40x2", 6, 7))


def test_jpeg_low_res_is_the_downscaled_ground_truth_saved_by_pillow():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (37, 44, 3), dtype=np.uint8)
    low = imresize(img[:36, :42], 1 / 3)  # modcrop, then Matlab bicubic on uint8
    assert low.dtype == np.uint8 and low.shape == (12, 14, 3)
    buf = io.BytesIO()
    Image.fromarray(low).save(buf, format="JPEG", quality=40, subsampling=2)
    expected = np.asarray(Image.open(buf))
    assert np.array_equal(jpeg_low_res(img, 3, 40), expected)
    jpg = Image.open(io.BytesIO(jpeg_bytes(img, 3, 40)))
    assert estimate_quality(jpg.quantization) == (40, True)
    assert JpegImagePlugin.get_sampling(jpg) == 2  # 4:2:0
    gray = jpeg_low_res(img[:, :, 0], 2, 90)
    assert gray.shape == (18, 22) and gray.dtype == np.uint8
    with pytest.raises(ValueError, match="quality"):
        jpeg_low_res(img, 3, 0)


def test_degraded_patches_deterministic_labels_unchanged(image_dir):
    clean_in, clean_lab, names = data.make_patches(image_dir, 3)
    a_in, a_lab, _ = data.make_patches(image_dir, 3, degrade="jpeg:20-60", seed=4)
    b_in, b_lab, _ = data.make_patches(image_dir, 3, degrade="jpeg:20-60", seed=4)
    c_in, _, _ = data.make_patches(image_dir, 3, degrade="jpeg:20-60", seed=5)
    assert np.array_equal(a_in, b_in) and np.array_equal(a_lab, b_lab)  # deterministic for a seed
    assert np.array_equal(a_lab, clean_lab)  # labels unchanged
    assert not np.array_equal(a_in, clean_in) and not np.array_equal(a_in, c_in)
    # the first image's first patch, by hand: its Y enlarged from the decoded JPEG at the drawn quality
    q = int(draw_qualities("jpeg:20-60", 4, len(names))[0, 0])
    rgb = np.asarray(Image.open(image_dir / names[0]))
    h, w = rgb.shape[0] - rgb.shape[0] % 3, rgb.shape[1] - rgb.shape[1] % 3
    decoded = jpeg_low_res(rgb, 3, q).astype(np.float64) / 255
    up = imresize(rgb2ycbcr(decoded)[:, :, 0], output_shape=(h, w))
    assert np.array_equal(a_in[0, 0], up[:33, :33].astype(np.float32))
    assert np.array_equal(a_lab[0, 0], (rgb2y(rgb)[6:27, 6:27] / 255).astype(np.float32))
    # copies: every image again, with its own draws; labels repeated
    d_in, d_lab, _ = data.make_patches(image_dir, 3, degrade="jpeg:20-60x2", seed=4)
    n = len(clean_in)
    assert d_in.shape[0] == 2 * n and np.array_equal(d_lab[:n], d_lab[n:]) and np.array_equal(d_in[:n], a_in)
    assert not np.array_equal(d_in[:n], d_in[n:])


def test_cache_records_the_degradation_and_never_mixes(image_dir, tmp_path):
    cache = tmp_path / "p.h5"
    deg, _, _ = data.load_or_build_cache(image_dir, 3, cache, degrade="jpeg:30-50", seed=1)
    with h5py.File(cache, "r") as f:
        assert f.attrs["degrade"] == "jpeg:30-50" and int(f.attrs["degrade_seed"]) == 1
    built = []
    again, _, _ = data.load_or_build_cache(image_dir, 3, cache, degrade="jpeg:30-50", seed=1,
                                           on_build=lambda: built.append(1))
    assert not built and np.array_equal(again, deg)  # reused
    clean, _, _ = data.load_or_build_cache(image_dir, 3, cache, on_build=lambda: built.append(1))
    assert built == [1] and np.array_equal(clean, data.make_patches(image_dir, 3)[0])  # rebuilt clean
    other, _, _ = data.load_or_build_cache(image_dir, 3, cache, degrade="jpeg:30-50", seed=2,
                                           on_build=lambda: built.append(2))
    assert built == [1, 2] and not np.array_equal(other, deg)  # another seed: rebuilt


def test_prepare_degrade_and_bad_spec(image_dir, tmp_path, capsys):
    out = tmp_path / "p.h5"
    assert prepare(["--images", str(image_dir), "--scale", "2", "--out", str(out), "--degrade", "jpeg:40-80x2",
                    "--seed", "3"]) == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["degrade"] == "jpeg:40-80x2" and f["inputs"].shape[0] == 2 * data.make_patches(image_dir, 2)[0].shape[0]
    capsys.readouterr()
    assert prepare(["--images", str(image_dir), "--scale", "2", "--out", str(tmp_path / "q.h5"),
                    "--degrade", "jpeg:80-40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Q1 <= Q2" in err[0]
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--degrade", "gif:3"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--degrade" in r.stderr


def test_train_records_degradation_and_resume_refuses_another(train_folders, tmp_path, capsys):
    out, clean = tmp_path / "run", tmp_path / "clean"
    argv = train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0", "--degrade", "jpeg:30-70")
    assert train(argv) == 0
    assert read_npz(out / "last.npz")["meta"]["recipe"]["degrade"] == "jpeg:30-70"
    caches = sorted((Path(os.environ["XDG_CACHE_HOME"]) / "tinysr" / "patches").glob("*.h5"))  # the shared cache
    assert len(caches) == 1
    with h5py.File(caches[0], "r") as f:
        assert f.attrs["degrade"] == "jpeg:30-70"
    assert train(train_argv(train_folders, clean, "--epochs", "1", "--eval-every", "0")) == 0
    clean_caches = set((Path(os.environ["XDG_CACHE_HOME"]) / "tinysr" / "patches").glob("*.h5")) - set(caches)
    assert len(clean_caches) == 1  # the clean run cut its own patches, never the degraded cache's
    with h5py.File(clean_caches.pop(), "r") as f:
        assert "degrade" not in f.attrs
    assert read_npz(clean / "last.npz")["meta"]["recipe"]["degrade"] is None
    before = (out / "last.npz").read_bytes()
    capsys.readouterr()
    assert train(["--resume", "auto", "--out", str(out), "--epochs", "2", "--degrade", "jpeg:30-71"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--degrade jpeg:30-71 (it has --degrade jpeg:30-70)" in err[0]
    assert (out / "last.npz").read_bytes() == before
    assert train(["--resume", "auto", "--out", str(clean), "--epochs", "2", "--degrade", "jpeg:30-70"]) == 2
    assert "(it has --degrade (default))" in capsys.readouterr().err
    assert train(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 0  # continues with its own
    assert read_npz(out / "last.npz")["state"]["epoch"] == 2
