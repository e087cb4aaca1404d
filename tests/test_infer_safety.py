"""infer.py never loses a user's image: stale temporaries, racing writers, clashing names,
huge images, signals, a closed stdout, FIFOs (tinysr issue #16, output side)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinysr.cli.upscale
import tinysr.image.jobs
from tinysr.atomic import temporary_name
from tinysr.cli.upscale import main
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model

from .test_progress import written

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _img(path, size=(20, 14), seed=1):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _one_line_errors(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert all(line.startswith("infer.py: ") for line in lines), err  # no traceback, nothing else
    return lines


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _huge_png(path, w=100_000, h=100_000):
    """A PNG whose header says w x h RGB and which holds no pixel data: only the header is ever read."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


# -- 7. temporaries left by a killed run -------------------------------------------------------------

def test_stale_temporaries_of_outputs_are_removed(tmp_path, weights):
    out = tmp_path / "o"
    out.mkdir()
    dead = _dead_pid()
    stale = temporary_name(out / "in_srcnn_x3.png", pid=dead)  # as kill -9 leaves it
    stale_other_scale = temporary_name(out / "in_srcnn_x2.png", pid=dead)
    live = temporary_name(out / "in_srcnn_x4.png")  # its writer runs: kept
    not_ours = temporary_name(out / "notes.txt", pid=dead)  # another tool's: kept
    for p in (stale, stale_other_scale, live, not_ours):
        p.write_bytes(b"half a png")
    assert main([str(_img(tmp_path / "in.png")), "-o", str(out), "--weights", weights]) == 0
    assert not stale.exists() and not stale_other_scale.exists()
    assert live.exists() and not_ours.exists()


# -- 8. two writers, one name --------------------------------------------------------------------------

def test_file_appearing_before_the_write_is_kept(tmp_path, weights, monkeypatch, capsys):
    """Another process creates the output after the exists() check, before the rename: it is kept."""
    out = tmp_path / "o"
    target = out / "in_srcnn_x3.png"
    real_enlarge = tinysr.image.jobs.enlarge

    def enlarge_then_race(*args, **kwargs):
        result = real_enlarge(*args, **kwargs)
        target.write_bytes(b"the other process's result")
        return result

    monkeypatch.setattr(tinysr.image.jobs, "enlarge", enlarge_then_race)
    assert main([str(_img(tmp_path / "in.png")), "-o", str(out), "--weights", weights]) == 1
    assert target.read_bytes() == b"the other process's result"
    out_text, err = capsys.readouterr()
    assert out_text == ""  # not reported as written
    lines = _one_line_errors(err)
    assert "exists" in lines[0] and str(target) in lines[0]
    assert [p.name for p in out.iterdir()] == ["in_srcnn_x3.png"]  # no temporary left


