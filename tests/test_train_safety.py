"""train.py never loses a user's run: used folders are refused, --resume continues the run as
trained, the log never disagrees with the checkpoint, signals end it cleanly at any moment, only
patch caches are replaced, stale temporaries are removed; and it trains the fast recipe by default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import tinysr.cli.train as train_module
import tinysr.nn.run as run_module  # the training run's seams (TrainingRun)
import tinysr.protocol.data as data
from tinysr.cli.train import main
from tinysr.nn.serialization import read_npz

from .train_helpers import logged_losses, train_argv

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def _dotfiles(folder: Path) -> list[str]:
    """The hidden files in ``folder`` (none if it is gone: a run removes the folder it made, left empty)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def _params_equal(a: Path, b: Path) -> None:
    x, y = read_npz(a), read_npz(b)
    for k in x["params"]:
        np.testing.assert_array_equal(x["params"][k], y["params"][k])


# ---------------------------------------------------------------- item 1: a used folder is refused


def test_a_second_run_into_a_used_folder_is_refused_and_the_first_kept(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2")) == 0
    files = {name: (out / name).read_bytes() for name in ("last.npz", "best.npz", "log.jsonl")}
    capsys.readouterr()
    assert main(train_argv(train_folders, out, "--epochs", "1", "--seed", "5")) == 2
    err = _one_error_line(capsys)
    assert str(out) in err and "--resume auto" in err and "--out" in err and "--overwrite" in err
    assert {name: (out / name).read_bytes() for name in files} == files


@pytest.mark.parametrize("leave,held", [("best.npz", True), ("log.jsonl", True), ("empty-log", False),
                                        ("patches.h5", False)])
def test_what_holds_a_run(train_folders, tmp_path, capsys, leave, held):
    """last.npz, best.npz or a non-empty log.jsonl hold a run; an empty log or a cache alone do not."""
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "1", "--cache",
                           str(out / "patches.h5"))) == 0
    keep = {"empty-log": "log.jsonl"}.get(leave, leave)
    for name in ("last.npz", "best.npz", "log.jsonl", "patches.h5"):
        if name != keep:
            (out / name).unlink()
    if leave == "empty-log":
        (out / "log.jsonl").write_text("")
    capsys.readouterr()
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == (2 if held else 0)


def test_overwrite_starts_afresh(train_folders, tmp_path):
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--eval-every", "1")) == 0
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0", "--seed", "4",
                           "--overwrite")) == 0
    assert main(train_argv(train_folders, fresh, "--epochs", "1", "--eval-every", "0", "--seed", "4")) == 0
    assert logged_losses(out) == logged_losses(fresh)
    _params_equal(out / "last.npz", fresh / "last.npz")
    assert not (out / "best.npz").exists()  # the old run's best weights went with it


def test_default_out_never_collides(train_folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, ev = train_folders
    argv = ["--train-dir", str(train), "--eval-dir", str(ev), "--batch-size", "8", "--epochs", "1",
            "--eval-every", "0"]
    assert main(argv) == 0
    assert main([*argv, "--seed", "1"]) == 0
    assert main([*argv, "--scale", "2"]) == 0
    assert read_npz(tmp_path / "runs/x3/last.npz")["meta"]["recipe"]["seed"] == 0
    assert read_npz(tmp_path / "runs/x3-2/last.npz")["meta"]["recipe"]["seed"] == 1
    assert read_npz(tmp_path / "runs/x2/last.npz")["meta"]["scale"] == 2


def test_overwrite_with_resume_and_resuming_into_another_run_are_refused(train_folders, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(train_argv(train_folders, a, "--epochs", "1", "--eval-every", "0")) == 0
    assert main(train_argv(train_folders, b, "--epochs", "1", "--eval-every", "0", "--seed", "9")) == 0
    before = (b / "last.npz").read_bytes()
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(a), "--overwrite"]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert main(["--resume", str(a / "last.npz"), "--out", str(b), "--epochs", "2"]) == 2
    assert str(b) in _one_error_line(capsys)
    assert (b / "last.npz").read_bytes() == before


# ------------------------------------------------------- item 2: --resume continues the run as trained


def _stop_after_checkpoint(monkeypatch, epoch: int, sig=signal.SIGTERM):
    """Send ``sig`` to this process right after the checkpoint of ``epoch`` is written."""
    real = run_module.save_checkpoint

    def save_then_signal(path, model, opt, state, meta=None):
        real(path, model, opt, state, meta=meta)
        if state["epoch"] == epoch:
            signal.raise_signal(sig)

    monkeypatch.setattr(run_module, "save_checkpoint", save_then_signal)


def test_resume_auto_alone_continues_the_run_exactly(train_folders, tmp_path, monkeypatch, capsys):
    """Settings not on the command line come from the checkpoint (before, the defaults were
    silently swapped in: here another optimiser, schedule, batch and learning rates)."""
    full, part = tmp_path / "full", tmp_path / "part"
    recipe = ("--epochs", "3", "--eval-every", "0", "--augment", "--schedule", "cosine", "--batch-size", "4",
              "--seed", "7")
    assert main(train_argv(train_folders, full, *recipe)) == 0
    _stop_after_checkpoint(monkeypatch, 2)
    assert main(train_argv(train_folders, part, *recipe)) == 130
    assert read_npz(part / "last.npz")["state"]["epoch"] == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(part)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert logged_losses(part) == logged_losses(full)
    _params_equal(part / "last.npz", full / "last.npz")
    assert read_npz(part / "last.npz")["meta"]["recipe"] == {**read_npz(full / "last.npz")["meta"]["recipe"],
                                                             "out": str(part)}


def test_resume_refuses_each_contradicting_setting(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    before = (out / "last.npz").read_bytes()
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2", "--scale", "2", "--optimizer", "sgd",
                 "--augment"]) == 2
    err = _one_error_line(capsys)
    for part in ("--scale 2 (it has --scale 3)", "--optimizer sgd (it has --optimizer adam)",
                 "--augment (it has --no-augment)"):
        assert part in err
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2", "--recipe", "paper"]) == 2
    assert "--optimizer sgd" in _one_error_line(capsys)  # a recipe given counts as its flags given
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2", "--train-dir", str(tmp_path)]) == 2
    assert "--train-dir" in _one_error_line(capsys)
    assert (out / "last.npz").read_bytes() == before


