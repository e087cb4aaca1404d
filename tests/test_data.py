"""Training-pair extraction (generate_train.m) and its HDF5 cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import tinysr.protocol.data as data
from tinysr.protocol.color import rgb2y
from tinysr.protocol.imresize import imresize
from tinysr.protocol.paths import data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_dir(tmp_path):
    """Three small synthetic images: two RGB (bmp, png), one grayscale."""
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(rng.integers(0, 256, (61, 50, 3), dtype=np.uint8)).save(d / "b.bmp")
    Image.fromarray(rng.integers(0, 256, (47, 75, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(d / "c.bmp")
    (d / "readme.txt").write_text("not an image")
    return d


def _reference_patches(folder, scale, isz=33, lsz=21, stride=14):
    """Plain-loop transcription of generate_train.m (0-based)."""
    ins, labs = [], []
    for p in sorted(Path(folder).iterdir(), key=lambda q: q.name):
        if p.suffix.lower() not in (".bmp", ".png"):
            continue
        a = np.asarray(Image.open(p))
        y = rgb2y(a) if a.ndim == 3 else a
        im = y.astype(np.float64) / 255
        h, w = im.shape[0] - im.shape[0] % scale, im.shape[1] - im.shape[1] % scale
        label = im[:h, :w]
        inp = imresize(imresize(label, 1 / scale), output_shape=(h, w))
        pad = (isz - lsz) // 2
        for x in range(0, h - isz + 1, stride):
            for yy in range(0, w - isz + 1, stride):
                ins.append(inp[x : x + isz, yy : yy + isz])
                labs.append(label[x + pad : x + pad + lsz, yy + pad : yy + pad + lsz])
    return np.array(ins, dtype=np.float32)[:, None], np.array(labs, dtype=np.float32)[:, None]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_t91_patch_counts(scale):
    folder = data_dir("T91")
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent")
    inputs, labels, sources = data.make_patches(folder, scale)
    expected = {2: 21910, 3: 21884, 4: 21772}[scale]
    assert inputs.shape == (expected, 1, 33, 33)
    assert labels.shape == (expected, 1, 21, 21)
    assert inputs.dtype == labels.dtype == np.float32
    assert len(sources) == 91 and sources == sorted(sources)
    assert 0.0 <= labels.min() and labels.max() <= 1.0


@pytest.mark.parametrize("scale", [2, 3])
def test_patch_geometry_matches_loop_reference(image_dir, scale):
    inputs, labels, sources = data.make_patches(image_dir, scale)
    ref_in, ref_lab = _reference_patches(image_dir, scale)
    assert sources == ["a.png", "b.bmp", "c.bmp"]
    assert inputs.shape == ref_in.shape and labels.shape == ref_lab.shape
    assert len(inputs) > 4
    np.testing.assert_array_equal(inputs, ref_in)
    np.testing.assert_array_equal(labels, ref_lab)
    # The label is the centre of the ground truth, i.e. close to the input's centre.
    assert np.mean(np.abs(inputs[:, :, 6:27, 6:27] - labels)) < 0.5


def test_other_geometry_and_errors(image_dir):
    inputs, labels, _ = data.make_patches(image_dir, 2, input_size=20, label_size=10, stride=7)
    ref_in, ref_lab = _reference_patches(image_dir, 2, 20, 10, 7)
    np.testing.assert_array_equal(inputs, ref_in)
    np.testing.assert_array_equal(labels, ref_lab)
    with pytest.raises(ValueError):
        data.make_patches(image_dir, 3, input_size=33, label_size=20)
    with pytest.raises(ValueError, match="no 100x100 patch"):
        data.make_patches(image_dir, 3, input_size=100, label_size=90)


@pytest.fixture
def count_builds(monkeypatch):
    calls = []
    real = data.make_patches

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "make_patches", counting)
    return calls


def test_cache_reused_when_unchanged(image_dir, tmp_path, count_builds):
    cache = tmp_path / "cache" / "train_x3.h5"
    i1, l1, s1 = data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 1 and cache.is_file()
    i2, l2, s2 = data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 1  # reused
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(l1, l2)
    assert s1 == s2 == ["a.png", "b.bmp", "c.bmp"]
    with h5py.File(cache, "r") as f:
        assert f.attrs["scale"] == 3 and f.attrs["stride"] == 14
        assert f.attrs["input_size"] == 33 and f.attrs["label_size"] == 21
        assert f.attrs["colour_conversion"] == "matlab rgb2ycbcr BT.601 Y"
        assert f.attrs["resize_method"] == "matlab imresize bicubic"
        assert f.attrs["format_version"] == data.FORMAT_VERSION
        assert list(f.attrs["sources"]) == s1
        assert f.attrs["sources_sha256"] == data.source_hash(image_dir)[0]
        assert f["inputs"].shape == i1.shape
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_cache_rebuilt_when_source_changes(image_dir, tmp_path, count_builds):
    cache = tmp_path / "c.h5"
    i1, _, _ = data.load_or_build_cache(image_dir, 3, cache)
    img = np.asarray(Image.open(image_dir / "b.bmp")).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(image_dir / "b.bmp")
    i2, _, _ = data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 2
    assert not np.array_equal(i1, i2)
    # Renaming a file (same bytes) also changes the source list and hash.
    (image_dir / "c.bmp").rename(image_dir / "d.bmp")
    _, _, s3 = data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 3 and s3 == ["a.png", "b.bmp", "d.bmp"]
    # Adding an image changes it too.
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(image_dir / "e.bmp")
    data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 4


@pytest.mark.parametrize(
    "kwargs", [dict(scale=2), dict(stride=10), dict(input_size=31, label_size=19), dict(label_size=17)]
)
def test_cache_rebuilt_when_parameters_change(image_dir, tmp_path, count_builds, kwargs):
    cache = tmp_path / "c.h5"
    data.load_or_build_cache(image_dir, 3, cache)
    args = dict(scale=3, input_size=33, label_size=21, stride=14) | kwargs
    inputs, labels, _ = data.load_or_build_cache(image_dir, args.pop("scale"), cache, **args)
    assert len(count_builds) == 2
    assert inputs.shape[2] == args["input_size"] and labels.shape[2] == args["label_size"]
    data.load_or_build_cache(image_dir, kwargs.get("scale", 3), cache, **args)
    assert len(count_builds) == 2  # the rebuilt cache is then reused


def test_truncated_or_emptied_cache_is_rebuilt(image_dir, tmp_path, count_builds):
    cache = tmp_path / "c.h5"
    good_in, good_lab, _ = data.load_or_build_cache(image_dir, 3, cache)
    raw = cache.read_bytes()
    damaged = [raw[: len(raw) // 2], b""]  # cut short (still recognisable as a tinysr cache), or empty
    for n, content in enumerate(damaged, start=2):
        cache.write_bytes(content)
        inputs, labels, _ = data.load_or_build_cache(image_dir, 3, cache)
        assert len(count_builds) == n
        np.testing.assert_array_equal(inputs, good_in)
        np.testing.assert_array_equal(labels, good_lab)
        with h5py.File(cache, "r") as f:  # the rebuilt file is whole again
            assert f["inputs"].shape == good_in.shape


@pytest.mark.parametrize("kind", ["hdf5-header-only", "garbage", "png", "checkpoint", "other-hdf5"])
def test_a_file_that_is_not_a_patch_cache_is_never_replaced(image_dir, tmp_path, count_builds, kind):
    """Only a tinysr patch cache may be rebuilt: anything else at the cache path is refused
    (a ValueError naming it), untouched, before any work. (Before, it was overwritten.)"""
    cache = tmp_path / "c.h5"
    if kind == "hdf5-header-only":  # the first 100 bytes of a cache: nothing says it is ours
        data.load_or_build_cache(image_dir, 3, tmp_path / "real.h5")
        cache.write_bytes((tmp_path / "real.h5").read_bytes()[:100])
    elif kind == "garbage":
        cache.write_bytes(b"garbage" * 100)
    elif kind == "png":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(cache, format="PNG")
    elif kind == "checkpoint":
        with open(cache, "wb") as f:  # np.savez would add ".npz" to a name
            np.savez(f, w=np.ones(3))
    else:
        with h5py.File(cache, "w") as f:
            f.create_dataset("inputs", data=np.zeros((2, 1, 33, 33), np.float32))
            f.attrs["scale"] = 3
    before = cache.read_bytes()
    builds = len(count_builds)
    with pytest.raises(ValueError, match="c.h5: exists and is not a tinysr patch cache"):
        data.load_or_build_cache(image_dir, 3, cache)
    assert cache.read_bytes() == before and len(count_builds) == builds
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_prepare_refuses_to_replace_a_photo(image_dir, tmp_path):
    photo = tmp_path / "holiday.png"
    Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(photo)
    before = photo.read_bytes()
    r = _cli("prepare", "--images", str(image_dir), "--scale", "3", "--out", str(photo))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "holiday.png" in lines[0] and "not a tinysr patch cache" in lines[0], r.stderr
    assert photo.read_bytes() == before


def test_stale_cache_temporaries_are_removed_and_live_ones_kept(image_dir, tmp_path):
    """A build killed with kill -9 leaves its up-to-128 MB temporary; the next build removes it
    (its writer is gone), but not one a running process is writing, nor another file's."""
    import os

    from tinysr.atomic import temporary_name

    cache = tmp_path / "c.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = temporary_name(cache, ".tmp", pid=dead_pid)
    live = temporary_name(cache, ".tmp")  # this (living) process's
    other = temporary_name(tmp_path / "d.h5", ".tmp", pid=dead_pid)
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    data.load_or_build_cache(image_dir, 3, cache)
    assert not stale.exists() and live.exists() and other.exists()
    assert f".{os.getpid()}." in live.name


