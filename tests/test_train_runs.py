"""A training run is one run (issue #23): its folder is claimed for the run's life, a resume
continues the same run on the same data with the same recipe (or says why not), the patch cache
is shared between runs, and what train.py prints and refuses names where it writes and which flag
is wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import tinysr.cli.train as train_module
import tinysr.nn.run as run_module  # the training run's seams (TrainingRun)
import tinysr.protocol.data as data
from tinysr.cli.train import main
from tinysr.distributed.mpi import Solo
from tinysr.nn.serialization import read_npz

from .train_helpers import train_argv

REPO = Path(__file__).resolve().parents[1]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _copy_images(train_folders, tmp_path) -> Path:
    """A private copy of the fixture's training images (the tests change them)."""
    train = tmp_path / "train"
    train.mkdir()
    for p in train_folders[0].iterdir():
        (train / p.name).write_bytes(p.read_bytes())
    return train


# A train.py run that stops for a while where it writes the patch cache (inside its first
# epoch's set-up, the folder holding nothing of a run yet), after writing a marker file.
_PAUSED = r"""
import runpy, sys, time
marker = sys.argv[1]
sys.argv = sys.argv[2:]
import h5py
real = h5py.Group.create_dataset
def create_dataset(self, *args, **kwargs):
    open(marker, "w").close()
    time.sleep(60)
    return real(self, *args, **kwargs)
h5py.Group.create_dataset = create_dataset
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _start_paused(argv, tmp_path, cwd) -> subprocess.Popen:
    marker = tmp_path / f"marker-{len(list(tmp_path.glob('marker-*')))}"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED, str(marker), str(REPO / "train.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run never reached its cache write"
        time.sleep(0.02)
    return proc


# ------------------------------------------------------------------ one folder, one run


def test_a_second_run_into_a_claimed_folder_is_refused_naming_the_first(train_folders, tmp_path, capsys,
                                                                      monkeypatch):
    out = tmp_path / "run"
    first = _start_paused(train_argv(train_folders, out, "--epochs", "1", "--cache", str(tmp_path / "c.h5")),
                          tmp_path, tmp_path)
    try:
        # the first is in its first epoch's set-up: its folder holds no run files yet
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
        for extra in ((), ("--overwrite",), ("--resume", "auto")):
            assert main(train_argv(train_folders, out, "--epochs", "1", *extra)) == 2
            err = _err_line(capsys)
            assert f"pid {first.pid}" in err and str(out) in err, err
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # nothing of the first run touched

        # with the default --out the second run takes the next free folder, saying why
        monkeypatch.chdir(tmp_path)
        default = _start_paused(["--train-dir", str(train_folders[0]), "--eval-every", "0", "--epochs", "1",
                                 "--batch-size", "8", "--cache", str(tmp_path / "d.h5")], tmp_path, tmp_path)
        try:
            assert main(["--train-dir", str(train_folders[0]), "--eval-every", "0", "--epochs", "1",
                         "--batch-size", "8"]) == 0
            printed = capsys.readouterr().out.splitlines()
            assert printed[0] == f"another training run (pid {default.pid}) is using runs/x3: training into the " \
                                 f"next free folder"
            assert printed[1] == "run folder runs/x3-2"
            assert (tmp_path / "runs/x3-2/last.npz").is_file() and not (tmp_path / "runs/x3/last.npz").exists()
        finally:
            default.kill()
            default.wait()
    finally:
        first.kill()  # SIGKILL: no clean-up runs, the OS drops the lock
        first.wait()
    assert main(train_argv(train_folders, out, "--epochs", "1")) == 0  # the folder is usable at once
    assert (out / "last.npz").is_file() and not (out / "run.lock").exists()


def test_a_refused_run_leaves_no_folder_behind(train_folders, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--arch", "9-2-5")) == 2
    assert "--arch" in _err_line(capsys)
    assert not out.exists()


# ------------------------------------------------------------- resume continues the same run


@pytest.mark.parametrize("change", ["added", "replaced", "removed"])
def test_resume_on_changed_training_images_is_refused_naming_them(train_folders, tmp_path, capsys, change):
    train = _copy_images(train_folders, tmp_path)
    out = tmp_path / "run"
    argv = ["--train-dir", str(train), *train_argv(train_folders, out)[2:]]
    assert main([*argv, "--epochs", "1"]) == 0
    if change == "added":
        (train / "t9.png").write_bytes((train / "t0.png").read_bytes())
    elif change == "replaced":  # same name, other pixels
        img = np.asarray(Image.open(train / "t1.png"))
        Image.fromarray(255 - img).save(train / "t1.png")
    else:
        (train / "t2.png").unlink()
    name = {"added": "t9.png", "replaced": "t1.png", "removed": "t2.png"}[change]
    before = (out / "last.npz").read_bytes()
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 2
    err = _err_line(capsys)
    assert f"{name} {change}" in err and "--allow-changed-data" in err
    assert (out / "last.npz").read_bytes() == before
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2", "--allow-changed-data"]) == 0
    assert f"{name} {change}" in capsys.readouterr().out
    assert read_npz(out / "last.npz")["state"]["epoch"] == 2
    # the continued run records the data it now trains on: a further resume needs no flag
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "3"]) == 0


def test_the_checkpoint_records_absolute_paths(train_folders, tmp_path, monkeypatch):
    """A run started with a relative --train-dir resumes on the same images from any folder."""
    monkeypatch.chdir(tmp_path)
    _copy_images(train_folders, tmp_path)
    argv = train_argv(train_folders, "run", "--epochs", "1", "--eval-every", "0")
    argv[1] = "train"  # --train-dir, relative
    assert main(argv) == 0
    recipe = read_npz(tmp_path / "run/last.npz")["meta"]["recipe"]
    for key in ("train_dir", "eval_dir", "out"):
        assert Path(recipe[key]).is_absolute() and Path(recipe[key]).exists(), (key, recipe[key])
    assert recipe["train_dir"] == str(tmp_path / "train")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "train").mkdir(parents=True)  # another folder's train/, which the resume must not use
    Image.new("RGB", (80, 80)).save(elsewhere / "train/x.png")
    monkeypatch.chdir(elsewhere)
    assert main(["--resume", str(tmp_path / "run/last.npz"), "--epochs", "2"]) == 0
    assert read_npz(tmp_path / "run/last.npz")["state"]["epoch"] == 2


def _rewrite_recipe(path: Path, edit) -> None:
    """Rewrite the checkpoint's __meta__ with ``edit(meta)`` applied (a crafted, older or newer file)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"]))
    edit(meta)
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("edit,says", [
    (lambda m: m.pop("recipe"), "records no recipe"),
    (lambda m: m["recipe"].pop("lr"), "lacks --lr"),
    (lambda m: m["recipe"].pop("schedule"), "lacks --schedule"),
    (lambda m: m["recipe"].update(jpeg_quality=75), "does not know: jpeg_quality"),
])
def test_a_checkpoint_without_a_whole_recipe_is_refused(train_folders, tmp_path, capsys, edit, says):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    _rewrite_recipe(out / "last.npz", edit)
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 2
    err = _err_line(capsys)
    assert says in err and "--init-from" in err, err
    assert read_npz(out / "last.npz")["state"]["epoch"] == 1


