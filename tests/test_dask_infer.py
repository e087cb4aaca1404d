"""Dask inference: a chunked image equals ``enlarge`` bit for bit (colour in, colour out), a chunked
Y plane equals the one-piece result, Zarr in and out, many images over a LocalCluster of 2 worker
processes on loopback, and a dying worker neither hangs nor loses results.

Needs the ``dask`` extra (dask[array], distributed, zarr); skips naming what is missing otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

da = pytest.importorskip("dask.array", reason="the dask extra (dask[array], distributed, zarr) is not installed")
distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
zarr = pytest.importorskip("zarr", reason="the dask extra is not installed")

import dask  # noqa: E402

from tinysr.cli.upscale import main as infer_main  # noqa: E402
from tinysr.cli.dask import main as dask_main  # noqa: E402
from tinysr.distributed.dask import enlarge_dask, enlarge_zarr, restore_y_dask, restore_zarr, run_tasks  # noqa: E402
from tinysr.image.enlarge import enlarge  # noqa: E402
from tinysr.image.inference import restore_y  # noqa: E402
from tinysr.nn.model import SRCNN  # noqa: E402
from tinysr.nn.serialization import save_model  # noqa: E402


class _LocalCluster(distributed.LocalCluster):
    """``LocalCluster`` without one race of distributed's ``SpecCluster`` (2026.8.0; see
    dask/distributed#5407): when a restarted worker registers and dies again before the cluster's
    copy of the scheduler's worker list has it, the "remove" message raises ``KeyError`` in the
    cluster's status watcher, and ``close()`` re-raises it. The dying-worker test below provokes
    exactly that. A removal of a worker the cluster never saw is skipped here; it had nothing to
    update."""

    def _update_worker_status(self, op, msg):
        if op == "remove" and msg not in self.scheduler_info.get("workers", {}):
            return
        super()._update_worker_status(op, msg)


@pytest.fixture(scope="module")
def client():
    """2 single-threaded worker processes on 127.0.0.1; a task that kills 2 workers is given up."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = _LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                dashboard_address=None)
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


# Measured differences (GEMMs of another shape round differently): float32 <= 4.2e-7, float64 <= 5.6e-17.
TOL = {np.float32: 2e-6, np.float64: 1e-12}


@pytest.mark.parametrize("arch,dtype", [("9-1-5", np.float32), ("9-5-5", np.float64)])
def test_chunked_plane_equals_one_piece(client, arch, dtype):
    model = SRCNN.from_arch(arch, init="he", seed=2, dtype=dtype)
    y = np.random.default_rng(0).random((157, 203))
    whole = restore_y(model, y, tile=None)
    for chunks in ((40, 50), (17, 100), (64, 203)):  # uneven (last column 3 < halo), thin, full-width
        out = restore_y_dask(model, da.from_array(y, chunks=chunks))
        assert out.shape == y.shape and out.numblocks[0] > 1  # really chunked
        got = out.compute()  # on the cluster's 2 worker processes
        assert got.dtype == dtype
        np.testing.assert_allclose(got, whole, rtol=0, atol=TOL[dtype])


