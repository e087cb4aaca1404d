"""Video in, video out (issue #28 item 1), on real files the tests encode with PyAV: a moving
pattern, a sine tone, SubRip subtitles, BT.709 tags and a 90-degree rotation."""

from __future__ import annotations

import fractions
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinysr
from tinysr.atomic import temporary_name
from tinysr.cli.upscale import main

av = pytest.importorskip("av", reason="the [video] extra (PyAV) is not installed: pip install 'tinysr[video]'")

ROOT = Path(__file__).resolve().parents[1]
SRT = "1\n00:00:00,000 --> 00:00:00,250\nHello tinysr\n\n2\n00:00:00,250 --> 00:00:00,450\nSecond line\n\n"


def make_clip(path: Path, w=48, h=32, frames=12, fps=24, audio=True, subtitles=True, rotation=90, crf=10) -> Path:
    """Encode a test clip: a moving sine/stripe pattern in H.264 yuv420p tagged BT.709 (limited
    range), a 440 Hz mono AAC tone, and (``subtitles``, for .mkv) two SubRip cues remuxed from a
    .srt file; the display rotated by ``rotation`` degrees."""
    srt_in = None
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=fps, options={"crf": str(crf)})
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    cc = v.codec_context
    cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1  # tv, bt709 x3
    if rotation:
        v.set_display_rotation(rotation)
    a = out.add_stream("aac", rate=48000) if audio else None
    s = None
    if subtitles:
        srt = path.with_name(path.name + ".srt")
        srt.write_text(SRT)
        srt_in = av.open(str(srt))
        s = out.add_stream_from_template(srt_in.streams.subtitles[0])
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(frames):
        rgb = np.stack([np.sin((xx + 3 * i) / 5) * 100 + 128, np.cos((yy - 2 * i) / 4) * 90 + 128,
                        (xx + yy + 5 * i) % 256], -1).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    if a is not None:
        rate = 48000
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate * frames // fps) / rate)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            af = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = rate, k
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    if s is not None:
        for p in srt_in.demux(srt_in.streams.subtitles[0]):
            if p.dts is not None:
                p.stream = s
                out.mux(p)
        srt_in.close()
    out.close()
    return path


def packets(path: Path, kind: str) -> list[tuple]:
    """``(pts, dts, duration, bytes)`` of every packet of the first ``kind`` stream."""
    with av.open(str(path)) as c:
        stream = next(x for x in c.streams if x.type == kind)
        return [(p.pts, p.dts, p.duration, bytes(p)) for p in c.demux(stream) if p.dts is not None]


def frames(path: Path) -> list:
    """Every decoded video frame as ``(pts, Y' plane uint8 as stored, rotation)``."""
    with av.open(str(path)) as c:
        return [(f.pts, _y(f), f.rotation) for f in c.decode(video=0)]


def _y(frame) -> np.ndarray:
    """The frame's own Y plane, as stored (no range conversion), without its line padding."""
    plane = frame.planes[0]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width].copy()


def describe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        cc = v.codec_context
        return {"size": (cc.width, cc.height), "rate": v.average_rate, "time_base": v.time_base,
                "colour": (cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc),
                "types": [s.type for s in c.streams], "duration": c.duration}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {"mkv": make_clip(d / "clip.mkv"), "mp4": make_clip(d / "clip.mp4", subtitles=False, w=40, h=30)}


def test_mkv_keeps_frames_timing_sound_subtitles_colour_and_rotation(clips, tmp_path, capsys):
    src, dst = clips["mkv"], tmp_path / "big.mkv"
    assert main([str(src), "-s", "2", "-o", str(dst)]) == 0
    assert capsys.readouterr().out.startswith(f"[1/1] {dst} (")
    a, b = describe(src), describe(dst)
    assert b["size"] == (96, 64) and b["types"] == a["types"] == ["video", "audio", "subtitle"]
    assert (b["rate"], b["time_base"], b["colour"]) == (a["rate"], a["time_base"], a["colour"]) \
        and a["colour"] == (1, 1, 1, 1)
    fa, fb = frames(src), frames(dst)
    assert len(fb) == len(fa) == 12 and [f[0] for f in fb] == [f[0] for f in fa]  # same count, same timestamps
    assert {f[2] for f in fb} == {90}  # the display rotation
    assert packets(dst, "audio") == packets(src, "audio")  # copied bit for bit, same timestamps
    subs = packets(dst, "subtitle")
    assert subs == packets(src, "subtitle") and [s[3] for s in subs] == [b"Hello tinysr", b"Second line"]


