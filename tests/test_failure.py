"""tinysr.cli.failure: every command fails the same way, one line and a status from one table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tinysr.cli import command
from tinysr.cli.failure import STATUS, CommandFailed, exit_status, run_main
from tinysr.errors import NoSuchFile


def _fails_with(exc):
    def body():
        raise exc
    return body


@pytest.mark.parametrize("exc, code, line", [
    (ValueError("bad\n  input"), 2, "tool: error: bad input"),
    (OSError(28, "No space left on device"), 2, "tool: error: [Errno 28] No space left on device"),
    (ImportError("no module named zarr"), 2, "tool: error: no module named zarr"),
    (KeyError("params"), 2, "tool: error: params"),  # folded, without the repr's quotes
    (RuntimeError("cupy: no device"), 2, "tool: error: cupy: no device"),
    (MemoryError("Unable to allocate 9 GiB"), 2, "tool: error: out of memory"),
    (NoSuchFile("x.npz: no such file"), 2, "tool: error: x.npz: no such file"),
    (CommandFailed("loss became nan"), 1, "tool: error: loss became nan"),
    (KeyboardInterrupt(), 130, "tool: interrupted"),
])
def test_each_failure_is_one_line_and_its_status(capsys, exc, code, line):
    assert run_main("tool", _fails_with(exc), interrupted="interrupted") == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == line + "\n"


def test_an_interruption_the_tool_does_not_describe_is_the_programs_to_report(capsys):
    with pytest.raises(KeyboardInterrupt):
        run_main("tool", _fails_with(KeyboardInterrupt()))
    assert capsys.readouterr().err == ""


def test_a_bug_keeps_its_traceback_and_success_its_status(capsys):
    with pytest.raises(TypeError):
        run_main("tool", _fails_with(TypeError("a bug")))
    assert exit_status(TypeError()) is None and exit_status(SystemExit(2)) is None
    assert run_main("tool", lambda: 0) == 0 and run_main("tool", lambda: 1) == 1
    assert capsys.readouterr().err == ""


def test_the_table_puts_a_failed_run_before_bad_input():
    """CommandFailed is a RuntimeError: the first match wins, so it is 1, not 2."""
    codes = [code for _, code in STATUS]
    assert codes == [130, 1, 2] and exit_status(CommandFailed("x")) == 1


def test_no_such_file_is_one_type_for_every_caller(tmp_path):
    from tinysr.image.io import read_image
    from tinysr.nn.serialization import read_npz
    from tinysr.weights import load_weights

    for call in (lambda: load_weights(tmp_path / "none.npz"), lambda: read_npz(tmp_path / "none.npz"),
                 lambda: read_image(tmp_path / "none.png")):
        with pytest.raises(NoSuchFile, match="none"):
            call()
    assert issubclass(NoSuchFile, FileNotFoundError) and issubclass(NoSuchFile, ValueError)


def test_a_signal_inside_the_work_ends_it_with_the_tools_line(capsys):
    def work():
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal did not end the work")

    before = signal.getsignal(signal.SIGTERM)
    assert run_main("tool", work, interrupted=lambda exc: f"interrupted by {exc.signal}") == 130
    assert capsys.readouterr().err == "tool: interrupted by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("module", [m for m, _, _ in command.COMMANDS.values()] + ["tinysr.cli.dask"])
def test_every_tool_fails_through_the_one_helper(module):
    """Each tool's module runs its work through run_main (no hand-copied exit block is left)."""
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(module))
    assert "run_main(" in source
    assert "return 2" not in source and "return 130" not in source


def test_bundle_folds_its_message_to_one_line(tmp_path):
    run = tmp_path / "run\nname"  # a folder name with a line break: the message still is one line
    run.mkdir()
    r = subprocess.run([sys.executable, "-m", "tinysr.cli.bundle", "3", str(run), "--dest", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("tinysr bundle: error: ")