def test_resume_takes_new_epochs_eval_every_and_agreeing_flags(train_folders, tmp_path):
    out, full = tmp_path / "run", tmp_path / "full"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    # the same settings spelled out again are no contradiction; --epochs, --eval-every, --threads and
    # --backend may change
    assert main(train_argv(train_folders, out, "--epochs", "2", "--eval-every", "1", "--threads", "1",
                           "--backend", "numpy", "--resume", "auto")) == 0
    assert main(train_argv(train_folders, full, "--epochs", "2", "--eval-every", "0")) == 0
    assert logged_losses(out) == logged_losses(full)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "psnr" not in log[0] and "psnr" in log[1]
    assert read_npz(out / "last.npz")["meta"]["recipe"]["eval_every"] == 1


def test_a_checkpoint_from_before_the_log_was_kept_in_it_still_resumes(train_folders, tmp_path):
    """Older checkpoints carry neither the log's records nor the recipe's name: the log file is kept."""
    out, full = tmp_path / "run", tmp_path / "full"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    path = out / "last.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    state = json.loads(str(arrays["__state__"]))
    meta = json.loads(str(arrays["__meta__"]))
    del state["log"], meta["recipe"]["recipe"]
    arrays["__state__"], arrays["__meta__"] = np.array(json.dumps(state)), np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 0
    assert main(train_argv(train_folders, full, "--epochs", "2", "--eval-every", "0")) == 0
    assert logged_losses(out) == logged_losses(full)


# ------------------------------------------------------------ item 3: the log agrees with the checkpoint


def test_a_stop_between_checkpoint_and_log_loses_no_log_line(train_folders, tmp_path, monkeypatch):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(train_argv(train_folders, full, "--epochs", "3", "--eval-every", "0")) == 0
    real, calls = run_module.atomic_write, []  # the run folder's log is written by tinysr.nn.run

    def stop_at_third_log_write(path, write, *args, **kwargs):  # 1: the empty log, 2: epoch 1, 3: epoch 2
        if Path(path).name == "log.jsonl":
            calls.append(path)
            if len(calls) == 3:
                raise KeyboardInterrupt  # as a Ctrl-C landing right after the checkpoint of epoch 2
        return real(path, write, *args, **kwargs)

    monkeypatch.setattr(run_module, "atomic_write", stop_at_third_log_write)
    assert main(train_argv(train_folders, part, "--epochs", "3", "--eval-every", "0")) == 130
    monkeypatch.undo()
    assert read_npz(part / "last.npz")["state"]["epoch"] == 2
    assert main(["--resume", "auto", "--out", str(part)]) == 0
    rows = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert logged_losses(part) == logged_losses(full)


# ------------------------------------------------------------- item 4: signals at any moment end it