def test_tampered_cache_is_rebuilt(image_dir, tmp_path, count_builds):
    cache = tmp_path / "c.h5"
    good_in, _, _ = data.load_or_build_cache(image_dir, 3, cache)
    with h5py.File(cache, "a") as f:  # wrong dataset shape, consistent-looking attributes
        del f["inputs"]
        f.create_dataset("inputs", data=good_in[:-1])
    data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 2
    with h5py.File(cache, "a") as f:
        f.attrs["resize_method"] = "pillow bicubic"
    data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 3
    with h5py.File(cache, "a") as f:
        f.attrs["format_version"] = data.FORMAT_VERSION + 1
    data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 4
    data.load_or_build_cache(image_dir, 3, cache)
    assert len(count_builds) == 4


def _cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "tinysr.protocol.data", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_prepare_ok(image_dir, tmp_path):
    out = tmp_path / "out.h5"
    r = _cli("prepare", "--images", str(image_dir), "--scale", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    n = len(data.make_patches(image_dir, 3)[0])
    assert str(n) in r.stdout and str(out) in r.stdout
    with h5py.File(out, "r") as f:
        assert f["inputs"].shape[0] == n


@pytest.mark.parametrize(
    "args",
    [
        ["prepare", "--images", "{missing}", "--scale", "3", "--out", "{out}"],
        ["prepare", "--images", "{empty}", "--scale", "3", "--out", "{out}"],
        ["prepare", "--images", "{imgs}", "--scale", "0", "--out", "{out}"],
        ["prepare", "--images", "{imgs}", "--scale", "three", "--out", "{out}"],
        ["prepare", "--images", "{imgs}", "--out", "{out}"],
        ["frobnicate"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(image_dir, tmp_path, args):
    (tmp_path / "empty").mkdir()
    fill = dict(missing=tmp_path / "missing", empty=tmp_path / "empty", imgs=image_dir, out=tmp_path / "o.h5")
    r = _cli(*[a.format(**fill) for a in args])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("module,argv,prog", [
    ("tinysr.cli.prepare", [], "python -m tinysr.cli.prepare"),
    ("tinysr.protocol.data", ["prepare"], "python -m tinysr.protocol.data prepare"),
])
def test_cli_prepare_interrupted_is_one_line_and_status_130(tmp_path, module, argv, prog):
    """Ctrl-C while the patches are cut: one line naming the program, status 130, no traceback."""
    code = ("import os, runpy, signal, sys, time; import tinysr.protocol.data as d\n"
            "def cut(*args, check, **kwargs):\n    os.kill(os.getpid(), signal.SIGINT)\n"
            "    for _ in range(600):\n        check()\n        time.sleep(0.05)\n"
            "d.load_or_build_cache = cut\n"
            f"sys.argv = ['{module}', *{argv!r}, '--images', 'imgs', '--scale', '3', '--out', 'o.h5']\n"
            f"runpy.run_module('{module}', run_name='__main__')\n")
    # -W: runpy warns that the hook imported tinysr.protocol.data before running it as __main__
    r = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines() == [f"{prog}: interrupted"]
    assert not (tmp_path / "o.h5").exists()