def test_zarr_in_zarr_out_and_cli(client, tmp_path, capsys):
    model = SRCNN(init="he", seed=4)
    y = np.random.default_rng(1).random((90, 68)).astype(np.float32)  # last column chunk 4 < halo 6
    src, dst = tmp_path / "y.zarr", tmp_path / "out.zarr"
    da.from_array(y, chunks=(32, 32)).to_zarr(str(src))
    restore_zarr(model, src, dst, chunk=32)  # by default read whole: blocks of at least MIN_READ pixels
    got = da.from_zarr(str(dst))
    assert got.chunks == ((32, 32, 26), (32, 32, 4))  # written chunk by chunk, as computed
    np.testing.assert_allclose(got.compute(), restore_y(model, y, tile=None), rtol=0, atol=TOL[np.float32])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    w = str(save_model(tmp_path / "w.npz", model))
    assert dask_main([str(src), str(dst), "--weights", w]) == 2  # exists: kept
    assert "exists" in capsys.readouterr().err
    assert dask_main([str(src), str(dst), "--weights", w, "--chunk", "40", "--overwrite"]) == 0
    assert capsys.readouterr().out.strip() == str(dst)
    np.testing.assert_allclose(da.from_zarr(str(dst)).compute(), restore_y(model, y, tile=None), rtol=0,
                               atol=TOL[np.float32])
    assert dask_main([str(tmp_path / "none.zarr"), str(tmp_path / "o2.zarr"), "--weights", w]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such Zarr array" in err


@pytest.mark.parametrize("arch,shape,dtype,kind", [
    ("9-1-5", (37, 53, 3), np.uint8, "RGB"),
    ("9-1-5", (29, 22, 4), np.uint8, "RGBA"),
    ("9-5-5", (23, 31, 2), np.uint8, "LA"),
    ("9-1-5", (26, 19, 1), np.uint16, "L16"),
])
def test_chunked_image_equals_enlarge_bit_for_bit(client, arch, shape, dtype, kind):
    """Each output chunk is one task on the cluster's worker processes, its input window (halo
    included) read from the input's chunks: the result is enlarge's with tile = the chunk edge."""
    model = SRCNN.from_arch(arch, init="he", seed=3)
    px = np.random.default_rng(sum(shape)).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    for chunk in (16, 40):
        want, _ = enlarge(px, kind, model, 3, tile=chunk)
        lazy = enlarge_dask(model, da.from_array(px, chunks=(10, 12, -1)), 3, chunk)
        assert lazy.shape == want.shape and lazy.chunks[0][0] == chunk and lazy.numblocks[0] > 1
        got = lazy.compute()
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    gray = enlarge_dask(model, px[:, :, 0], 2, 16).compute()  # (H, W) is one channel
    np.testing.assert_array_equal(gray, enlarge(px[:, :, :1], "L16" if dtype == np.uint16 else "L", model, 2,
                                                tile=16)[0])


def test_image_zarr_in_zarr_out_and_cli(client, tmp_path, capsys):
    model = SRCNN(init="he", seed=5)
    px = np.random.default_rng(2).integers(0, 256, (45, 38, 3), dtype=np.uint8)
    src, dst = tmp_path / "img.zarr", tmp_path / "big.zarr"
    da.from_array(px, chunks=(16, 16, 3)).to_zarr(str(src))
    enlarge_zarr(model, src, dst, 2, chunk=32)  # by default: 2 x the read block's rows (all 45 here)
    got = da.from_zarr(str(dst))
    assert got.chunks[:2] == ((32, 32, 26), (32, 32, 12)) and got.dtype == np.uint8
    np.testing.assert_array_equal(got.compute(), enlarge(px, "RGB", model, 2, tile=32)[0])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    w = str(save_model(tmp_path / "w.npz", model))
    assert dask_main([str(src), str(dst), "--weights", w, "-s", "2"]) == 2  # exists: kept
    assert "exists" in capsys.readouterr().err
    assert dask_main([str(src), str(dst), "--weights", w, "-s", "3", "--chunk", "40", "--overwrite"]) == 0
    assert capsys.readouterr().out.strip() == str(dst)
    np.testing.assert_array_equal(da.from_zarr(str(dst)).compute(), enlarge(px, "RGB", model, 3, tile=40)[0])
    bad = tmp_path / "bad.zarr"
    da.from_array(np.zeros((8, 8, 5), np.uint8)).to_zarr(str(bad))
    assert dask_main([str(bad), str(tmp_path / "o.zarr"), "--weights", w]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1, 2, 3 or 4 channels" in err and not (tmp_path / "o.zarr").exists()


def _images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (18 + i, 23, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    (folder / "broken.png").write_bytes(b"not a png")
    return paths


def test_infer_scheduler_equals_plain_infer_and_reports_a_bad_image(client, tmp_path, capsys):
    w = str(save_model(tmp_path / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))
    _images(tmp_path / "in")
    plain, spread = tmp_path / "plain", tmp_path / "spread"
    assert infer_main([str(tmp_path / "in"), "-o", str(plain), "--weights", w, "-s", "2"]) == 1
    capsys.readouterr()
    address = client.scheduler.address
    assert infer_main([str(tmp_path / "in"), "-o", str(spread), "--weights", w, "-s", "2",
                       "--scheduler", address]) == 1
    out, err = capsys.readouterr()
    assert sorted(Path(line).name for line in out.split()) == [f"im{i}_srcnn_x2.png" for i in range(3)]
    errors = [line for line in err.splitlines() if line.startswith("infer.py: error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "infer.py: 3 written, 0 skipped, 1 failed of 4 images in " in err  # the batch summary, as without Dask
    # Dask's workers run one BLAS thread; this process may run several, and OpenBLAS's float32
    # sums then round differently, which can move a pixel sitting at x.5 by one grey level.
    for i in range(3):
        name = f"im{i}_srcnn_x2.png"
        a = np.asarray(Image.open(spread / name)).astype(int)
        b = np.asarray(Image.open(plain / name)).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1 and np.mean(a != b) <= 1e-3, name


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tinysr.distributed.dask.CONNECT_TIMEOUT", "1s")
    w = str(save_model(tmp_path / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))
    src = _images(tmp_path / "in", 1)[0]
    assert infer_main([str(src), "-o", str(tmp_path / "o"), "--weights", w, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the Dask scheduler" in err
    assert infer_main([str(src), str(src), "-o", str(tmp_path / "o"), "--weights", w, "--scheduler", str(src)]) == 2
    err = capsys.readouterr().err.strip()  # an input taken as the ADDRESS (nargs='?'): said so
    assert len(err.splitlines()) == 1 and "is not a scheduler address" in err


def test_dying_worker_is_retried_and_other_results_are_kept(client, tmp_path):
    """'b' kills its worker the first time: rerun elsewhere, it succeeds and 'a', 'd' are kept.
    'c' kills every worker it runs on: given up after allowed-failures (1 here) and reported."""

    def task(item, marker_dir):
        marker = Path(marker_dir) / item
        if item == "c" or (item == "b" and not marker.exists()):
            marker.touch()
            os._exit(1)  # the worker process dies mid-task
        return item.upper()

    seen = []
    results, errors = run_tasks(client, task, ["a", "b", "d"], str(tmp_path),
                                report=lambda item, res, err: seen.append(item))
    assert results == {"a": "A", "b": "B", "d": "D"} and errors == {} and sorted(seen) == ["a", "b", "d"]
    assert (tmp_path / "b").exists()  # it did die once
    results, errors = run_tasks(client, task, ["c"], str(tmp_path))
    assert results == {} and list(errors) == ["c"] and "worker running it died" in errors["c"]
    client.wait_for_workers(2, timeout=60)  # the nannies' restarts done before the cluster is closed


def test_stale_zarr_temporaries_are_removed(tmp_path):
    """A temporary output folder left by a killed run (its writer gone) is removed by the next
    run's restore_zarr; one whose writer still runs, and others' files, are kept."""
    from tinysr.distributed.dask import remove_stale_folders

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dst = tmp_path / "out.zarr"
    from tinysr.atomic import temporary_name  # noqa: PLC0415

    stale = temporary_name(dst, pid=p.pid)
    live = temporary_name(dst)
    other = temporary_name(tmp_path / "other.zarr", pid=p.pid)
    for d in (stale, live, other):
        (d / "0.0").mkdir(parents=True)
    assert remove_stale_folders(dst) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    (stale / "0.0").mkdir(parents=True)
    model = SRCNN(n1=4, n2=2, init="he", seed=0)
    y = np.random.default_rng(1).random((20, 16)).astype(np.float32)
    da.from_array(y, chunks=(20, 16)).to_zarr(str(tmp_path / "y.zarr"))
    with dask.config.set(scheduler="synchronous"):
        restore_zarr(model, tmp_path / "y.zarr", dst)
    assert not stale.exists() and dst.is_dir()


def test_cli_interrupted_is_one_line_and_status_130(tmp_path):
    """Ctrl-C while `python -m tinysr.distributed.dask` works: one line, status 130, no traceback."""
    code = ("import os, runpy, signal, time; import tinysr.distributed.dask as m\n"
            "def busy(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(30)\n"
            "m._check_paths = busy\n"
            "import sys; sys.argv = ['m', 'in.zarr', 'out.zarr']\n"
            "runpy.run_module('tinysr.distributed.dask', run_name='__main__')\n")
    # -W: runpy warns that the hook imported the module before running it as __main__
    r = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines() == ["python -m tinysr.distributed.dask: interrupted"]
    assert not (tmp_path / "out.zarr").exists()
