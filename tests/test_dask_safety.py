"""The Dask Zarr path loses nothing and fails in one line: ``--overwrite`` replaces only a Zarr array
it wrote (never a folder of photos, never the input, a folder holding it or a path inside it), the
replacement is one atomic exchange (Ctrl-C at any moment leaves the old array or the new one,
complete), a corrupt chunk or a NaN plane is one line naming the input, tiny stored chunks are read
in sensible blocks, Ctrl-C during the start-up is one line, and a local ``--scheduler`` cluster
prints tinysr's line per failing image without Dask's traceback block.

Real Zarr stores on disk, the threaded scheduler in this process, real subprocesses for signals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

da = pytest.importorskip("dask.array", reason="the dask extra (dask[array], distributed, zarr) is not installed")
zarr = pytest.importorskip("zarr", reason="the dask extra is not installed")
pytest.importorskip("distributed", reason="the dask extra is not installed")

import tinysr.distributed.dask as dask_mod  # noqa: E402
from tinysr.cli.dask import main  # noqa: E402
from tinysr.cli.upscale import main as infer_main  # noqa: E402
from tinysr.distributed.dask import (  # noqa: E402
    MARK, PROG, enlarge_dask, enlarge_zarr, read_zarr, restore_zarr, swap_folders)
from tinysr.image.enlarge import enlarge  # noqa: E402
from tinysr.image.inference import restore_y  # noqa: E402
from tinysr.nn.model import SRCNN  # noqa: E402
from tinysr.nn.serialization import save_model  # noqa: E402

MODEL = SRCNN(n1=8, n2=4, init="he", seed=3)


def _image(path: Path, shape=(30, 26, 3), chunks=(16, 16, 3), seed=0) -> np.ndarray:
    px = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    _store(path, px, chunks)
    return px


def _store(path: Path, values: np.ndarray, chunks: tuple) -> None:
    """A Zarr array on disk, written by Zarr in one call (Dask's to_zarr makes a task per chunk)."""
    zarr.open_array(str(path), mode="w", shape=values.shape, chunks=chunks, dtype=values.dtype)[...] = values


def _tree(path: Path) -> dict:
    """Every file below ``path`` with its bytes (to show a folder is untouched)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def weights(tmp_path) -> str:
    return str(save_model(tmp_path / "w.npz", MODEL))


@pytest.fixture
def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# -- what --overwrite may replace ----------------------------------------------------------------

def _photos(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.jpg")
    (folder / "notes.txt").write_text("mine")
    return folder


def _foreign_array(folder: Path) -> Path:
    da.from_array(np.ones((8, 8), np.uint8)).to_zarr(str(folder))  # a Zarr array, not written by tinysr
    return folder


def _own_output_with_a_photo(folder: Path) -> Path:
    _image(folder.parent / "other.zarr")
    enlarge_zarr(MODEL, folder.parent / "other.zarr", folder, 2)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "holiday.jpg")  # the user put it there
    return folder


@pytest.mark.parametrize("make,why", [
    (_photos, "which is not part of a Zarr array"),
    (_foreign_array, "did not write"),
    (lambda p: (p.write_bytes(b"a file"), p)[1], "not a folder"),
    (_own_output_with_a_photo, "'holiday.jpg', which is not part of a Zarr array"),
])
def test_overwrite_never_replaces_what_tinysr_did_not_write(tmp_path, capsys, weights, make, why):
    src = tmp_path / "small.zarr"
    _image(src)
    dst = make(tmp_path / "photos")
    before = _tree(dst) if dst.is_dir() else dst.read_bytes()
    assert main([str(src), str(dst), "-s", "3", "--weights", weights, "--overwrite"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: error: {dst}: not replaced") and why in line
    assert (_tree(dst) if dst.is_dir() else dst.read_bytes()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_symlink_output_is_not_replaced(tmp_path, capsys, weights):
    src = tmp_path / "small.zarr"
    _image(src)
    enlarge_zarr(MODEL, src, tmp_path / "real.zarr", 2)
    (tmp_path / "link.zarr").symlink_to(tmp_path / "real.zarr")
    assert main([str(src), str(tmp_path / "link.zarr"), "--weights", weights, "--overwrite"]) == 2
    assert "symbolic link" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "link.zarr").is_symlink()


@pytest.mark.parametrize("where", ["parent", "grandparent", "inside", "itself", "inside_via_link"])
def test_output_related_to_the_input_is_refused(tmp_path, capsys, weights, where):
    """Never the input, a folder holding it (with --overwrite), or a path inside the input store."""
    src = tmp_path / "data" / "small.zarr"
    src.parent.mkdir()
    _image(src)
    (tmp_path / "data" / "beside.txt").write_text("keep")
    (tmp_path / "link").symlink_to(src)
    dst = {"parent": src.parent, "grandparent": tmp_path, "inside": src / "out.zarr", "itself": src,
           "inside_via_link": tmp_path / "link" / "c" / "out.zarr"}[where]
    before = _tree(tmp_path)
    assert main([str(src), str(dst), "--weights", weights, "--overwrite"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(dst) in line and ("input" in line), line
    assert _tree(tmp_path) == before


def test_overwrite_replaces_its_own_output_and_marks_it(tmp_path, capsys, weights):
    src, dst = tmp_path / "small.zarr", tmp_path / "big.zarr"
    px = _image(src)
    assert main([str(src), str(dst), "-s", "2", "--weights", weights]) == 0
    assert zarr.open_array(str(dst)).attrs[MARK]["scale"] == 2
    assert main([str(src), str(dst), "-s", "3", "--weights", weights]) == 2  # exists: kept
    assert "exists" in _one_line(capsys.readouterr().err)
    assert main([str(src), str(dst), "-s", "3", "--weights", weights, "--overwrite"]) == 0
    got = zarr.open_array(str(dst))
    assert got.attrs[MARK]["scale"] == 3
    np.testing.assert_array_equal(got[:], enlarge(px, "RGB", MODEL, 3)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.zarr", "small.zarr", "w.npz"]


def test_swap_without_renameat2_puts_the_old_array_back_when_interrupted(tmp_path, monkeypatch):
    """Where the file system lacks an atomic exchange: two renames, the first undone when the
    second is interrupted, so the name always holds one complete array."""
    new, old = tmp_path / "new", tmp_path / "old"
    for d, text in ((new, "B"), (old, "A")):
        d.mkdir()
        (d / "x").write_text(text)
    monkeypatch.setattr(dask_mod, "_renameat2", lambda a, b, flags: False)
    swap_folders(new, old)
    assert (old / "x").read_text() == "B" and (new / "x").read_text() == "A"
    calls, rename = [], os.rename

    def interrupted_second(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt
        rename(a, b)

    monkeypatch.setattr(dask_mod.os, "rename", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        swap_folders(new, old)
    monkeypatch.undo()
    assert (old / "x").read_text() == "B" and (new / "x").read_text() == "A"  # as before the call
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]


# -- Ctrl-C while an output is replaced: the old array or the new one, complete --------------------

def _run_interrupted(tmp_path, env, patch: str, weights: str) -> subprocess.CompletedProcess:
    """``python -m tinysr.distributed.dask small.zarr out.zarr -s 3 --overwrite`` with SIGINT sent
    to itself from ``patch`` (code run after the module is imported as ``m``)."""
    code = ("import os, runpy, shutil, signal, sys, time; import tinysr.distributed.dask as m\n"
            "def ctrl_c():\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(30)\n"
            f"{patch}\n"
            f"sys.argv = ['m', 'small.zarr', 'out.zarr', '-s', '3', '--weights', {weights!r}, '--overwrite']\n"
            "runpy.run_module('tinysr.distributed.dask', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)


BEFORE_SWAP = "swap = m.swap_folders\ndef before(a, b):\n    ctrl_c()\nm.swap_folders = before"
AFTER_SWAP = "swap = m.swap_folders\ndef after(a, b):\n    swap(a, b)\n    ctrl_c()\nm.swap_folders = after"
# the old array, now under the temporary's name, half removed when the signal comes
WHILE_REMOVING_OLD = """
rmtree = shutil.rmtree
def partly(path, *args, **kwargs):
    meta = os.path.join(path, 'zarr.json')
    if os.path.exists(meta) and '"scale": 2' in open(meta).read():  # the old array (x2), not the new (x3)
        os.remove(meta)
        ctrl_c()
    rmtree(path, *args, **kwargs)
shutil.rmtree = partly
"""


@pytest.mark.parametrize("patch,kept", [(BEFORE_SWAP, "old"), (AFTER_SWAP, "new"), (WHILE_REMOVING_OLD, "new")],
                         ids=["before_swap", "after_swap", "while_removing_old"])
def test_ctrl_c_while_replacing_leaves_one_complete_array(tmp_path, env, weights, patch, kept):
    px = _image(tmp_path / "small.zarr")
    enlarge_zarr(MODEL, tmp_path / "small.zarr", tmp_path / "out.zarr", 2)
    old = zarr.open_array(str(tmp_path / "out.zarr"))[:]
    r = _run_interrupted(tmp_path, env, patch, weights)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines() == [f"{PROG}: interrupted"]
    got = zarr.open_array(str(tmp_path / "out.zarr"))
    want = old if kept == "old" else enlarge(px, "RGB", MODEL, 3)[0]
    np.testing.assert_array_equal(got[:], want)
    assert got.attrs[MARK]["scale"] == (2 if kept == "old" else 3)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["out.zarr", "small.zarr",
                                                                                         "w.npz"]
    # only the old array, half removed under a temporary's name (which the stale sweep knows), is left
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(left) == (patch == WHILE_REMOVING_OLD) and all(n.startswith(".out.zarr.") and n.endswith(".tmp")
                                                              for n in left), left


def test_ctrl_c_while_computing_the_replacement_keeps_the_old_array(tmp_path, env, weights):
    """A real run, interrupted as soon as its temporary output appears (no hook in the process)."""
    _image(tmp_path / "small.zarr", shape=(96, 80, 3), chunks=(32, 32, 3))
    enlarge_zarr(MODEL, tmp_path / "small.zarr", tmp_path / "out.zarr", 2)
    old = _tree(tmp_path / "out.zarr")
    proc = subprocess.Popen([sys.executable, "-m", "tinysr.distributed.dask", "small.zarr", "out.zarr", "-s", "3",
                             "--weights", weights, "--overwrite", "--chunk", "16"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"{PROG}: interrupted"]
    assert _tree(tmp_path / "out.zarr") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "small.zarr", "w.npz"]


# -- Ctrl-C during the start-up ------------------------------------------------------------------

def test_ctrl_c_during_the_imports_is_one_line(tmp_path, env):
    """SIGINT while `python -m tinysr.distributed.dask` imports NumPy (the first heavy import): one
    line, status 130. Before, the module's own imports ran before any handler was set."""
    code = ("import importlib.abc, os, runpy, signal, sys, time\n"
            "class CtrlC(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'numpy':\n"
            "            sys.meta_path.remove(self)\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "            time.sleep(30)\n"
            "        return None\n"
            "assert 'numpy' not in sys.modules\n"
            "sys.meta_path.insert(0, CtrlC())\n"
            "sys.argv = ['m', 'in.zarr', 'out.zarr']\n"
            "runpy.run_module('tinysr.distributed.dask', run_name='__main__', alter_sys=True)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines() == [f"{PROG}: interrupted"]


# -- bad input: one line naming it ---------------------------------------------------------------

def test_a_corrupt_chunk_is_one_line_naming_the_input(tmp_path, env, weights):
    src = tmp_path / "small.zarr"
    _image(src, chunks=(8, 8, 3))
    (src / "c" / "1" / "2" / "0").write_bytes(b"\x28\xb5\x2f\xfd garbage")  # rows 8..15, columns 16..23
    r = subprocess.run([sys.executable, "-m", "tinysr.distributed.dask", "small.zarr", "out.zarr",
                        "--weights", weights], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2
    line = _one_line(r.stderr)  # nothing else either: no asyncio warnings from Zarr's pending reads
    assert line.startswith(f"{PROG}: error: small.zarr: cannot read the chunk at rows 8..15, columns 16..23")
    assert not (tmp_path / "out.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.zarr", "w.npz"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_y_plane_is_refused(tmp_path, capsys, weights, bad):
    y = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    y[33, 4] = bad
    _store(tmp_path / "y.zarr", y, (16, 16))
    assert main([str(tmp_path / "y.zarr"), str(tmp_path / "out.zarr"), "--weights", weights]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"{PROG}: error: {tmp_path / 'y.zarr'}: NaN or infinite values in rows 0..39")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz", "y.zarr"]


def test_restore_y_dask_refuses_a_non_finite_plane():
    y = np.random.default_rng(0).random((40, 30))
    y[3, 25] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        dask_mod.restore_y_dask(MODEL, da.from_array(y, chunks=(20, 15))).compute(scheduler="synchronous")


# -- tiny stored chunks --------------------------------------------------------------------------

def test_one_pixel_chunks_are_read_in_blocks_with_the_same_result(tmp_path):
    """An image stored in 1-pixel chunks made one task per pixel and took minutes; it is read in
    blocks of whole stored chunks (here the whole image) and enlarged as from ordinary chunks."""
    px = _image(tmp_path / "tiny.zarr", shape=(24, 20, 3), chunks=(1, 1, 3))
    _image(tmp_path / "plain.zarr", shape=(24, 20, 3), chunks=(24, 20, 3))
    lazy = read_zarr(tmp_path / "tiny.zarr")
    assert lazy.numblocks == (1, 1, 1)
    out = enlarge_dask(MODEL, lazy, 3, 48)
    assert len(dict(out.__dask_graph__())) < 100  # a few tasks per output chunk, not per pixel
    enlarge_zarr(MODEL, tmp_path / "tiny.zarr", tmp_path / "a.zarr", 3)
    enlarge_zarr(MODEL, tmp_path / "plain.zarr", tmp_path / "b.zarr", 3)
    a, b = zarr.open_array(str(tmp_path / "a.zarr")), zarr.open_array(str(tmp_path / "b.zarr"))
    assert a.chunks[:2] == (72, 60)  # default: the scale times the read block, not 3 pixels
    np.testing.assert_array_equal(a[:], b[:])
    np.testing.assert_array_equal(a[:], enlarge(px, "RGB", MODEL, 3)[0])

    y = np.random.default_rng(1).random((20, 18)).astype(np.float32)
    _store(tmp_path / "y.zarr", y, (1, 1))
    assert read_zarr(tmp_path / "y.zarr").numblocks == (1, 1)
    restore_zarr(MODEL, tmp_path / "y.zarr", tmp_path / "ry.zarr")
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "ry.zarr"))[:], restore_y(MODEL, y, tile=None),
                               rtol=0, atol=2e-6)


def test_read_blocks_are_whole_stored_chunks():
    from tinysr.distributed.dask import MIN_READ, read_chunks

    assert read_chunks((1, 1, 3), (10_000, 9_000, 3)) == (MIN_READ, MIN_READ, 3)
    assert read_chunks((100, 7, 1), (10_000, 9_000, 3)) == (300, 259, 3)  # multiples of the stored chunks
    assert read_chunks((1, 9_000, 3), (10_000, 9_000, 3)) == (MIN_READ, 9_000, 3)  # row strips
    assert read_chunks((512, 1024), (10_000, 9_000)) == (512, 1024)  # large enough: as stored
    assert read_chunks((1, 1), (5, 4)) == (5, 4)


# -- --scheduler: tinysr's line per failing image, not Dask's traceback as well ------------------

def test_local_scheduler_prints_one_line_per_failing_image(tmp_path, capfd, weights):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    status = infer_main([str(folder), "-o", str(tmp_path / "out"), "--weights", weights, "-s", "2",
                         "--scheduler", "--workers", "1"])
    assert status == 1
    err = capfd.readouterr().err  # the worker processes' stderr too: they write on this one
    lines = err.strip().splitlines()
    assert sorted(lines[:-1]) == sorted([
        f"infer.py: error: {folder / 'broken.png'}: not a readable image (not an image format Pillow knows)",
        f"infer.py: error: {folder / 'empty.jpg'}: not a readable image (an empty file)"]), err
    assert re.fullmatch(r"infer\.py: 1 written, 0 skipped, 2 failed of 3 images in \d+\.\d s", lines[-1]), err
    assert (tmp_path / "out" / "good_srcnn_x2.png").exists()
