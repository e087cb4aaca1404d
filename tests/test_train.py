"""train.py on a tiny synthetic set: runs, logs, resumes exactly, stops cleanly on bad input."""

import json

import numpy as np
import pytest

from tinysr.cli.train import main
from tinysr.nn.serialization import read_npz

from .train_helpers import logged_losses, train_argv


_argv = train_argv
_losses = logged_losses


def test_training_runs_logs_and_checkpoints(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(train_folders, out, "--epochs", "3")) == 0
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed and "PSNR" in printed and "patches/s" in printed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(np.isfinite(r["psnr"]) for r in log)
    ck = read_npz(out / "last.npz")
    assert ck["state"]["epoch"] == 3 and ck["optim"]["type"] == "Adam"
    assert read_npz(out / "best.npz")["meta"]["scale"] == 3


def test_fixed_seed_is_reproducible_and_resume_matches(train_folders, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_argv(train_folders, full, "--epochs", "4", "--eval-every", "0")) == 0
    assert main(_argv(train_folders, part, "--epochs", "2", "--eval-every", "0")) == 0
    assert main(_argv(train_folders, part, "--epochs", "4", "--eval-every", "0", "--resume", "auto")) == 0
    assert _losses(part) == _losses(full)
    a, b = read_npz(full / "last.npz"), read_npz(part / "last.npz")
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k])


def test_955_trains_on_17x17_labels(train_folders, tmp_path):
    out = tmp_path / "955"
    assert main(_argv(train_folders, out, "--epochs", "1", "--eval-every", "0", "--arch", "9-5-5",
                      "--cache", str(out / "patches.h5"))) == 0
    assert read_npz(out / "last.npz")["config"]["f2"] == 5
    import h5py
    with h5py.File(out / "patches.h5") as f:
        assert f["labels"].shape[1:] == (1, 17, 17)


def test_paper_recipe_momentum_sgd_runs(train_folders, tmp_path):
    out = tmp_path / "sgd"
    train, ev = train_folders
    assert main(["--recipe", "paper", "--train-dir", str(train), "--eval-dir", str(ev), "--out", str(out),
                 "--batch-size", "8", "--epochs", "1", "--eval-every", "0"]) == 0
    ck = read_npz(out / "last.npz")
    assert ck["optim"]["type"] == "MomentumSGD" and ck["optim"]["momentum"] == 0.9
    assert ck["meta"]["recipe"]["init"] == "gaussian" and ck["meta"]["recipe"]["schedule"] == "constant"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(train_folders, tmp_path, capsys, monkeypatch):
    # A resumed run cannot take other learning rates (test_train_safety.py), so the second
    # epoch's steps are made to return NaN instead.
    import tinysr.nn.training as training

    out = tmp_path / "nan"
    assert main(_argv(train_folders, out, "--epochs", "1", "--eval-every", "0")) == 0
    before = (out / "last.npz").read_bytes()
    monkeypatch.setattr(training, "train_step", lambda *a, **k: np.float32("nan"))  # as train_epoch calls it
    assert main(_argv(train_folders, out, "--epochs", "3", "--eval-every", "0", "--resume", "auto")) == 1
    err = capsys.readouterr().err
    assert "loss became" in err and "last good checkpoint" in err
    assert (out / "last.npz").read_bytes() == before