def test_mp4_keeps_the_duration_and_the_frame_count(clips, tmp_path):
    src, dst = clips["mp4"], tmp_path / "big.mp4"
    assert tinysr.upscale_video(src, dst, 2) == dst
    a, b = describe(src), describe(dst)
    assert b["size"] == (80, 60) and b["duration"] == a["duration"] and b["rate"] == a["rate"] == 24
    assert len(frames(dst)) == len(frames(src)) == 12
    assert packets(dst, "audio") == packets(src, "audio")


def test_an_output_frames_y_is_the_images_y_restore(clips, tmp_path):
    """Losslessly encoded (--crf 0), each output frame's Y is exactly tinysr.upscale of the input
    frame's Y plane as a grayscale image: the same enlarge function, the same network."""
    src, dst = clips["mp4"], tmp_path / "lossless.mp4"
    assert main([str(src), "-s", "2", "-o", str(dst), "--crf", "0", "-q"]) == 0
    fa, fb = frames(src), frames(dst)
    for k in (0, 7):
        want = tinysr.upscale(fa[k][1], 2)
        assert fb[k][1].shape == want.shape == (60, 80)
        assert np.array_equal(fb[k][1], want)


def test_any_size_rounds_up_to_whole_chroma_samples(clips, tmp_path):
    dst = tmp_path / "w.mp4"
    tinysr.upscale_video(clips["mp4"], dst, width=101)  # 40x30 -> 101x75.75: 102x76 for 4:2:0
    assert describe(dst)["size"] == (102, 76)
    tinysr.upscale_video(clips["mp4"], tmp_path / "s.mp4", 2.5)
    assert describe(tmp_path / "s.mp4")["size"] == (100, 76)  # ceil(2.5 * 30) = 75 -> 76


def test_folder_of_videos_and_images_names_resume_and_summary(clips, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("clip.mkv", "clip.mp4"):
        (folder / name).write_bytes(clips[name.split(".")[1]].read_bytes())
    tinysr_png = folder / "still.png"
    from PIL import Image
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tinysr_png)
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out), "-s", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip_srcnn_x2.mkv", "clip_srcnn_x2.mp4", "still_srcnn_x2.png"]
    err = capsys.readouterr().err
    assert err.startswith("infer.py: 3 written, 0 skipped, 0 failed of 3 files")  # videos and an image
    assert main([str(folder), "-o", str(out), "-s", "2", "--skip-existing"]) == 0
    assert capsys.readouterr().err.startswith("infer.py: 0 written, 3 skipped, 0 failed of 3 files")
    assert main([str(folder / "clip.mkv"), str(folder / "clip.mp4"), "-o", str(out), "-s", "2", "--skip-existing"]) == 0
    assert capsys.readouterr().err.startswith("infer.py: 0 written, 2 skipped, 0 failed of 2 videos in ")
    assert main([str(folder), "-o", str(out), "-s", "2"]) == 1  # without it, each is there: an error each
    assert "clip_srcnn_x2.mkv exists" in capsys.readouterr().err


def _errors(argv, capsys) -> tuple[int, list[str]]:
    status = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("infer.py: ") for line in lines), lines
    return status, lines


def test_refusals_are_one_line_and_leave_nothing(clips, tmp_path, capsys):
    status, lines = _errors([str(clips["mkv"]), "-s", "2", "-o", str(tmp_path / "sub.mp4")], capsys)
    assert status == 1 and "subtitle stream (srt) cannot go into mp4" in lines[0]
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all")
    status, lines = _errors([str(fake), "-o", str(tmp_path / "o.mp4")], capsys)
    assert status == 1 and "fake.mp4: not a readable video" in lines[0]
    status, lines = _errors([str(clips["mp4"]), "-o", str(tmp_path / "o.mp4"), "--max-pixels", "1000"], capsys)
    assert status == 1 and "over the limit of 1000 pixels" in lines[0]
    for codec in ("no-such-codec", "aac"):  # unknown, or not a video encoder: refused before any work
        status, lines = _errors([str(clips["mp4"]), "-o", str(tmp_path / "o.mp4"), "--codec", codec], capsys)
        assert status == 2 and len(lines) == 1 and f"--codec {codec}: not a video encoder" in lines[0]
        assert "libx264" in lines[0].split("it has ")[1].split(", ")  # the available ones, listed
    status, lines = _errors([str(clips["mp4"]), str(clips["mkv"]), "-o", str(tmp_path / "o.mp4")], capsys)
    assert status == 2 and len(lines) == 1 and "names one video file" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.mp4"]  # no output, no temporary