def test_a_checkpoint_of_the_older_layout_with_null_paths_is_one_line(train_folders, tmp_path, capsys):
    """Older checkpoints recorded the default data folders as null: resolved as then, never a traceback."""
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    _rewrite_recipe(out / "last.npz", lambda m: m["recipe"].update(train_dir=None, eval_dir=None))
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 2  # other images than the run's
    assert "T91" in _err_line(capsys)
    assert read_npz(out / "last.npz")["state"]["epoch"] == 1


def test_a_checkpoint_without_a_data_fingerprint_needs_the_flag(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    _rewrite_recipe(out / "last.npz", lambda m: m.pop("train_data"))
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 2
    assert "records no fingerprint" in _err_line(capsys)
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2", "--allow-changed-data"]) == 0


@pytest.mark.parametrize("epochs", ["1", "2"])
def test_resuming_a_complete_run_says_so_and_how_to_extend_it(train_folders, tmp_path, capsys, epochs):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--eval-every", "0")) == 0
    before = (out / "last.npz").read_bytes()
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", epochs]) == 0
    said = capsys.readouterr().out
    assert f"the run in {out} is complete: 2 of {epochs} epochs trained" in said
    assert f"--resume auto --out {out} --epochs N (N > 2)" in said
    assert (out / "last.npz").read_bytes() == before


def test_the_advice_after_an_interrupted_resume_continues_that_run(train_folders, tmp_path, capsys, monkeypatch):
    """--resume X.npz --out NEW stopped before its first epoch: the advice resumes X into NEW."""
    first = tmp_path / "first"
    assert main(train_argv(train_folders, first, "--epochs", "1", "--eval-every", "0")) == 0
    saved = tmp_path / "saved.npz"
    saved.write_bytes((first / "last.npz").read_bytes())
    real = run_module.load_or_build_cache

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "load_or_build_cache", interrupted)
    new = tmp_path / "new"
    capsys.readouterr()
    assert main(["--resume", str(saved), "--out", str(new), "--epochs", "3"]) == 130
    err = _err_line(capsys)
    assert f"the last complete checkpoint {saved} is kept (continue with --resume {saved} --out {new})" in err
    monkeypatch.setattr(run_module, "load_or_build_cache", real)
    assert main(["--resume", str(saved), "--out", str(new), "--epochs", "2"]) == 0  # the advice works
    assert read_npz(new / "last.npz")["state"]["epoch"] == 2


# ------------------------------------------------------------ problems found up front, named