class _SignalInCleanup:
    """Sends SIGTERM from inside ``__del__``: Python prints and drops an exception raised there,
    as it does in h5py's clean-up callbacks, where a signal during the cache write used to land."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)
        for _ in range(20):
            time.sleep(0.001)


def test_a_signal_swallowed_inside_the_cache_write_still_stops(train_folders, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = h5py.Group.create_dataset

    def create_dataset(self, *args, **kwargs):
        _SignalInCleanup()  # collected at once: its __del__ runs here
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    assert main(train_argv(train_folders, out, "--epochs", "2", "--cache", str(out / "patches.h5"))) == 130
    err = _one_error_line(capsys)
    assert "interrupted by SIGTERM" in err and "no checkpoint was written" in err
    assert not (out / "last.npz").exists() and _dotfiles(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_patch_cutting_stops_before_the_next_image(train_folders, tmp_path, monkeypatch,
                                                                        capsys, sig):
    out, reads = tmp_path / "run", []
    real = data.read_y_uint8

    def read(path, **kwargs):
        reads.append(path)
        if len(reads) == 2:
            signal.raise_signal(sig)
        return real(path, **kwargs)

    monkeypatch.setattr(data, "read_y_uint8", read)
    assert main(train_argv(train_folders, out, "--epochs", "2", "--cache", str(out / "patches.h5"))) == 130
    assert len(reads) == 2  # three images: the third was never read
    assert "interrupted" in _one_error_line(capsys)
    assert not (out / "patches.h5").exists() and _dotfiles(out) == []


def test_a_signal_during_the_checkpoint_write_keeps_a_whole_checkpoint(train_folders, tmp_path, monkeypatch,
                                                                         capsys):
    out = tmp_path / "run"
    real = np.savez

    def savez(file, **arrays):
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.01)  # the handler runs in here
        real(file, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    assert main(train_argv(train_folders, out, "--epochs", "3", "--eval-every", "0")) == 130
    monkeypatch.undo()
    assert "last complete checkpoint" in _one_error_line(capsys)
    assert read_npz(out / "last.npz")["state"]["epoch"] == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    assert _dotfiles(out) == []


def test_a_signal_during_evaluation_stops_at_once(train_folders, tmp_path, monkeypatch, capsys):
    out, calls = tmp_path / "run", []
    real = run_module.evaluate_dir

    def evaluate(*args, **kwargs):
        calls.append(1)
        signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate_dir", evaluate)
    assert main(train_argv(train_folders, out, "--epochs", "3")) == 130
    assert calls == [1] and not (out / "last.npz").exists() and _dotfiles(out) == []
    assert "interrupted by SIGINT" in _one_error_line(capsys)


# A wrapper that runs the root train.py as a script, after installing a hook that writes a marker
# file at a chosen point and then waits a while there (the test signals once the marker is there).
_HOOKED = r"""
import os, runpy, sys, time
where, marker = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[3:]  # train.py's path, then its arguments

def arrive(seconds):
    open(marker, "w").close()
    for _ in range(int(seconds / 0.05)):
        time.sleep(0.05)

if where == "import":
    class SlowImport:
        def find_spec(self, name, path=None, target=None):
            if name == "tinysr.cli.train":
                arrive(20)
            return None
    sys.meta_path.insert(0, SlowImport())
else:
    import h5py  # (h5py itself is not tinysr: importing it first changes nothing for train.py)
    real = h5py.Group.create_dataset
    def create_dataset(self, *args, **kwargs):
        arrive(1)
        return real(self, *args, **kwargs)
    h5py.Group.create_dataset = create_dataset
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _signal_at(where: str, sig, argv: list[str], tmp_path: Path):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _HOOKED, where, str(marker), str(REPO / "train.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the hook was never reached"
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out, err, time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_imports_ends_with_one_line(tmp_path, sig):
    code, _, err, _ = _signal_at("import", sig, ["--epochs", "1"], tmp_path)
    assert code == 130
    assert err.strip().splitlines() == ["train.py: interrupted; nothing was trained"]


def test_a_signal_during_a_slow_cache_write_ends_within_seconds(train_folders, tmp_path):
    out = tmp_path / "run"
    code, _, err, took = _signal_at("cache", signal.SIGTERM, train_argv(train_folders, out, "--epochs", "50", "--cache",
                                                                        str(out / "patches.h5")), tmp_path)
    assert code == 130 and took < 30
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0], err
    assert not (out / "last.npz").exists() and _dotfiles(out) == []


# ------------------------------------------------ item 5: --cache replaces only a tinysr patch cache


def test_cache_that_is_another_file_is_refused(train_folders, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_argv(train_folders, run, "--epochs", "1", "--eval-every", "0")) == 0
    precious = run / "last.npz"
    before = precious.read_bytes()
    capsys.readouterr()
    assert main(train_argv(train_folders, tmp_path / "other", "--epochs", "1", "--cache", str(precious))) == 2
    err = _one_error_line(capsys)
    assert str(precious) in err and "not a tinysr patch cache" in err
    assert precious.read_bytes() == before


# ---------------------------------------------------------- item 7: stale temporaries are removed