def test_without_pyav_one_line_names_the_extra(clips, tmp_path):
    code = ("import sys; sys.modules['av'] = None\n"  # what a Python without PyAV sees: import av fails
            "from tinysr.cli.upscale import main\n"
            f"sys.exit(main([{str(clips['mp4'])!r}, '-o', {str(tmp_path / 'o.mp4')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == \
        'infer.py: error: video needs PyAV, which is not installed: pip install "tinysr[video]"'
    assert not (tmp_path / "o.mp4").exists()


def test_ctrl_c_during_the_encode_leaves_nothing(tmp_path):
    src = make_clip(tmp_path / "long.mp4", w=160, h=120, frames=240, subtitles=False, crf=30)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, str(ROOT / "infer.py"), str(src), "-s", "3", "-o", str(out / "big.mp4"), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in out.iterdir()):  # the temporary exists: encoding has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert os.listdir(out) == []  # neither big.mp4 nor its temporary


def test_a_terminal_gets_a_frame_bar_with_the_time_left(clips, tmp_path, capsys, monkeypatch):
    from .test_progress import FakeTTY

    import tinysr.cli.progress

    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(tinysr.cli.progress, "REFRESH_S", 0)  # redraw at every frame, however fast they go
    assert main([str(clips["mp4"]), "-s", "2", "-o", str(tmp_path / "big.mp4")]) == 0
    bar = tty.getvalue()
    assert "| 5/12 [" in bar and ("frame/s" in bar or "s/frame" in bar), bar
    assert re.search(r"5/12 \[\d\d:\d\d<\d\d:\d\d", bar), bar  # elapsed<left: the time left


def test_existing_output_kept_unless_overwrite_and_stale_temporaries_removed(clips, tmp_path, capsys):
    from .test_infer_safety import _dead_pid

    dst = tmp_path / "big.mp4"
    dst.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        tinysr.upscale_video(clips["mp4"], dst, 2)
    assert dst.read_bytes() == b"mine"
    stale = temporary_name(dst, pid=_dead_pid())  # left by a run killed with kill -9
    stale.write_bytes(b"half a video")
    assert main([str(clips["mp4"]), "-s", "2", "-o", str(dst)]) == 1 and dst.read_bytes() == b"mine"
    assert "big.mp4 exists (use --overwrite" in capsys.readouterr().err and not stale.exists()
    assert main([str(clips["mp4"]), "-s", "2", "-o", str(dst), "--overwrite", "-q"]) == 0
    assert describe(dst)["size"] == (80, 60) and sorted(os.listdir(tmp_path)) == ["big.mp4"]


def test_a_full_disk_leaves_nothing(clips, tmp_path):
    """The file system refuses the write part way (a 20 kB file size limit stands in for a full
    disk): one line naming the output, exit 1, neither the output nor its temporary left."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, str(ROOT / "infer.py"), str(clips["mp4"]), "-s", "4", "--crf", "0", "-o", str(out / "big.mp4")]
    p = subprocess.run(cmd, preexec_fn=limit, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.splitlines()[0] == \
        f"infer.py: error: {out / 'big.mp4'}: not written (File too large); nothing left under that name", p.stderr
    assert os.listdir(out) == []


@pytest.mark.parametrize("fmt, want, chroma", [("yuv444p", "yuv444p", (64, 48)), ("yuv420p10le", "yuv420p", (32, 24)),
                                               ("yuvj420p", "yuvj420p", (32, 24))])
def test_pixel_formats_444_full_range_and_10_bit(tmp_path, fmt, want, chroma):
    """4:4:4 stays 4:4:4 (chroma at full size), full range stays full range, 10-bit becomes 8-bit 4:2:0."""
    src = tmp_path / f"{fmt}.mp4"
    out = av.open(str(src), "w")
    v = out.add_stream("libx264", rate=24)
    v.width, v.height, v.pix_fmt = 32, 24, fmt
    for i in range(3):
        rgb = np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
        frame.pts, frame.time_base = i, fractions.Fraction(1, 24)
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    out.close()
    dst = tinysr.upscale_video(src, tmp_path / "big.mp4", 2)
    with av.open(str(dst)) as c:
        got = list(c.decode(video=0))
    assert len(got) == 3 and got[0].format.name == want and (got[0].width, got[0].height) == (64, 48)
    assert (got[0].planes[1].width, got[0].planes[1].height) == chroma
    assert (got[0].color_range == 2) == (fmt == "yuvj420p")