def test_an_unreadable_evaluation_image_is_refused_before_training(train_folders, tmp_path, capsys):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "a.png").write_bytes((train_folders[1] / "e0.png").read_bytes())
    (ev / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "run"
    argv = train_argv(train_folders, out, "--epochs", "1")
    argv[3] = str(ev)
    assert main(argv) == 2
    err = _err_line(capsys)
    assert "--eval-dir" in err and "b.png" in err
    assert not out.exists()  # no epoch was trained (and thrown away)


def test_a_checkpoint_with_negative_adam_moments_is_refused_naming_it(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    crafted = tmp_path / "crafted.npz"
    with np.load(out / "last.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["optim.v.conv1.weight"] = -np.abs(arrays["optim.v.conv1.weight"]) - 1.0
    with open(crafted, "wb") as f:
        np.savez(f, **arrays)
    capsys.readouterr()
    assert main(["--resume", str(crafted), "--out", str(tmp_path / "new"), "--epochs", "2"]) == 2
    err = _err_line(capsys)
    assert str(crafted) in err and "negative" in err and "v.conv1.weight" in err
    assert "last.npz" not in err


def test_a_non_root_rank_does_not_deny_rank_0s_checkpoint(tmp_path):
    """Under MPI only rank 0 writes checkpoints: another rank's line after SIGTERM defers to rank 0's."""

    class Rank1(Solo):
        is_root = False

    said = train_module._kept({"out": tmp_path / "run"}, Rank1())
    assert "no checkpoint was written" not in said and "rank 0" in said and str(tmp_path / "run") in said
    assert train_module._kept({}, Solo()) == "no checkpoint was written"


@pytest.mark.parametrize("argv,flag", [(["--arch", "25-25-25"], "--arch"), (["--arch", "9-2-5"], "--arch"),
                                       (["--seed", "-1"], "--seed")])
def test_bad_values_name_their_flag(train_folders, tmp_path, capsys, argv, flag):
    try:
        code = main(train_argv(train_folders, tmp_path / "run", "--epochs", "1", *argv))
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2
    assert flag in _err_line(capsys)


def test_a_too_large_image_is_refused_without_advising_a_flag_training_lacks(train_folders, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(data, "physical_memory", lambda: 128 * 1000)  # 1000 pixels of patches at most
    assert main(train_argv(train_folders, tmp_path / "run", "--epochs", "1")) == 2
    err = _err_line(capsys)
    assert "t0.png" in err and "over the limit" in err and "training patches" in err
    assert "--max-pixels" not in err


# ---------------------------------------------------------------- the shared patch cache


def test_runs_on_the_same_images_share_one_patch_cache(train_folders, tmp_path, capsys):
    assert main(train_argv(train_folders, tmp_path / "a", "--epochs", "1", "--eval-every", "0")) == 0
    first = capsys.readouterr().out
    assert "building the patch cache" in first
    caches = list((Path(os.environ["XDG_CACHE_HOME"]) / "tinysr" / "patches").iterdir())
    assert len(caches) == 1 and caches[0].suffix == ".h5"
    assert not (tmp_path / "a" / "patches.h5").exists()
    assert main(train_argv(train_folders, tmp_path / "b", "--epochs", "1", "--eval-every", "0")) == 0
    assert "building the patch cache" not in capsys.readouterr().out  # reused
    # other settings (scale, label size) are another cache, beside the first
    assert main(train_argv(train_folders, tmp_path / "c", "--epochs", "1", "--eval-every", "0", "-s", "2")) == 0
    assert len(list(caches[0].parent.iterdir())) == 2


def test_concurrent_builds_of_one_shared_cache_both_succeed(train_folders, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "tinysr.cli.train",
                               *train_argv(train_folders, tmp_path / f"r{i}", "--epochs", "1", "--eval-every", "0")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    caches = list((Path(os.environ["XDG_CACHE_HOME"]) / "tinysr" / "patches").iterdir())
    assert [c.name.startswith(".") for c in caches] == [False]  # one cache, no temporary left
    with h5py.File(caches[0]) as f:
        assert f["inputs"].shape[0] == int(f.attrs["count"]) > 0


def test_a_foreign_file_at_the_shared_cache_path_is_never_replaced(train_folders, tmp_path, capsys):
    cache = data.default_cache_path(train_folders[0], data.cache_settings(3, 33, 21))
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"the user's own file")
    assert main(train_argv(train_folders, tmp_path / "run", "--epochs", "1")) == 2
    assert "not a tinysr patch cache" in _err_line(capsys)
    assert cache.read_bytes() == b"the user's own file"


def test_short_flags_like_the_other_commands(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "-s", "2", "-q")) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert read_npz(out / "last.npz")["meta"]["scale"] == 2


def test_backend_auto_says_what_it_chose(train_folders, tmp_path, capsys):
    assert main(train_argv(train_folders, tmp_path / "run", "--epochs", "1", "--eval-every", "0",
                           "--backend", "auto")) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--backend auto: " in line]
    assert len(said) == 1 and ("numpy" in said[0] or "cupy" in said[0])


def test_impossible_settings_are_refused_before_any_folder_is_made(train_folders, tmp_path, capsys):
    out = tmp_path / "runs" / "x3"
    assert main(train_argv(train_folders, out, "--epochs", "0")) == 2
    captured = capsys.readouterr()
    assert "--epochs must be >= 1" in captured.err and "run folder" not in captured.out + captured.err
    assert not (tmp_path / "runs").exists()