def test_stale_checkpoint_and_log_temporaries_are_removed(train_folders, tmp_path):
    out = tmp_path / "run"
    cache = ("--cache", str(out / "patches.h5"))
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0", *cache)) == 0
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    from tinysr.atomic import temporary_name  # noqa: PLC0415

    stale = [temporary_name(out / n, sfx, pid=dead).name for n, sfx in
             (("last.npz", ".npz.tmp"), ("best.npz", ".npz.tmp"), ("log.jsonl", ".tmp"), ("patches.h5", ".tmp"))]
    live = temporary_name(out / "last.npz", ".npz.tmp").name  # a writer still running: kept
    for name in [*stale, live]:
        (out / name).write_bytes(b"partial")
    assert main(train_argv(train_folders, out, "--epochs", "2", "--eval-every", "0", "--resume", "auto", *cache)) == 0
    assert _dotfiles(out) == [live]


# ------------------------------------------------------------------ item 13: bad values up front


@pytest.mark.parametrize("extra,match", [
    (["--momentum", "nan"], "--momentum must be in"),
    (["--momentum", "1"], "--momentum must be in"),
    (["--momentum", "-0.1"], "--momentum must be in"),
    (["--lr", "1e-3", "inf", "1e-3"], "--lr values"),
    (["--dist-timeout", "nan"], "--dist-timeout"),
    (["--eval-dir", "/no/such/folder"], "--eval-dir"),
    (["--train-dir", "/no/such/folder"], "--train-dir DIR, or set TINYSR_SHARED"),
])
def test_bad_values_are_refused_before_training(train_folders, tmp_path, capsys, extra, match):
    out = tmp_path / "bad"
    assert main(train_argv(train_folders, out, "--epochs", "1", *extra)) == 2
    assert match in _one_error_line(capsys)
    assert not (out / "last.npz").exists()


def test_an_eval_dir_without_images_is_refused_before_training(train_folders, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-dir", str(empty))) == 2
    err = _one_error_line(capsys)
    assert str(empty) in err and "--eval-every 0" in err
    assert not (out / "last.npz").exists()
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-dir", str(empty), "--eval-every", "0")) == 0


def test_a_nan_loss_is_one_line_without_numpy_warnings(train_folders, tmp_path, capsys):
    out = tmp_path / "nan"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(train_argv(train_folders, out, "--epochs", "2", "--lr", "1e30", "1e30", "1e30")) == 1
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    err = _one_error_line(capsys)
    assert "loss became nan in epoch 1" in err and "no checkpoint was written" in err


# ---------------------------------------------------- #18 item 6: the fast recipe is the default


def _settled(*argv):
    return train_module.settle(train_module.build_parser().parse_args(list(argv)))


def test_the_default_is_the_fast_recipe_and_paper_the_papers():
    fast = _settled()
    assert (fast.optimizer, fast.init, fast.lr, fast.batch_size, fast.schedule, fast.epochs, fast.eval_every) == \
        ("adam", "he", [1e-3, 1e-3, 1e-3], 16, "cosine", 120, 2)
    assert (fast.scale, fast.arch, fast.augment, fast.seed, fast.recipe) == (3, "9-1-5", False, 0, "fast")
    paper = _settled("--recipe", "paper")
    assert (paper.optimizer, paper.momentum, paper.init, paper.lr, paper.batch_size, paper.schedule) == \
        ("sgd", 0.9, "gaussian", [1e-4, 1e-4, 1e-5], 128, "constant")
    mixed = _settled("--recipe", "paper", "--batch-size", "64", "--lr", "1", "2", "3", "--no-augment")
    assert (mixed.batch_size, mixed.lr, mixed.optimizer, mixed.augment) == (64, [1.0, 2.0, 3.0], "sgd", False)


def test_help_names_both_recipes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fast (default): --optimizer adam --init he --lr 1e-3 1e-3 1e-3 --batch-size 16" in text
    assert "--schedule cosine --epochs 120 --eval-every 2" in text
    assert "--optimizer sgd --init gaussian --lr 1e-4 1e-4 1e-5 --batch-size 128 --schedule constant" in text


@pytest.mark.parametrize("key,value", [("batch_size", "8"), ("lr", [1e-3, "x", 1e-3]), ("scale", 5),
                                       ("augment", "yes"), ("optimizer", "lbfgs"), ("threads", 0)])
def test_a_checkpoint_recording_an_impossible_setting_is_refused(train_folders, tmp_path, capsys, key, value):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    path = out / "last.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta["recipe"][key] = value
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    capsys.readouterr()
    assert main(["--resume", "auto", "--out", str(out), "--epochs", "2"]) == 2
    err = _one_error_line(capsys)
    assert str(path) in err and key in err
