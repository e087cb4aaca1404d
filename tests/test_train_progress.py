"""train.py's output through tinysr.cli.progress: a progress bar per epoch on a terminal only, plain
lines elsewhere, nothing with --quiet; the bar changes no number."""

from __future__ import annotations

import io
import sys

import tinysr.cli.progress
import tinysr.cli.train as train_module
from tinysr.cli.train import main

from .train_helpers import logged_losses, train_argv


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_no_bar_when_not_on_a_terminal(train_folders, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--batch-size", "2")) == 0
    printed = capsys.readouterr()
    assert "\r" not in printed.out + printed.err and "step/s" not in printed.out + printed.err
    assert printed.err == ""
    lines = printed.out.splitlines()
    assert lines[0] == f"run folder {out}"  # first: where it writes
    assert lines[1].startswith("building the patch cache")
    assert [line.split(" loss")[0] for line in lines[2:4]] == ["epoch 1/2", "epoch 2/2"]
    assert lines[4:] == [f"trained 2 epochs in {out}; enlarge with these weights: tinysr upscale IMAGE -s 3 "
                         f"--weights {out / 'best.npz'}"]  # last: the command that uses them


def test_a_bar_of_steps_with_the_loss_on_a_terminal(train_folders, tmp_path, capsys, monkeypatch):
    plain = tmp_path / "plain"
    assert main(train_argv(train_folders, plain, "--epochs", "2", "--batch-size", "2")) == 0
    capsys.readouterr()
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)  # tinysr.cli.progress sees a terminal there
    monkeypatch.setattr(train_module, "BAR_LOSS_EVERY", 5)
    monkeypatch.setattr(tinysr.cli.progress, "REFRESH_S", 0)  # redraw at every step
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--batch-size", "2")) == 0
    drawn = tty.getvalue()
    assert "epoch 1/2:" in drawn and "epoch 2/2:" in drawn and "step" in drawn
    assert "loss " in drawn and "\r" in drawn
    lines = capsys.readouterr().out.splitlines()  # the lines stay on stdout, below the bar
    assert lines[0] == f"run folder {out}"  # the first run's patch cache is shared: not built again
    assert [line.split(" loss")[0] for line in lines[1:3]] == ["epoch 1/2", "epoch 2/2"]
    assert logged_losses(out) == logged_losses(plain)  # the bar's loss reads change no number


def test_quiet_prints_nothing_but_errors(train_folders, tmp_path, capsys, monkeypatch):
    captured, tty = sys.stderr, FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    out = tmp_path / "run"
    assert main(train_argv(train_folders, out, "--epochs", "2", "--quiet")) == 0
    assert main(train_argv(train_folders, out, "--epochs", "3", "--quiet", "--resume", "auto")) == 0
    assert capsys.readouterr() == ("", "") and tty.getvalue() == ""
    assert len(logged_losses(out)) == 3
    monkeypatch.setattr(sys, "stderr", captured)
    assert main(train_argv(train_folders, out, "--epochs", "3", "--quiet")) == 2  # the folder holds a run
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.splitlines()) == 1
