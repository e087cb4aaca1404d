"""Progress of upscaling and evaluation (tinysr issue #18, item 3): ``[i/N] PATH (S s)`` lines, a
tile bar and an image bar on a terminal only, plain lines elsewhere, nothing but errors with --quiet."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinysr.image.enlarge
from tinysr.cli import evaluate
from tinysr.cli.command import main as tinysr_main
from tinysr.cli.progress import NoBar, Progress, tile_callback
from tinysr.cli.upscale import main
from tinysr.nn.model import SRCNN
from tests.threads import enlarge_on
from tinysr.nn.serialization import save_model
from tinysr.protocol.evaluation import evaluate_dir

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = re.compile(r"\[(\d+)/(\d+)\] (.+) \((\d+\.\d) s\)")
BAR_NOISE = ("\r", "%|", "\x1b[")  # what a tqdm bar writes; none of it may reach a log or a pipe


def written(out: str) -> list[tuple[int, int, str]]:
    """``infer.py``'s stdout as ``[(i, N, path), ...]``; every line must be ``[i/N] PATH (S.S s)``."""
    rows = []
    for line in out.splitlines():
        m = WRITTEN.fullmatch(line)
        assert m, f"not an '[i/N] PATH (S.S s)' line: {line!r}"
        rows.append((int(m[1]), int(m[2]), m[3]))
    return rows


def _no_bar_noise(*texts: str) -> None:
    for text in texts:
        assert not any(noise in text for noise in BAR_NOISE), repr(text)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _img(path, size=(20, 14), seed=1, mode="RGB"):
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode).save(path)
    return path


# -- tinysr.cli.progress -----------------------------------------------------------------------------

def test_quiet_shows_nothing_even_on_a_terminal():
    tty, out = FakeTTY(), io.StringIO()
    p = Progress(quiet=True, stream=tty, out=out, bars=True)
    assert not p.bars and isinstance(p.bar(10, "x"), NoBar)
    with p.counting("x") as on_step:
        assert on_step is None
    p.line("hello")
    assert tty.getvalue() == "" and out.getvalue() == ""


def test_off_a_terminal_plain_lines_and_no_bar():
    stream, out = io.StringIO(), io.StringIO()
    p = Progress(stream=stream, out=out)
    assert not p.bars
    with p.bar(5, "work") as bar:
        bar.update(5)
    with p.counting("work") as on_step:
        assert on_step is None
    p.line("[1/1] a.png (0.1 s)")
    assert stream.getvalue() == "" and out.getvalue() == "[1/1] a.png (0.1 s)\n"


def test_on_a_terminal_a_bar_and_lines_below_it():
    tty, out = FakeTTY(), io.StringIO()
    p = Progress(stream=tty, out=out)
    assert p.bars
    with p.counting("tiles of a.png", "tile", min_total=4) as on_step:
        on_step(0, 6)
        for k in range(1, 7):
            on_step(k, 6)
    drawn = tty.getvalue()
    assert "tiles of a.png" in drawn and "%|" in drawn and "\r" in drawn and "tile" in drawn
    p.line("done")
    assert out.getvalue() == "done\n"


def test_a_count_below_min_total_gets_no_bar():
    tty = FakeTTY()
    with Progress(stream=tty).counting("few", "tile", min_total=4) as on_step:
        for k in range(4):
            on_step(k, 3)
    assert tty.getvalue() == ""


def test_closed_stdout_stops_lines_not_work():
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    p = Progress(out=Closed())
    p.line("a")
    p.line("b")
    assert p.closed


def test_tile_callback_maps_an_api_progress_argument(monkeypatch):
    with tile_callback(False) as none:
        assert none is None
    calls = []
    with tile_callback(lambda done, total: calls.append(done)) as given:
        given(0, 9)
    assert calls == [0]
    tty = io.StringIO()  # True draws a bar even where stderr is no terminal (a notebook)
    monkeypatch.setattr(sys, "stderr", tty)
    with tile_callback(True, "photo.png") as on_tile:
        on_tile(0, 9)
    assert "photo.png" in tty.getvalue() and "%|" in tty.getvalue()
    with pytest.raises(TypeError, match="progress must be"):
        with tile_callback("yes"):
            pass