@pytest.mark.parametrize("extra,match", [
    (["--epochs", "0"], "--epochs"),
    (["--arch", "9-2-5"], "f1-f2-f3"),
    (["--resume", "/no/such.npz"], "no such file"),
    (["--backend", "cupy"], "CuPy|CUDA"),
])
def test_bad_arguments_exit_2_with_one_line(train_folders, tmp_path, capsys, extra, match):
    from tinysr.ops.backend import cupy_available

    if "cupy" in extra and cupy_available():
        pytest.skip("a GPU is usable here")
    assert main(_argv(train_folders, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    import re
    assert re.search(match, err)


@pytest.mark.parametrize("value,match", [("0", "must be >= 1, got 0"), ("-2", "must be >= 1, got -2"),
                                         ("two", "expected an integer, got 'two'")])
def test_bad_thread_counts_exit_2_with_one_line(tmp_path, capsys, value, match):
    with pytest.raises(SystemExit) as e:
        main(["--threads", value, "--out", str(tmp_path / "bad")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--threads: {match}" in err
    assert not (tmp_path / "bad").exists()


def test_help_documents_defaults_and_loss(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "sum((pred-label)^2)/(2*batch)" in text and "1e-4 1e-4 1e-5" in text


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_keeps_last_complete_checkpoint(train_folders, tmp_path, sig):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sig"
    argv = ["tinysr.cli.train", *_argv(train_folders, out, "--epochs", "100000", "--eval-every", "0")]
    # A shell's background job inherits SIGINT ignored, and Python then keeps ignoring it: the
    # child installs Python's own Ctrl-C handler first, as it has when started from a terminal.
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             f"sys.argv = {argv!r}; runpy.run_module('tinysr.cli.train', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.npz").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.05)
        time.sleep(0.3)  # now inside a later epoch (or a checkpoint write)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert f"interrupted by {sig}" in err and "Traceback" not in err
    ck = read_npz(out / "last.npz")
    assert ck["state"]["epoch"] >= 1
    assert len((out / "log.jsonl").read_text().splitlines()) == ck["state"]["epoch"]  # the log keeps up
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_init_from_starts_a_second_stage_and_bundle_joins_the_stages(train_folders, tmp_path):
    """--init-from takes the first stage's final weights (fresh optimiser); tinysr.cli.bundle ships
    the last stage's final epoch with both recipes and one log whose epochs count on."""
    from tinysr.cli.bundle import main as bundle_main
    from tinysr.nn.serialization import load_model

    one, two, dest = tmp_path / "one", tmp_path / "two", tmp_path / "weights"
    assert main(_argv(train_folders, one, "--epochs", "2", "--eval-every", "0")) == 0
    assert main(_argv(train_folders, two, "--epochs", "1", "--eval-every", "0", "--lr", "0", "0", "0")) == 2  # lr > 0
    assert main(_argv(train_folders, two, "--epochs", "2", "--eval-every", "1",
                      "--init-from", str(one / "last.npz"))) == 0
    stage2 = read_npz(two / "last.npz")
    assert stage2["optim"]["t"] == read_npz(one / "last.npz")["optim"]["t"]  # fresh Adam: same step count
    assert stage2["meta"]["recipe"]["init_from"] == str(one / "last.npz")
    first_loss_two = _losses(two)[0]
    assert first_loss_two < _losses(one)[0]  # starts where stage 1 ended, not from scratch

    assert bundle_main(["3", str(one), str(two), "--dest", str(dest)]) == 0
    shipped = load_model(dest / "x3.npz")
    for k, v in load_model(two / "last.npz").params.items():
        np.testing.assert_array_equal(shipped.params[k], v)
    meta = read_npz(dest / "x3.npz")["meta"]
    assert [s["epochs"] for s in meta["stages"]] == [2, 2]
    log = [json.loads(line) for line in (dest / "x3_log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["stage"], r["stage_epoch"]) for r in log] == [(1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 2, 2)]


def test_init_from_refuses_another_architecture(train_folders, tmp_path, capsys):
    one = tmp_path / "one"
    assert main(_argv(train_folders, one, "--epochs", "1", "--eval-every", "0")) == 0
    assert main(_argv(train_folders, tmp_path / "b", "--arch", "9-5-5", "--init-from", str(one / "last.npz"))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "this run trains" in err


def _dihedral_by_loops(a, k):
    """Reference for one (H, W) plane: ``k % 4`` counter-clockwise quarter turns by index
    arithmetic, then a transpose if ``k >= 4``."""
    out = a
    for _ in range(k % 4):
        h, w = out.shape
        out = np.array([[out[j][w - 1 - i] for j in range(h)] for i in range(w)])
    if k >= 4:
        out = np.array([[out[j][i] for j in range(out.shape[0])] for i in range(out.shape[1])])
    return out


def test_dihedral_is_the_eight_symmetries_of_the_square():
    from tinysr.nn.training import dihedral

    a = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    seen = set()
    for k in range(8):
        d = dihedral(a, k)
        assert d.flags.c_contiguous and d.shape == a.shape
        for n in range(2):
            np.testing.assert_array_equal(d[n, 0], _dihedral_by_loops(a[n, 0], k))
        seen.add(d.tobytes())
    assert len(seen) == 8


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_degradation_commutes_with_the_symmetries(scale):
    """The premise of --augment: a transformed (input, label) pair is the pair of the transformed image."""
    from tinysr.nn.training import dihedral
    from tinysr.protocol.evaluation import prepare_pair

    rng = np.random.default_rng(scale)
    y = rng.integers(0, 256, (8 * scale, 8 * scale), dtype=np.uint8)
    gt, bic = prepare_pair(y, scale)
    for k in range(8):
        gt_k, bic_k = prepare_pair(dihedral(y[None, None], k)[0, 0], scale)
        np.testing.assert_allclose(bic_k, dihedral(bic[None, None], k)[0, 0], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(gt_k, dihedral(gt[None, None], k)[0, 0])


def test_augment_trains_reproducibly_and_changes_the_batches(train_folders, tmp_path):
    a, b, plain = tmp_path / "a", tmp_path / "b", tmp_path / "plain"
    for out, extra in ((a, ["--augment"]), (b, ["--augment"]), (plain, [])):
        assert main(_argv(train_folders, out, "--epochs", "3", "--eval-every", "0", *extra)) == 0
    assert _losses(a) == _losses(b)  # seeded
    assert _losses(a) != _losses(plain)  # the flips/rotations really happen
    assert _losses(a)[-1] < _losses(a)[0]
    assert read_npz(a / "last.npz")["meta"]["recipe"]["augment"] is True
