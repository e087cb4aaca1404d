"""train.py's output: a progress bar per epoch on a terminal only, plain lines elsewhere, nothing with --quiet."""

from __future__ import annotations

import tinysr.train as train_module
from tinysr.train import main

from .train_helpers import logged_losses, train_argv


def test_no_bar_when_not_on_a_terminal(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--batch-size", "2")) == 0
    printed = capsys.readouterr()
    assert "\r" not in printed.out + printed.err and "step/s" not in printed.out + printed.err
    assert printed.err == ""
    lines = printed.out.splitlines()
    assert lines[0].startswith("building the patch cache") and str(out / "patches.h5") in lines[0]
    assert [line.split(" loss")[0] for line in lines[1:]] == ["epoch 1/2", "epoch 2/2"]


def test_a_bar_of_steps_with_the_loss_on_a_terminal(train_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "_on_terminal", lambda: True)
    monkeypatch.setattr(train_module, "BAR_LOSS_EVERY", 5)
    monkeypatch.setattr(train_module, "BAR_REFRESH_S", 0)  # redraw at every step
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--batch-size", "2")) == 0
    printed = capsys.readouterr()
    assert "epoch 1/2:" in printed.err and "epoch 2/2:" in printed.err and "step" in printed.err
    assert "loss " in printed.err and "\r" in printed.err
    assert [line.split(" loss")[0] for line in printed.out.splitlines()[1:]] == ["epoch 1/2", "epoch 2/2"]


def test_quiet_prints_nothing_but_errors(train_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "_on_terminal", lambda: True)
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--quiet")) == 0
    assert main(train_argv(train_folders, out, "--epochs", "3", "--quiet", "--resume", "auto")) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert len(logged_losses(out)) == 3
    assert main(train_argv(train_folders, out, "--epochs", "3", "--quiet")) == 2  # the folder holds a run
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.splitlines()) == 1