# -- tinysr.image.enlarge's on_tile ---------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_on_tile_counts_every_tile_on_the_calling_thread_and_pixels_are_unchanged(workers):
    model = SRCNN(n1=8, n2=4, init="he", seed=0)
    px = np.random.default_rng(3).integers(0, 256, (14, 20, 3), dtype=np.uint8)
    calls, threads = [], set()

    def on_tile(done, total):
        calls.append((done, total))
        threads.add(threading.get_ident())

    sr, bic = enlarge_on(workers, px, "RGB", model, 3, tile=16, bicubic=True, on_tile=on_tile)
    ref_sr, ref_bic = enlarge_on(workers, px, "RGB", model, 3, tile=16, bicubic=True)
    total = 3 * 4  # 42 x 60 output in 16-pixel tiles
    assert calls == [(k, total) for k in range(total + 1)]
    assert threads == {threading.get_ident()}
    assert np.array_equal(sr, ref_sr) and np.array_equal(bic, ref_bic)


def test_an_exception_in_on_tile_drops_the_queued_tiles(monkeypatch):
    model = SRCNN(n1=8, n2=4, init="he", seed=0)
    px = np.random.default_rng(3).integers(0, 256, (20, 20, 1), dtype=np.uint8)
    real = tinysr.image.enlarge.restore_piece
    ran = []

    def slow_piece(*args, **kwargs):
        time.sleep(0.02)  # so the queue is still full when the callback stops the work
        ran.append(1)
        return real(*args, **kwargs)

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tinysr.image.enlarge, "restore_piece", slow_piece)
    with pytest.raises(KeyboardInterrupt):
        enlarge_on(2, px, "L", model, 2, tile=8, on_tile=stop)  # 25 tiles
    time.sleep(0.1)  # tiles already running finish; queued ones must not start
    assert len(ran) < 25 // 2


# -- infer.py / tinysr upscale ---------------------------------------------------------------------

def test_upscale_lines_and_no_bar_noise_off_a_terminal(tmp_path, weights, capsys):
    srcs = [str(_img(tmp_path / f"{n}.png", seed=i)) for i, n in enumerate("ab")]
    out = tmp_path / "o"
    assert main([*srcs, "-o", str(out), "--weights", weights, "--tile", "8", "--compare"]) == 0
    text, err = capsys.readouterr()
    assert written(text) == [(1, 2, str(out / "a_srcnn_x3.png")), (1, 2, str(out / "a_compare_x3.png")),
                             (2, 2, str(out / "b_srcnn_x3.png")), (2, 2, str(out / "b_compare_x3.png"))]
    assert err.startswith("infer.py: 2 written, 0 skipped, 0 failed of 2 images in ") and len(err.splitlines()) == 1
    _no_bar_noise(text, err)


def test_upscale_on_a_terminal_shows_a_tile_bar_and_the_same_pixels(tmp_path, weights, capsys, monkeypatch):
    src = _img(tmp_path / "a.png", size=(30, 20))
    plain, tty_out = tmp_path / "plain", tmp_path / "tty"
    assert main([str(src), "-o", str(plain), "--weights", weights, "--tile", "8"]) == 0
    capsys.readouterr()
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main([str(src), "-o", str(tty_out), "--weights", weights, "--tile", "8", "--threads", "2"]) == 0
    assert written(capsys.readouterr().out) == [(1, 1, str(tty_out / "a_srcnn_x3.png"))]
    drawn = tty.getvalue()
    assert "[1/1] a.png" in drawn and "%|" in drawn and "tile" in drawn  # 60 x 90 output: 8 x 12 tiles
    assert np.array_equal(np.asarray(Image.open(tty_out / "a_srcnn_x3.png")),
                          np.asarray(Image.open(plain / "a_srcnn_x3.png")))


