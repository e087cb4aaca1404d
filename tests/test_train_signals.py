"""Preparing training patches ends in one line, never a traceback (issue #23): a signal while a
program starts (its imports), a signal that h5py would swallow while the cache is written,
running out of memory on a huge training image, and a scale the authors never trained."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinysr.cli.prepare import main as prepare_main

def _wait_for(marker: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "NumPy was never imported"
        time.sleep(0.02)


# Runs a program after installing an import hook that, on the first import of NumPy (while the
# program starts), writes a marker file and waits there (until MARKER.go exists); the test signals
# once the marker is there.
_SLOW_START = r"""
import os, runpy, sys, time
marker, how, what = sys.argv[1:4]
sys.argv = [what, *sys.argv[4:]]

class SlowNumpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            open(marker, "w").close()
            for _ in range(600):  # until the test says go on (or 30 s)
                if os.path.exists(marker + ".go"):
                    break
                time.sleep(0.05)
        return None

sys.meta_path.insert(0, SlowNumpy())
if how == "module":
    runpy.run_module(what, run_name="__main__", alter_sys=True)
else:  # a console script, as pip's generated script runs it
    from importlib.metadata import entry_points
    (script,) = entry_points(group="console_scripts", name=what)
    sys.exit(script.load()())
"""


@pytest.mark.parametrize("how,what,argv,said", [
    ("module", "tinysr.cli.prepare", [], "python -m tinysr.cli.prepare: interrupted"),
    ("module", "tinysr.protocol.data", ["prepare"], "python -m tinysr.protocol.data prepare: interrupted"),
    ("script", "tinysr-evaluate", [], "tinysr-evaluate: interrupted"),
    ("module", "tinysr.cli.train", [], "train.py: interrupted; nothing was trained"),
])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_a_program_starts_is_one_line(tmp_path, how, what, argv, said, sig):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_START, str(marker), how, what, *argv, "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        _wait_for(marker, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [said]


@pytest.mark.parametrize("how,what,argv", [("script", "tinysr-evaluate", []),
                                          ("module", "tinysr.cli.train", [])])
def test_under_nohup_a_sighup_is_left_ignored(tmp_path, how, what, argv):
    """``nohup`` ignores SIGHUP so that a program outlives its terminal: tinysr keeps it so."""
    marker = tmp_path / "marker"
    ignoring = "import signal; signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + _SLOW_START
    proc = subprocess.Popen([sys.executable, "-c", ignoring, str(marker), how, what, *argv, "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        _wait_for(marker, proc)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # time for a handler to run, were there one
        Path(f"{marker}.go").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert out.startswith("usage:") and err == ""


# `tinysr prepare` as a program, after making h5py's dataset creation send SIGINT from inside a
# clean-up (a __del__), where Python prints and drops the exception, as in h5py's callbacks.
_SWALLOWED = r"""
import os, signal, sys, time
import h5py
real = h5py.Group.create_dataset

class SignalInCleanup:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)

def create_dataset(self, *args, **kwargs):
    SignalInCleanup()
    return real(self, *args, **kwargs)

h5py.Group.create_dataset = create_dataset
sys.argv = ["tinysr", *sys.argv[1:]]
from tinysr.cli.entry import run
run("tinysr.cli.command", "tinysr")
"""


def _images(folder: Path, size=(60, 75), n: int = 2) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    return folder


def test_a_signal_swallowed_inside_the_hdf5_write_is_one_line(tmp_path):
    images = _images(tmp_path / "imgs")
    r = subprocess.run([sys.executable, "-c", _SWALLOWED, "prepare", "--images", str(images), "--scale", "3",
                        "--out", str(tmp_path / "p.h5")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines() == ["tinysr: interrupted"]
    assert "pairs" not in r.stdout
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# Prepare patches from a 3000x3000 image with the address space capped a little above what the
# program holds once started: cutting its 45,000 patches runs out of memory.
_CAPPED = r"""
import resource, sys
import tinysr.cli.command, tinysr.cli.prepare
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2 ** 20, resource.RLIM_INFINITY))
from tinysr.cli.command import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
def test_running_out_of_memory_on_a_huge_training_image_is_one_line(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    y, x = np.mgrid[0:3000, 0:3000]
    Image.fromarray(((x + y) % 256).astype(np.uint8)).save(images / "huge.png")
    r = subprocess.run([sys.executable, "-c", _CAPPED, "prepare", "--images", str(images), "--scale", "3",
                        "--out", str(tmp_path / "p.h5")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "huge.png" in lines[0] and "not enough memory" in lines[0], r.stderr
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.parametrize("scale", ["1", "5"])
def test_prepare_takes_only_the_papers_scales(tmp_path, capsys, scale):
    images = _images(tmp_path / "imgs")
    with pytest.raises(SystemExit) as e:
        prepare_main(["--images", str(images), "--scale", scale, "--out", str(tmp_path / "p.h5")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--scale" in err and "2, 3, 4" in err
    assert not (tmp_path / "p.h5").exists()
