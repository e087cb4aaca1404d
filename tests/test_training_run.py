"""A training run driven from Python (:class:`tinysr.nn.run.TrainingRun`), without a command line:
the same weights, checkpoint and log as ``tinysr train`` with the same settings, and a resume
through :func:`tinysr.nn.serialization.restore` that continues the run exactly."""

from __future__ import annotations

import argparse
import json

import numpy as np

from tinysr.cli.train import main
from tinysr.nn.run import TrainingRun, settings
from tinysr.nn.serialization import read_npz

from .train_helpers import train_argv


def _settings(train_folders, out, **given) -> argparse.Namespace:
    """``train_argv``'s run (Adam from He, constant rates, evaluation every epoch, seed 3, batch 8)."""
    train, ev = train_folders
    s = settings({"train_dir": str(train), "eval_dir": str(ev), "batch_size": 8, "optimizer": "adam", "init": "he",
                  "lr": [1e-3, 1e-3, 1e-4], "schedule": "constant", "eval_every": 1, "seed": 3, **given})
    s["out"] = str(out.resolve())
    return argparse.Namespace(**s)


def _run(s, out, ckpt=None):
    lines, saved, epochs = [], [], []
    out.mkdir(exist_ok=True)
    d = read_npz(ckpt) if ckpt is not None else None
    if d is not None:
        s = argparse.Namespace(**settings({"epochs": s.epochs}, d, ckpt))
    run = TrainingRun(s, out, np, ckpt=ckpt, d=d, say=lines.append, on_saved=saved.append)
    run.setup()
    record = run.fit(on_epoch=lambda record, seconds, elapsed: epochs.append(record["epoch"]))
    return run, record, lines, saved, epochs


def _same_arrays(a, b) -> None:
    da, db = np.load(a), np.load(b)
    weights = [k for k in da.files if not k.startswith("__")]
    assert weights and weights == [k for k in db.files if not k.startswith("__")]
    for k in weights:
        assert np.array_equal(da[k], db[k]), k


def test_a_run_from_python_trains_what_the_command_trains(train_folders, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    assert main(train_argv(train_folders, cli_out, "--epochs", "2", "-q")) == 0
    run, record, lines, saved, epochs = _run(_settings(train_folders, lib_out, epochs=2), lib_out)
    assert epochs == [1, 2] and saved == [lib_out / "last.npz"] * 2
    assert record["epoch"] == 2 and "psnr" in record and run.best == max(
        r["psnr"] for r in read_npz(lib_out / "last.npz")["state"]["log"])
    assert lines == []  # the command built the patch cache: nothing to say
    for name in ("last.npz", "best.npz"):
        _same_arrays(cli_out / name, lib_out / name)
    logged = [json.loads(line) for line in (lib_out / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged] == [json.loads(line)["loss"] for line in
                                          (cli_out / "log.jsonl").read_text().splitlines()]


def test_a_resumed_run_from_python_continues_exactly(train_folders, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    full, part = tmp_path / "full", tmp_path / "part"
    _run(_settings(train_folders, full, epochs=3, augment=True), full)
    _run(_settings(train_folders, part, epochs=2, augment=True), part)
    run, record, lines, saved, epochs = _run(_settings(train_folders, part, epochs=3), part, part / "last.npz")
    assert lines == [f"resumed from {part / 'last.npz'} at epoch 2"]
    assert run.start_epoch == 2 and epochs == [3] and record["epoch"] == 3
    _same_arrays(full / "last.npz", part / "last.npz")
    assert read_npz(part / "last.npz")["state"]["rng"] == read_npz(full / "last.npz")["state"]["rng"]