def test_an_image_of_a_few_tiles_gets_no_bar(tmp_path, weights, capsys, monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main([str(_img(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "--weights", weights]) == 0
    assert len(written(capsys.readouterr().out)) == 1
    assert tty.getvalue() == ""  # one tile


def test_quiet_upscale_prints_nothing_and_still_prints_errors(tmp_path, weights, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    _img(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")  # a skip is said without --quiet, not with it
    captured, tty = sys.stderr, FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main([str(folder), "-o", str(tmp_path / "o"), "--weights", weights, "--tile", "8", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "") and tty.getvalue() == ""
    assert (tmp_path / "o" / "a_srcnn_x3.png").is_file()
    monkeypatch.setattr(sys, "stderr", captured)
    (folder / "b.png").write_bytes(b"not a png")
    assert tinysr_main(["upscale", str(folder), "-o", str(tmp_path / "o2"), "--weights", weights, "-q"]) == 1
    text, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert text == "" and len(lines) == 2 and "b.png" in lines[0] and "1 of 2 images failed" in lines[1], err
    assert all(line.startswith("tinysr upscale: ") for line in lines)


def test_real_pipes_get_no_bar_and_a_real_terminal_gets_one(tmp_path, weights):
    src = str(_img(tmp_path / "a.png", size=(30, 20)))
    cmd = [sys.executable, str(ROOT / "infer.py"), src, "--weights", weights, "--tile", "8", "--threads", "1"]
    p = subprocess.run([*cmd, "-o", str(tmp_path / "p")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert written(p.stdout) == [(1, 1, str(tmp_path / "p" / "a_srcnn_x3.png"))] and p.stderr == ""
    _no_bar_noise(p.stdout, p.stderr)

    leader, follower = pty.openpty()  # stderr on a terminal; stdout stays a pipe
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns: room for a bar
    try:
        q = subprocess.Popen([*cmd, "-o", str(tmp_path / "t")], stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        drawn = b""
        while True:  # read as it comes, so the terminal's buffer never blocks the writer
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the writer is gone
                break
            if not chunk:
                break
            drawn += chunk
        stdout = q.communicate(timeout=120)[0].decode()
    finally:
        os.close(leader)
    assert q.returncode == 0
    assert written(stdout) == [(1, 1, str(tmp_path / "t" / "a_srcnn_x3.png"))]
    assert b"%|" in drawn and b"[1/1] a.png" in drawn


# -- tinysr evaluate (tinysr.cli.evaluate) ------------------------------------------------

@pytest.fixture
def small_set(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(3):
        _img(folder / f"im{i}.png", size=(24, 18), seed=i)
    return folder


def test_evaluate_dir_reports_each_image_and_the_scores_do_not_change(small_set):
    calls = []
    rows = evaluate_dir(small_set, 2, on_image=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert rows == evaluate_dir(small_set, 2)


def test_evaluate_bar_on_a_terminal_only_and_the_same_table(small_set, capsys, monkeypatch):
    assert evaluate.main([str(small_set), "-s", "2", "--bicubic"]) == 0
    table, err = capsys.readouterr()
    assert table.splitlines()[0] == "tiny x2 bicubic" and table.splitlines()[-1].startswith("mean")
    assert err == ""
    _no_bar_noise(table)
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    assert evaluate.main([str(small_set), "-s", "2", "--bicubic"]) == 0
    assert capsys.readouterr().out == table
    drawn = tty.getvalue()
    assert "tiny x2 bicubic" in drawn and "%|" in drawn and "0/3" in drawn and "image" in drawn


def test_quiet_evaluate_prints_nothing_and_still_prints_errors(small_set, tmp_path, capsys, monkeypatch):
    captured, tty = sys.stderr, FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    saved = tmp_path / "saved"
    assert evaluate.main([str(small_set), "-s", "2", "--bicubic", "--save-images", str(saved), "-q"]) == 0
    assert capsys.readouterr() == ("", "") and tty.getvalue() == ""
    assert sorted(q.name for q in saved.iterdir()) == [f"im{i}_x2_bicubic.png" for i in range(3)]
    monkeypatch.setattr(sys, "stderr", captured)
    assert tinysr_main(["evaluate", str(tmp_path / "nope"), "--bicubic", "--quiet"]) == 2
    text, err = capsys.readouterr()
    assert text == "" and len(err.strip().splitlines()) == 1 and "not found" in err