def test_two_real_processes_exactly_one_wins(tmp_path, weights):
    src = _img(tmp_path / "in.png", size=(60, 40))
    out = tmp_path / "o"
    cmd = [sys.executable, str(ROOT / "infer.py"), str(src), "-o", str(out), "--weights", weights, "--threads", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(r[0] for r in results) == [0, 1], results
    loser = next(r for r in results if r[0] == 1)
    assert "exists" in loser[2] and "Traceback" not in loser[2]
    assert Image.open(out / "in_srcnn_x3.png").size == (180, 120)
    assert [p.name for p in out.iterdir()] == ["in_srcnn_x3.png"]


# -- 9. names that clash within one run ---------------------------------------------------------------

def test_same_stem_inputs_get_distinct_outputs(tmp_path, weights, capsys):
    a = _img(tmp_path / "baboon.png", seed=1)
    b = tmp_path / "baboon.jpg"
    Image.open(_img(tmp_path / "tmp.png", seed=2)).save(b, quality=95)
    out = tmp_path / "o"
    assert main([str(a), str(b), "-o", str(out), "--weights", weights]) == 0
    printed = [p for _, _, p in written(capsys.readouterr().out)]
    assert sorted(Path(p).name for p in printed) == ["baboon_jpg_srcnn_x3.png", "baboon_png_srcnn_x3.png"]
    assert not np.array_equal(np.asarray(Image.open(out / "baboon_jpg_srcnn_x3.png")),
                              np.asarray(Image.open(out / "baboon_png_srcnn_x3.png")))


def test_same_name_in_two_folders_is_refused_naming_both(tmp_path, weights, capsys):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        _img(tmp_path / d / "a.png")
    out = tmp_path / "o"
    assert main([str(tmp_path / "x"), str(tmp_path / "y"), "-o", str(out), "--weights", weights, "--overwrite"]) == 1
    lines = _one_line_errors(capsys.readouterr().err)
    refusal = [line for line in lines if "would both be written" in line]
    assert len(refusal) == 1 and str(tmp_path / "x" / "a.png") in refusal[0] and str(tmp_path / "y" / "a.png") in refusal[0]
    assert [p.name for p in out.iterdir()] == ["a_srcnn_x3.png"]  # the first one, once


def test_overwrite_never_replaces_an_input_of_the_run(tmp_path, weights, capsys):
    src = _img(tmp_path / "in.png", seed=1)
    also_input = _img(tmp_path / "in_srcnn_x3.png", seed=2)  # an earlier output, enlarged again now
    before = also_input.read_bytes()
    assert main([str(src), str(also_input), "-o", str(tmp_path), "--weights", weights, "--overwrite"]) == 1
    assert also_input.read_bytes() == before
    lines = _one_line_errors(capsys.readouterr().err)
    assert any("overwrite its input" in line and "in_srcnn_x3.png" in line for line in lines)
    assert (tmp_path / "in_srcnn_x3_srcnn_x3.png").is_file()  # the other input went on


def test_dangling_symlink_at_the_output_counts_as_existing(tmp_path, weights, capsys):
    out = tmp_path / "o"
    out.mkdir()
    link = out / "in_srcnn_x3.png"
    link.symlink_to(tmp_path / "nowhere.png")
    assert main([str(_img(tmp_path / "in.png")), "-o", str(out), "--weights", weights]) == 1
    assert link.is_symlink() and not (tmp_path / "nowhere.png").exists()
    assert "exists" in capsys.readouterr().err


# -- 10. image size ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pillow_limit", [50, 200])  # 280 pixels: over twice (error), over once (warning)
def test_pillows_bomb_limit_does_not_apply(tmp_path, weights, monkeypatch, capsys, pillow_limit):
    """An image over Pillow's decompression-bomb limit (set tiny here) is enlarged, silently."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([str(_img(tmp_path / "in.png")), "-o", str(tmp_path / "o"), "--weights", weights]) == 0
    assert capsys.readouterr().err == ""
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's setting restored for everyone else


def test_max_pixels_refuses_one_image_and_the_others_go_on(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _img(folder / "big.png", size=(20, 14))
    _img(folder / "small.png", size=(10, 10))
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights, "--max-pixels", "200"]) == 1
    lines = _one_line_errors(capsys.readouterr().err)
    assert len(lines) == 2 and "big.png: 20x14" in lines[0] and "--max-pixels" in lines[0]
    assert (tmp_path / "o" / "small_srcnn_x3.png").is_file()
    assert not (tmp_path / "o" / "big_srcnn_x3.png").exists()


def test_huge_header_refused_by_default_before_decoding(tmp_path, weights, capsys, monkeypatch):
    """10 Gpixel declared: over what a 64 GiB machine holds at x3; refused from the header."""
    monkeypatch.setattr("tinysr.image.io.physical_memory", lambda: 64 << 30)
    big = _huge_png(tmp_path / "bomb.png")
    good = _img(tmp_path / "good.png")
    assert main([str(big), str(good), "-o", str(tmp_path / "o"), "--weights", weights]) == 1
    lines = _one_line_errors(capsys.readouterr().err)
    assert "bomb.png: 100000x100000" in lines[0] and "over the limit" in lines[0]
    assert (tmp_path / "o" / "good_srcnn_x3.png").is_file()


def test_evaluate_huge_image_is_one_line(tmp_path, capsys, monkeypatch):
    from tinysr.cli.evaluate import main as evaluate_main

    monkeypatch.setattr("tinysr.protocol.evaluation.physical_memory", lambda: 64 << 30)
    _huge_png(tmp_path / "bomb.png")
    assert evaluate_main([str(tmp_path), "--bicubic"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png" in err and "over the limit" in err
    assert "--max-pixels" not in err and "memory holds" in err  # evaluate has no --max-pixels to advise


def test_protocol_reader_ignores_pillows_limit(tmp_path, monkeypatch):
    from tinysr.protocol.evaluation import read_y_uint8

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_y_uint8(_img(tmp_path / "a.png")).shape == (14, 20)


# -- 11. signals, closed stdout, pipes -------------------------------------------------------------

def test_interrupt_while_writing_leaves_no_temporary(tmp_path, weights, monkeypatch, capsys):
    real_save = Image.Image.save

    def save_then_ctrl_c(self, fp, *args, **kwargs):
        if hasattr(fp, "write"):
            fp.write(b"half")
            raise KeyboardInterrupt
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_ctrl_c)
    out = tmp_path / "o"
    try:
        status = main([str(_img(tmp_path / "in.png")), "-o", str(out), "--weights", weights])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main(): a traceback")
    assert status == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_in_one_line_and_status_130(tmp_path, weights, sig):
    """The first image is written (its path printed), the signal comes while the second runs."""
    small = _img(tmp_path / "a.png", size=(8, 8))
    large = _img(tmp_path / "b.png", size=(400, 300))
    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), str(small), str(large), "-o", str(out),
                          "--weights", weights, "-s", "4", "--threads", "1", "--tile", "64"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert written(first) == [(1, 2, str(out / "a_srcnn_x4.png"))]
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert sorted(q.name for q in out.iterdir()) == ["a_srcnn_x4.png"]  # no temporary, no half image


def test_closed_stdout_does_not_fail_written_images(tmp_path, weights, monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    srcs = [str(_img(tmp_path / f"{n}.png")) for n in "ab"]
    assert main(srcs + ["-o", str(tmp_path / "o"), "--weights", weights]) == 0
    assert capsys.readouterr().err.startswith("infer.py: 2 written, 0 skipped")  # the summary alone: no error
    assert sorted(q.name for q in (tmp_path / "o").iterdir()) == ["a_srcnn_x3.png", "b_srcnn_x3.png"]


def test_closed_pipe_real_process(tmp_path, weights):
    """``infer.py ... | head -0``: the pipe is closed before the first path is printed."""
    p = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), str(_img(tmp_path / "a.png")), "-o",
                          str(tmp_path / "o"), "--weights", weights], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert err == b""
    assert (tmp_path / "o" / "a_srcnn_x3.png").is_file()


@pytest.fixture
def no_hang():
    """Turn a hang into a failure (the old code blocked forever opening a FIFO)."""
    def timeout(signum, frame):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_fifo_input_is_refused_and_the_others_go_on(tmp_path, weights, capsys, no_hang):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    good = _img(tmp_path / "good.png")
    assert main([str(fifo), str(good), "-o", str(tmp_path / "o"), "--weights", weights]) == 1
    lines = _one_line_errors(capsys.readouterr().err)
    assert "pipe.png: not a regular file" in lines[0]
    assert (tmp_path / "o" / "good_srcnn_x3.png").is_file()


def test_device_input_is_refused(tmp_path, weights, capsys, no_hang):
    assert main(["/dev/zero", "-o", str(tmp_path / "o"), "--weights", weights]) == 1
    assert "/dev/zero: not a regular file" in _one_line_errors(capsys.readouterr().err)[0]


def test_fifo_in_a_folder_is_skipped_with_a_reason(tmp_path, weights, capsys, no_hang):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.png")
    _img(folder / "good.png")
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights]) == 0
    lines = _one_line_errors(capsys.readouterr().err)
    assert len(lines) == 2 and "skipped" in lines[0] and "pipe.png" in lines[0] and "1 written" in lines[1]


def test_an_error_after_a_signal_is_the_interruption_not_a_failed_image(tmp_path, weights, monkeypatch, capsys):
    """A library that swallows the KeyboardInterrupt and fails otherwise (seen once: EBADF) must
    not add 'error' and 'N of M images failed' lines: after a signal it is one 'interrupted' line."""
    import tinysr.cli.entry as entry
    import tinysr.cli.upscale as infer_module

    src = _img(tmp_path / "a.png", size=(8, 8))

    def fails_after_a_signal(*args, **kwargs):
        entry._RECEIVED.append("SIGINT")  # the handler recorded it; its exception was swallowed
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(entry, "_RECEIVED", [])
    monkeypatch.setattr(infer_module, "enlarge_job", fails_after_a_signal)
    assert infer_module.main([str(src), "-o", str(tmp_path / "o"), "--weights", weights, "-s", "4"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]
